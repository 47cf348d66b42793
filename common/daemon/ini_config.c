/* ini_config: schema-checked INI parsing on inih (see ini_config.h). */
#include "daemon/ini_config.h"
#include "util/fileio.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static int find_key(const vf_ini *ini, const char *section, const char *key) {
    for (int i = 0; i < ini->n_schema; i++)
        if (!strcmp(ini->schema[i].section, section) && !strcmp(ini->schema[i].key, key)) return i;
    return -1;
}

static int section_known(const vf_ini *ini, const char *section) {
    for (int i = 0; i < ini->n_schema; i++)
        if (!strcmp(ini->schema[i].section, section)) return 1;
    return 0;
}

/* "host, port, ..." of a section, or the list of sections. */
static void known_list(const vf_ini *ini, const char *section, char *out, size_t size) {
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < ini->n_schema; i++) {
        const char *item = section ? ini->schema[i].key : ini->schema[i].section;
        if (section && strcmp(ini->schema[i].section, section)) continue;
        int dup = 0;
        for (int j = 0; j < i && !section; j++) dup |= !strcmp(ini->schema[j].section, item);
        if (dup) continue;
        used += snprintf(out + used, used < size ? size - used : 0, "%s%s%s%s", used ? ", " : "", section ? "" : "[",
                         item, section ? "" : "]");
        if (used >= size) break;
    }
}

/* Debian's inih is built without line numbers in the handler, so the line
 * of an entry is found in the text: the n-th line, after a header naming
 * section, whose first word is key followed by '=' or ':'. */
static int locate_line(const char *text, const char *section, const char *key, int occurrence) {
    int line = 0, in_section = section[0] == 0, seen = 0;
    size_t klen = strlen(key), slen = strlen(section);
    for (const char *p = text; p && *p;) {
        line++;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '[') in_section = !strncmp(p + 1, section, slen) && p[1 + slen] == ']';
        else if (in_section && !strncmp(p, key, klen)) {
            const char *q = p + klen;
            while (*q == ' ' || *q == '\t') q++;
            if ((*q == '=' || *q == ':') && ++seen == occurrence) return line;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return 0;
}

static int on_entry(void *user, const char *section, const char *key, const char *value) {
    vf_ini *ini = user;
    if (ini->failed) return 0;
    if (!key) return 1; /* a section header alone */
    int k0 = find_key(ini, section, key);
    int lineno = locate_line(ini->text, section, key, k0 >= 0 && ini->value[k0] ? 2 : 1);
    if (!section_known(ini, section)) {
        char known[512];
        known_list(ini, NULL, known, sizeof known);
        vf_fail(&ini->parse_err, "%s:%d: unknown section [%s] (known: %s)", ini->name, lineno, section, known);
        ini->failed = 1;
        return 0;
    }
    int k = find_key(ini, section, key);
    if (k < 0) {
        char known[512];
        known_list(ini, section, known, sizeof known);
        vf_fail(&ini->parse_err, "%s:%d: unknown key [%s] %s (known in [%s]: %s)", ini->name, lineno, section, key,
                section, known);
        ini->failed = 1;
        return 0;
    }
    if (ini->value[k]) {
        vf_fail(&ini->parse_err, "%s:%d: [%s] %s is given twice (first on line %d)", ini->name, lineno, section, key,
                ini->line[k]);
        ini->failed = 1;
        return 0;
    }
    ini->value[k] = strdup(value);
    ini->line[k] = lineno;
    return 1;
}

static int prepare(vf_ini *ini, const char *name, const char *dir, const vf_ini_key *schema, vf_error *err) {
    memset(ini, 0, sizeof *ini);
    snprintf(ini->name, sizeof ini->name, "%s", name);
    snprintf(ini->dir, sizeof ini->dir, "%s", dir && *dir ? dir : ".");
    ini->schema = schema;
    while (schema[ini->n_schema].key) ini->n_schema++;
    if (ini->n_schema > VF_INI_MAX_KEYS) return vf_fail(err, "%s: schema has %d keys (max %d)", name, ini->n_schema, VF_INI_MAX_KEYS);
    return 0;
}

static int finish(vf_ini *ini, int rc, vf_error *err) {
    if (ini->failed) {
        *err = ini->parse_err;
        vf_ini_free(ini);
        return -1;
    }
    if (rc > 0) {
        vf_fail(err, "%s:%d: not an INI line (want `key = value` or `[section]`)", ini->name, rc);
        vf_ini_free(ini);
        return -1;
    }
    for (int i = 0; i < ini->n_schema; i++) {
        const vf_ini_key *k = &ini->schema[i];
        if (k->required && !k->def && (!ini->value[i] || !ini->value[i][0])) {
            vf_fail(err, "%s: [%s] %s is REQUIRED and has no value (%s)", ini->name, k->section, k->key, k->doc);
            vf_ini_free(ini);
            return -1;
        }
    }
    return 0;
}

int vf_ini_load(vf_ini *ini, const char *path, const vf_ini_key *schema, vf_error *err) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    char *text;
    size_t len;
    if (vf_read_file(path, &text, &len, err)) return vf_error_prefix(err, "config file");
    int rc = vf_ini_load_string(ini, text, path, dir, schema, err);
    free(text);
    return rc;
}

