/* ini_config: INI files checked against a schema — the daemons' configs and
 * the run configuration.  Every key a program accepts is listed once in its
 * schema with its type, default and one-line documentation; a key or
 * section not in the schema, a repeated key, a missing REQUIRED key or a
 * value of the wrong type is an error naming the file, the line and the key
 * ("aggregator.ini:7: unknown key [server] prot (known in [server]: host,
 * port, ...)").  Relative paths resolve against the file's directory, as the
 * kits `vflclip provision` writes expect. */
#ifndef VF_DAEMON_INI_CONFIG_H
#define VF_DAEMON_INI_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include "util/vf_error.h"

typedef enum { VF_INI_STR = 0, VF_INI_PATH, VF_INI_INT, VF_INI_FLOAT, VF_INI_BOOL } vf_ini_type;

typedef struct vf_ini_key {
    const char *section, *key;
    vf_ini_type type;
    int required;
    const char *def;      /* default as text; NULL = none */
    const char *doc;      /* one line for --help-config and docs/deploy.md */
} vf_ini_key;

#define VF_INI_MAX_KEYS 96

typedef struct vf_ini {
    char name[4096];      /* file name (or "<run config>") for messages */
    char dir[4096];       /* base for relative paths */
    const vf_ini_key *schema;
    int n_schema;
    char *value[VF_INI_MAX_KEYS];  /* per schema entry; NULL = not given */
    int line[VF_INI_MAX_KEYS];
    vf_error parse_err;
    const char *text;     /* while parsing */
    int failed;
} vf_ini;

/* Parses path against schema (terminated by an entry with key NULL). */
int vf_ini_load(vf_ini *ini, const char *path, const vf_ini_key *schema, vf_error *err);
/* Same from text; name appears in errors, dir (may be NULL: ".") resolves paths. */
int vf_ini_load_string(vf_ini *ini, const char *text, const char *name, const char *dir, const vf_ini_key *schema,
                       vf_error *err);
void vf_ini_free(vf_ini *ini);

/* The value given, else the schema default, else NULL.  The key must be in
 * the schema (a programming error otherwise: returns NULL). */
const char *vf_ini_get(const vf_ini *ini, const char *section, const char *key);
int vf_ini_given(const vf_ini *ini, const char *section, const char *key);
/* Typed getters: -1 with "file:line: [s] k = 'v' is not ..." on a bad value. */
int vf_ini_int(const vf_ini *ini, const char *section, const char *key, long lo, long hi, long *out, vf_error *err);
int vf_ini_double(const vf_ini *ini, const char *section, const char *key, double lo, double hi, double *out,
                  vf_error *err);
int vf_ini_bool(const vf_ini *ini, const char *section, const char *key, int *out, vf_error *err);
/* A path value resolved against the file's directory into out ("" when
 * unset); ${VAR} in it is replaced by the environment variable (an error
 * when unset).  must_exist: the file or directory must exist, else an error naming
 * the key and the resolved path. */
int vf_ini_path(const vf_ini *ini, const char *section, const char *key, int must_exist, char *out, size_t size,
                vf_error *err);

/* Writes the documented schema as an INI file (every key commented with its
 * doc line and default) to f: `--help-config`. */
void vf_ini_print_schema(FILE *f, const vf_ini_key *schema);

#endif
