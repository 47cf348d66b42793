/* coop_options: option parsing shared by the CoOp commands (train, evaluate,
 * dataset): numbers with range checks and comma-separated class lists. */
#ifndef VF_CLI_COOP_OPTIONS_H
#define VF_CLI_COOP_OPTIONS_H

#include "util/vf_error.h"

/* Each prints "vflclip: OPTION: ..." on stderr and returns -1 on a bad value. */
int vf_cli_parse_int(const char *opt, const char *v, int lo, int hi, int *out);
int vf_cli_parse_float(const char *opt, const char *v, float lo, float hi, float *out);
int vf_cli_parse_u64(const char *opt, const char *v, unsigned long long *out);

typedef struct vf_class_list {
    int n;
    char **names;
    char *storage;
} vf_class_list;

/* "a,b,c" -> 3 names (trimmed, none empty); NULL -> n = 0 (use defaults). */
int vf_class_list_parse(vf_class_list *l, const char *csv, vf_error *err);
void vf_class_list_free(vf_class_list *l);

#endif
