/* csv_dataset: an image folder with a labels CSV in HAM10000's layout
 * (image_id, dx[, split][, lesion_id] ...), and the seeded stratified split
 * used when the CSV has no split column. */
#include "data/dataset_internal.h"
#include "data/shuffle.h"
#include "util/fileio.h"

#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define CSV_MAX_FIELDS 64

typedef struct csv_row {
    int line;
    char *image_id, *dx, *split, *lesion;
    int label;
    vf_split which;
    char *path;
} csv_row;

/* Splits one CSV record in place (RFC 4180 quoting: "a ""b""" -> a "b").
 * Returns the field count, or -1 for an unterminated quote; *next is the
 * start of the following line. */
static int split_record(char *s, char **fields, int max_fields, char **next) {
    int n = 0;
    char *w = s;
    for (;;) {
        char *start = w;
        if (*s == '"') {
            s++;
            for (;;) {
                if (*s == '\0') return -1;
                if (*s == '"' && s[1] == '"') { *w++ = '"'; s += 2; continue; }
                if (*s == '"') { s++; break; }
                *w++ = *s++;
            }
            while (*s && *s != ',' && *s != '\n' && *s != '\r') *w++ = *s++;   /* tolerate text after a closing quote */
        } else {
            while (*s && *s != ',' && *s != '\n' && *s != '\r') *w++ = *s++;
        }
        char sep = *s;
        *w = '\0';
        if (n < max_fields) fields[n] = start;
        n++;
        if (sep == ',') { s++; w = s; continue; }
        /* *w = '\0' may have overwritten the separator itself: step by sep, not by *s. */
        if (sep == '\r') { s++; if (*s == '\n') s++; }
        else if (sep == '\n') s++;
        *next = s;
        return n;
    }
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    return s;
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The folder and its immediate subdirectories (HAM10000 ships images in
 * HAM10000_images_part_1 and _part_2). */
static int list_search_dirs(const char *dir, char ***dirs, int *n, vf_error *err) {
    int cap = 8;
    *dirs = malloc(cap * sizeof **dirs);
    *n = 0;
    if (!*dirs) return vf_fail(err, "%s: out of memory", dir);
    (*dirs)[(*n)++] = strdup(dir);
    DIR *d = opendir(dir);
    if (!d) return vf_fail_errno(err, dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[4400];
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(sub, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        if (*n == cap) {
            char **grown = realloc(*dirs, (cap *= 2) * sizeof **dirs);
            if (!grown) { closedir(d); return vf_fail(err, "%s: out of memory", dir); }
            *dirs = grown;
        }
        (*dirs)[(*n)++] = strdup(sub);
    }
    closedir(d);
    return 0;
}

static char *find_image(char **dirs, int n_dirs, const char *id) {
    static const char *const exts[] = {"", ".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG"};
    char p[8192];
    for (int d = 0; d < n_dirs; d++)
        for (size_t e = 0; e < sizeof exts / sizeof *exts; e++) {
            snprintf(p, sizeof p, "%s/%s%s", dirs[d], id, exts[e]);
            if (is_file(p)) return strdup(p);
        }
    return NULL;
}

static int cmp_lesion(const void *a, const void *b) {
    const csv_row *x = *(csv_row *const *)a, *y = *(csv_row *const *)b;
    int c = strcmp(x->lesion, y->lesion);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* Per class, shuffles the groups (lesions, or single images) with the seed
 * and deals them 7:1:2 into train/val/test. */
static int seeded_split(csv_row *rows, int n, int n_classes, unsigned long long seed, const char *csv, vf_error *err) {
    csv_row **by_group = malloc((size_t)n * sizeof *by_group);
    int *group_first = malloc((size_t)(n + 1) * sizeof *group_first);
    int *class_groups = malloc((size_t)n * sizeof *class_groups);
    if (!by_group || !group_first || !class_groups) {
        free(by_group); free(group_first); free(class_groups);
        return vf_fail(err, "%s: out of memory", csv);
    }
    for (int i = 0; i < n; i++) by_group[i] = &rows[i];
    qsort(by_group, n, sizeof *by_group, cmp_lesion);
    int n_groups = 0;
    for (int i = 0; i < n; i++)
        if (i == 0 || strcmp(by_group[i]->lesion, by_group[i - 1]->lesion) != 0) group_first[n_groups++] = i;
    group_first[n_groups] = n;
    vf_rng rng;
    vf_rng_seed(&rng, seed);
    for (int k = 0; k < n_classes; k++) {
        int m = 0;
        for (int g = 0; g < n_groups; g++)   /* a lesion's class is that of its first image */
            if (by_group[group_first[g]]->label == k) class_groups[m++] = g;
        vf_shuffle_ints(&rng, class_groups, m);
        int n_train = (int)(0.7 * m + 0.5), n_val = (int)(0.1 * m + 0.5);
        if (n_train + n_val > m) n_val = m - n_train;
        for (int j = 0; j < m; j++) {
            vf_split s = j < n_train ? VF_SPLIT_TRAIN : j < n_train + n_val ? VF_SPLIT_VAL : VF_SPLIT_TEST;
            int g = class_groups[j];
            for (int i = group_first[g]; i < group_first[g + 1]; i++) by_group[i]->which = s;
        }
    }
    free(by_group); free(group_first); free(class_groups);
    return 0;
}

int vf_dataset_open_csv(vf_dataset *ds, const char *csv_path, const char *image_dir, const char *const *codes,
                        int n_classes, unsigned long long seed, vf_error *err) {
    vf_dataset_priv *p = ds->priv;
    char *text = NULL, **dirs = NULL;
    int n_dirs = 0, rc = -1, n_rows = 0;
    size_t len;
    csv_row *rows = NULL;
    char dir_buf[4096];
    if (!image_dir) {
        snprintf(dir_buf, sizeof dir_buf, "%s", csv_path);
        image_dir = dirname(dir_buf);
    }
    if (vf_read_file(csv_path, &text, &len, err)) return -1;
    if (strlen(text) != len) { vf_fail(err, "%s: contains a NUL byte; not a text CSV", csv_path); goto done; }
    if (list_search_dirs(image_dir, &dirs, &n_dirs, err)) goto done;

    char *fields[CSV_MAX_FIELDS], *s = text, *next;
    if (len >= 3 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF) s += 3;
    int n_cols = split_record(s, fields, CSV_MAX_FIELDS, &next);
    if (n_cols < 0 || n_cols > CSV_MAX_FIELDS) { vf_fail(err, "%s line 1: malformed header", csv_path); goto done; }
    int c_id = -1, c_dx = -1, c_split = -1, c_lesion = -1;
    for (int c = 0; c < n_cols; c++) {
        char *h = trim(fields[c]);
        if (!strcasecmp(h, "image_id") || !strcasecmp(h, "image")) c_id = c;
        else if (!strcasecmp(h, "dx") || !strcasecmp(h, "label")) c_dx = c;
        else if (!strcasecmp(h, "split")) c_split = c;
        else if (!strcasecmp(h, "lesion_id")) c_lesion = c;
    }
    if (c_id < 0 || c_dx < 0) {
        vf_fail(err, "%s line 1: header must name the columns image_id and dx (HAM10000 layout)", csv_path);
        goto done;
    }
    size_t cap = 1;
    for (const char *q = next; *q; q++) cap += *q == '\n';
    rows = calloc(cap, sizeof *rows);
    if (!rows) { vf_fail(err, "%s: out of memory", csv_path); goto done; }
    int line = 1;
    for (s = next; *s; s = next) {
        line++;
        int nf = split_record(s, fields, CSV_MAX_FIELDS, &next);
        if (nf < 0) { vf_fail(err, "%s line %d: unterminated quoted field", csv_path, line); goto done; }
        if (nf == 1 && trim(fields[0])[0] == '\0') continue;   /* blank line */
        if (nf != n_cols) {
            vf_fail(err, "%s line %d: %d fields, the header has %d", csv_path, line, nf, n_cols);
            goto done;
        }
        csv_row *r = &rows[n_rows];
        r->line = line;
        r->image_id = trim(fields[c_id]);
        r->dx = trim(fields[c_dx]);
        r->split = c_split >= 0 ? trim(fields[c_split]) : NULL;
        r->lesion = c_lesion >= 0 ? trim(fields[c_lesion]) : r->image_id;
        if (!r->image_id[0]) { vf_fail(err, "%s line %d: empty image_id", csv_path, line); goto done; }
        if (strchr(r->image_id, '/') || strstr(r->image_id, "..")) {
            vf_fail(err, "%s line %d: image_id '%s' must be a plain file name", csv_path, line, r->image_id);
            goto done;
        }
        r->label = -1;
        for (int k = 0; k < n_classes; k++)
            if (!strcasecmp(r->dx, codes[k])) r->label = k;
        if (r->label < 0) {
            char list[512] = "";
            for (int k = 0; k < n_classes && strlen(list) < sizeof list - 40; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? "," : "", codes[k]);
            vf_fail(err, "%s line %d: dx '%s' of image %s is not one of the classes (%s)", csv_path, line, r->dx,
                    r->image_id, list);
            goto done;
        }
        if (r->split && vf_split_parse(r->split, &r->which)) {
            vf_fail(err, "%s line %d: split '%s' is not train, val or test", csv_path, line, r->split);
            goto done;
        }
        r->path = find_image(dirs, n_dirs, r->image_id);
        if (!r->path) {
            vf_fail(err, "%s line %d: image '%s' not found in %s or its subfolders (tried .jpg .jpeg .png)", csv_path,
                    line, r->image_id, image_dir);
            goto done;
        }
        n_rows++;
    }
    if (n_rows == 0) { vf_fail(err, "%s: no rows after the header", csv_path); goto done; }
    if (c_split < 0 && seeded_split(rows, n_rows, n_classes, seed, csv_path, err)) goto done;

    /* One string block for ids and paths, so the rows' text can be freed. */
    size_t bytes = 0;
    for (int i = 0; i < n_rows; i++) bytes += strlen(rows[i].image_id) + strlen(rows[i].path) + 2;
    p->strings = malloc(bytes);
    if (!p->strings) { vf_fail(err, "%s: out of memory", csv_path); goto done; }
    for (int sp = 0; sp < VF_SPLIT_COUNT; sp++) {
        int n = 0;
        for (int i = 0; i < n_rows; i++) n += rows[i].which == (vf_split)sp;
        vf_split_data *d = &ds->split[sp];
        d->labels = malloc((size_t)(n ? n : 1) * sizeof *d->labels);
        d->paths = malloc((size_t)(n ? n : 1) * sizeof *d->paths);
        d->ids = malloc((size_t)(n ? n : 1) * sizeof *d->ids);
        if (!d->labels || !d->paths || !d->ids) { vf_fail(err, "%s: out of memory", csv_path); goto done; }
    }
    char *w = p->strings;
    for (int i = 0; i < n_rows; i++) {
        vf_split_data *d = &ds->split[rows[i].which];
        d->labels[d->n] = rows[i].label;
        d->ids[d->n] = strcpy(w, rows[i].image_id);
        w += strlen(w) + 1;
        d->paths[d->n] = strcpy(w, rows[i].path);
        w += strlen(w) + 1;
        d->n++;
    }
    rc = 0;
done:
    if (rows) for (int i = 0; i < n_rows + 1 && i < (int)cap; i++) free(rows[i].path);
    free(rows);
    for (int i = 0; i < n_dirs; i++) free(dirs[i]);
    free(dirs);
    free(text);
    return rc;
}
