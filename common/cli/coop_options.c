/* coop_options: strict number parsing and class lists for the CLI. */
#include "cli/coop_options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vf_cli_parse_int(const char *opt, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "vflclip: %s: '%s' is not an integer in %d..%d\n", opt, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int vf_cli_parse_float(const char *opt, const char *v, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "vflclip: %s: '%s' is not a number in %g..%g\n", opt, v, lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
}

int vf_cli_parse_u64(const char *opt, const char *v, unsigned long long *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-') {
        fprintf(stderr, "vflclip: %s: '%s' is not a non-negative integer\n", opt, v);
        return -1;
    }
    *out = x;
    return 0;
}

int vf_class_list_parse(vf_class_list *l, const char *csv, vf_error *err) {
    memset(l, 0, sizeof *l);
    if (!csv) return 0;
    l->storage = strdup(csv);
    int cap = 1;
    for (const char *p = csv; *p; p++) cap += *p == ',';
    l->names = calloc(cap, sizeof *l->names);
    if (!l->storage || !l->names) { vf_class_list_free(l); return vf_fail(err, "out of memory"); }
    char *s = l->storage;
    for (int i = 0; i < cap; i++) {
        char *tok = strsep(&s, ",");
        while (*tok == ' ') tok++;
        size_t n = strlen(tok);
        while (n && tok[n - 1] == ' ') tok[--n] = '\0';
        if (!n) { vf_class_list_free(l); return vf_fail(err, "class list '%s': empty name at position %d", csv, i + 1); }
        l->names[l->n++] = tok;
    }
    if (l->n < 2) { vf_class_list_free(l); return vf_fail(err, "class list '%s': need at least 2 classes", csv); }
    return 0;
}

void vf_class_list_free(vf_class_list *l) {
    free(l->names);
    free(l->storage);
    memset(l, 0, sizeof *l);
}