/* Debian's libinih reads lines of at most INIH_MAX_LINE - 1 characters and
 * cuts a longer one in two (the first part as a value, the rest as a broken
 * line).  So comment lines, which carry nothing, are blanked before it sees
 * them (their newline kept, so line numbers hold), and any other line that
 * long is refused here, naming it, instead of being cut. */
#define INIH_MAX_LINE 200

static char *without_comments(const char *text, const char *name, vf_error *err) {
    size_t n = strlen(text);
    char *out = malloc(n + 1);
    if (!out) return vf_fail(err, "%s: out of memory", name), NULL;
    memcpy(out, text, n + 1);
    int line = 1;
    for (char *p = out; *p; line++) {
        char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *q = p;
        while (q < p + len && (*q == ' ' || *q == '\t')) q++;
        if (q < p + len && (*q == ';' || *q == '#')) memset(p, ' ', len);
        else if (len >= INIH_MAX_LINE) {
            vf_fail(err, "%s:%d: a line of %zu characters; the INI reader takes lines of at most %d (shorten the value, "
                    "e.g. a path by a symbolic link)", name, line, len, INIH_MAX_LINE - 1);
            free(out);
            return NULL;
        }
        if (!end) break;
        p = end + 1;
    }
    return out;
}

int vf_ini_load_string(vf_ini *ini, const char *text, const char *name, const char *dir, const vf_ini_key *schema,
                       vf_error *err) {
    if (prepare(ini, name, dir, schema, err)) return -1;
    char *clean = without_comments(text, name, err);
    if (!clean) return -1;
    ini->text = clean;
    int rc = ini_parse_string(clean, on_entry, ini);
    ini->text = NULL;
    free(clean);
    return finish(ini, rc, err);
}

void vf_ini_free(vf_ini *ini) {
    for (int i = 0; i < VF_INI_MAX_KEYS; i++) {
        free(ini->value[i]);
        ini->value[i] = NULL;
    }
}

const char *vf_ini_get(const vf_ini *ini, const char *section, const char *key) {
    int k = find_key(ini, section, key);
    if (k < 0) return NULL;
    if (ini->value[k] && ini->value[k][0]) return ini->value[k];
    return ini->schema[k].def;
}

int vf_ini_given(const vf_ini *ini, const char *section, const char *key) {
    int k = find_key(ini, section, key);
    return k >= 0 && ini->value[k] && ini->value[k][0];
}

static void where(const vf_ini *ini, const char *section, const char *key, char *out, size_t size) {
    int k = find_key(ini, section, key);
    if (k >= 0 && ini->value[k]) snprintf(out, size, "%s:%d", ini->name, ini->line[k]);
    else snprintf(out, size, "%s (default)", ini->name);
}

/* The key's value with `w` set to where it comes from; NULL (and err) when it has none. */
static const char *value_where(const vf_ini *ini, const char *section, const char *key, char *w, size_t size,
                               vf_error *err) {
    const char *v = vf_ini_get(ini, section, key);
    where(ini, section, key, w, size);
    if (!v) vf_fail(err, "%s: [%s] %s has no value", w, section, key);
    return v;
}

