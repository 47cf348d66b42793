/* name_list: the one parser of comma-separated lists of names (class names,
 * class codes, image parties): "a, b,c" -> "a", "b", "c", each trimmed of
 * spaces.  An empty name or a name given twice is an error naming `what`
 * and the position, as is a list shorter than `min`. */
#ifndef VF_UTIL_NAME_LIST_H
#define VF_UTIL_NAME_LIST_H

#include "util/vf_error.h"

typedef struct vf_name_list {
    int n;
    char **names;     /* (n) pointers into storage */
    char *storage;
} vf_name_list;

/* csv NULL: n = 0 (the caller's defaults). */
int vf_name_list_parse(vf_name_list *l, const char *csv, const char *what, int min, vf_error *err);
void vf_name_list_free(vf_name_list *l);

#endif
