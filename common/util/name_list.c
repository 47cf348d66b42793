/* name_list: comma-separated lists of names (see name_list.h). */
#include "util/name_list.h"

#include <stdlib.h>
#include <string.h>

void vf_name_list_free(vf_name_list *l) {
    free(l->names);
    free(l->storage);
    memset(l, 0, sizeof *l);
}

int vf_name_list_parse(vf_name_list *l, const char *csv, const char *what, int min, vf_error *err) {
    memset(l, 0, sizeof *l);
    if (!csv) return 0;
    int cap = 1;
    for (const char *p = csv; *p; p++) cap += *p == ',';
    l->storage = strdup(csv);
    l->names = calloc((size_t)cap, sizeof *l->names);
    if (!l->storage || !l->names) {
        vf_name_list_free(l);
        return vf_fail(err, "%s: out of memory", what);
    }
    char *s = l->storage;
    for (int i = 0; i < cap; i++) {
        char *tok = strsep(&s, ",");
        while (*tok == ' ') tok++;
        size_t n = strlen(tok);
        while (n && tok[n - 1] == ' ') tok[--n] = '\0';
        int dup = 0;
        for (int j = 0; j < l->n && !dup; j++) dup = !strcmp(l->names[j], tok);
        if (!n || dup) {
            int rc = n ? vf_fail(err, "%s '%s': '%s' listed twice", what, csv, tok)
                       : vf_fail(err, "%s '%s': empty name at position %d", what, csv, i + 1);
            vf_name_list_free(l);
            return rc;
        }
        l->names[l->n++] = tok;
    }
    if (l->n < min) {
        vf_name_list_free(l);
        return vf_fail(err, "%s '%s': need at least %d", what, csv, min);
    }
    return 0;
}