int vf_ini_int(const vf_ini *ini, const char *section, const char *key, long lo, long hi, long *out, vf_error *err) {
    char w[4200];
    const char *v = value_where(ini, section, key, w, sizeof w, err);
    if (!v) return -1;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return vf_fail(err, "%s: [%s] %s = '%s' is not an integer in %ld..%ld", w, section, key, v, lo, hi);
    *out = x;
    return 0;
}

int vf_ini_double(const vf_ini *ini, const char *section, const char *key, double lo, double hi, double *out,
                  vf_error *err) {
    char w[4200];
    const char *v = value_where(ini, section, key, w, sizeof w, err);
    if (!v) return -1;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
        return vf_fail(err, "%s: [%s] %s = '%s' is not a number in %g..%g", w, section, key, v, lo, hi);
    *out = x;
    return 0;
}

int vf_ini_bool(const vf_ini *ini, const char *section, const char *key, int *out, vf_error *err) {
    char w[4200];
    const char *v = value_where(ini, section, key, w, sizeof w, err);
    if (!v) return -1;
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") || !strcasecmp(v, "on")) *out = 1;
    else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0") || !strcasecmp(v, "off")) *out = 0;
    else return vf_fail(err, "%s: [%s] %s = '%s' is not a boolean (true/false)", w, section, key, v);
    return 0;
}

int vf_ini_path(const vf_ini *ini, const char *section, const char *key, int must_exist, char *out, size_t size,
                vf_error *err) {
    const char *v = vf_ini_get(ini, section, key);
    out[0] = 0;
    if (!v || !*v) {
        if (must_exist) return vf_fail(err, "%s: [%s] %s has no value", ini->name, section, key);
        return 0;
    }
    /* ${VAR} expands from the environment: systemd passes LoadCredential=
     * files in ${CREDENTIALS_DIRECTORY} and StateDirectory= in ${STATE_DIRECTORY}. */
    char expanded[4096];
    size_t used = 0;
    for (const char *p = v; *p && used + 1 < sizeof expanded;) {
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p, '}');
            char name[128];
            if (!end || end - p - 2 >= (long)sizeof name)
                return vf_fail(err, "%s: [%s] %s = '%s': unterminated ${...}", ini->name, section, key, v);
            snprintf(name, sizeof name, "%.*s", (int)(end - p - 2), p + 2);
            const char *val = getenv(name);
            if (!val || !*val)
                return vf_fail(err, "%s: [%s] %s = '%s': environment variable %s is not set", ini->name, section, key, v, name);
            used += (size_t)snprintf(expanded + used, sizeof expanded - used, "%s", val);
            p = end + 1;
        } else {
            expanded[used++] = *p++;
        }
    }
    if (used >= sizeof expanded) return vf_fail(err, "%s: [%s] %s: path too long", ini->name, section, key);
    expanded[used] = 0;
    v = expanded;
    int n = v[0] == '/' ? snprintf(out, size, "%s", v) : snprintf(out, size, "%s/%s", ini->dir, v);
    if (n < 0 || (size_t)n >= size) return vf_fail(err, "%s: [%s] %s: path too long", ini->name, section, key);
    struct stat st;
    if (must_exist && stat(out, &st) != 0) {
        char w[4200];
        where(ini, section, key, w, sizeof w);
        return vf_fail(err, "%s: [%s] %s = %s: %s", w, section, key, out, strerror(errno));
    }
    return 0;
}

void vf_ini_print_schema(FILE *f, const vf_ini_key *schema) {
    const char *section = NULL;
    static const char *type_name[] = {"text", "path", "integer", "number", "boolean"};
    for (const vf_ini_key *k = schema; k->key; k++) {
        if (!section || strcmp(section, k->section)) {
            fprintf(f, "%s[%s]\n", section ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(f, "; %s (%s%s)\n", k->doc, type_name[k->type], k->required ? ", REQUIRED" : "");
        fprintf(f, "%s%s = %s\n", k->required || k->def ? "" : ";", k->key, k->def ? k->def : "");
    }
}
