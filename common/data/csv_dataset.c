/* csv_dataset: an image folder with a labels CSV in HAM10000's layout
 * (image_id, dx[, split][, lesion_id] ...), and the seeded stratified split
 * used when the CSV has no split column.  The CSV syntax is libcsv's (RFC
 * 4180, any line ending); this file owns the layout, the line numbers in
 * messages and finding each image. */
#include "data/dataset_internal.h"
#include "data/shuffle.h"
#include "util/fileio.h"

#include <csv.h>
#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* Columns beyond this in the header are refused: HAM10000's metadata has 7. */
#define CSV_MAX_FIELDS 64

typedef struct csv_row {
    int line;                                /* physical line where the record starts */
    char *image_id, *dx, *split, *lesion;    /* owned; split may be NULL */
    int label;
    vf_split which;
    char *path;                              /* owned: the image file found */
} csv_row;

/* ---- records from libcsv, with the physical line each one starts on ------ */

/* Receives one record's fields (only the first CSV_MAX_FIELDS are stored; nf
 * counts them all) and the line it starts on; -1 stops the reading. */
typedef int (*record_fn)(char **fields, int nf, int line, void *ctx, vf_error *err);

typedef struct csv_reader {
    const char *path;
    int line;          /* physical line being fed to the parser */
    int row_line;      /* line where the record being parsed began */
    int row_open;      /* a record has begun and not yet ended */
    int failed;        /* a callback failed: err is set, the rest is ignored */
    int nf;
    char *fields[CSV_MAX_FIELDS];
    record_fn on_record;
    void *ctx;
    vf_error *err;
} csv_reader;

static void reader_clear_fields(csv_reader *r) {
    for (int i = 0; i < r->nf && i < CSV_MAX_FIELDS; i++) free(r->fields[i]);
    r->nf = 0;
}

/* libcsv field callback: its bytes are not NUL-terminated (and NULL for an
 * empty first field), so each one is copied. */
static void on_field(void *s, size_t len, void *data) {
    csv_reader *r = data;
    if (r->failed) return;
    if (r->nf < CSV_MAX_FIELDS && !(r->fields[r->nf] = strndup(s ? (const char *)s : "", len))) {
        r->failed = 1;
        vf_fail(r->err, "%s line %d: out of memory", r->path, r->row_line);
        return;
    }
    r->nf++;
}

/* libcsv record callback: c is the terminator, or -1 at the end of the file. */
static void on_record_end(int c, void *data) {
    csv_reader *r = data;
    (void)c;
    if (!r->failed && r->on_record(r->fields, r->nf, r->row_line, r->ctx, r->err)) r->failed = 1;
    reader_clear_fields(r);
    r->row_open = 0;
}

/* End of the physical line starting at i: after LF, CRLF or a bare CR
 * (classic Mac OS / Excel's "CSV (Macintosh)"), or the end of the text. */
static size_t line_end(const char *s, size_t len, size_t i) {
    while (i < len && s[i] != '\n' && s[i] != '\r') i++;
    if (i + 1 < len && s[i] == '\r' && s[i + 1] == '\n') i++;
    return i < len ? i + 1 : len;
}

/* libcsv skips lines of only blanks between records, so they start none. */
static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

/* Parses TEXT (RFC 4180: quoted fields may hold commas, "" and line breaks;
 * records end in LF, CRLF or CR; the last may lack one) and calls fn for each
 * record.  The text is fed one physical line at a time: libcsv counts no
 * lines, and this is how a record's first line is known for messages.
 * Strict mode: a quote inside an unquoted field or text after a closing
 * quote is an error rather than a silently odd field. */
static int csv_read_records(const char *path, const char *text, size_t len, record_fn fn, void *ctx, vf_error *err) {
    struct csv_parser p;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI)) return vf_fail(err, "%s: cannot start the CSV parser", path);
    csv_reader r = {.path = path, .on_record = fn, .ctx = ctx, .err = err};
    int rc = 0;
    for (size_t i = 0, j; i < len && !r.failed && rc == 0; i = j) {
        j = line_end(text, len, i);
        r.line++;
        if (!r.row_open && !is_blank(text + i, j - i)) { r.row_open = 1; r.row_line = r.line; }
        if (csv_parse(&p, text + i, j - i, on_field, on_record_end, &r) != j - i && !r.failed)
            rc = csv_error(&p) == CSV_EPARSE
                     ? vf_fail(err, "%s line %d: malformed quoting (a quote inside an unquoted field, or text after "
                               "a closing quote)", path, r.line)
                     : vf_fail(err, "%s line %d: %s", path, r.line, csv_strerror(csv_error(&p)));
    }
    if (!r.failed && rc == 0 && csv_fini(&p, on_field, on_record_end, &r) != 0)
        rc = vf_fail(err, "%s line %d: unterminated quoted field", path, r.row_line);
    reader_clear_fields(&r);
    csv_free(&p);
    return r.failed || rc ? -1 : 0;
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

/* ---- the HAM10000 layout: header, then one image per record -------------- */

typedef struct csv_load {
    const char *path, *image_dir;
    const char *const *codes;
    int n_classes;
    char **dirs;
    int n_dirs;
    int n_cols;                              /* 0 until the header is read */
    int c_id, c_dx, c_split, c_lesion;
    csv_row *rows;
    int n_rows, cap;
} csv_load;

static int take_header(csv_load *L, char **fields, int nf, vf_error *err) {
    if (nf > CSV_MAX_FIELDS)
        return vf_fail(err, "%s line 1: the header has %d columns (at most %d)", L->path, nf, CSV_MAX_FIELDS);
    L->c_id = L->c_dx = L->c_split = L->c_lesion = -1;
    for (int c = 0; c < nf; c++) {
        char *h = trim(fields[c]);
        if (!strcasecmp(h, "image_id") || !strcasecmp(h, "image")) L->c_id = c;
        else if (!strcasecmp(h, "dx") || !strcasecmp(h, "label")) L->c_dx = c;
        else if (!strcasecmp(h, "split")) L->c_split = c;
        else if (!strcasecmp(h, "lesion_id")) L->c_lesion = c;
    }
    if (L->c_id < 0 || L->c_dx < 0)
        return vf_fail(err, "%s line 1: header must name the columns image_id and dx (HAM10000 layout)", L->path);
    L->n_cols = nf;
    return 0;
}

/* The row's dx as a label index, or a message listing the classes. */
static int row_label(const csv_load *L, const csv_row *r, vf_error *err) {
    for (int k = 0; k < L->n_classes; k++)
        if (!strcasecmp(r->dx, L->codes[k])) return k;
    char list[512] = "";
    for (int k = 0; k < L->n_classes && strlen(list) < sizeof list - 40; k++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? "," : "", L->codes[k]);
    vf_fail(err, "%s line %d: dx '%s' of image %s is not one of the classes (%s)", L->path, r->line, r->dx,
            r->image_id, list);
    return -1;
}

/* Validates a filled row and finds its image. */
static int check_row(const csv_load *L, csv_row *r, vf_error *err) {
    if (!r->image_id[0]) return vf_fail(err, "%s line %d: empty image_id", L->path, r->line);
    if (strchr(r->image_id, '/') || strstr(r->image_id, ".."))
        return vf_fail(err, "%s line %d: image_id '%s' must be a plain file name", L->path, r->line, r->image_id);
    if ((r->label = row_label(L, r, err)) < 0) return -1;
    if (r->split && vf_split_parse(r->split, &r->which))
        return vf_fail(err, "%s line %d: split '%s' is not train, val or test", L->path, r->line, r->split);
    r->path = find_image(L->dirs, L->n_dirs, r->image_id);
    if (!r->path)
        return vf_fail(err, "%s line %d: image '%s' not found in %s or its subfolders (tried .jpg .jpeg .png)", L->path,
                       r->line, r->image_id, L->image_dir);
    return 0;
}

static void free_row(csv_row *r) {
    free(r->image_id); free(r->dx); free(r->split); free(r->lesion); free(r->path);
}

static int take_row(csv_load *L, char **fields, int nf, int line, vf_error *err) {
    if (nf == 1 && trim(fields[0])[0] == '\0') return 0;   /* a record of one empty field, e.g. "" */
    if (nf != L->n_cols) return vf_fail(err, "%s line %d: %d fields, the header has %d", L->path, line, nf, L->n_cols);
    if (L->n_rows == L->cap) {   /* grows with the records actually read, whatever ends the lines */
        int cap = L->cap ? 2 * L->cap : 256;
        csv_row *grown = realloc(L->rows, (size_t)cap * sizeof *grown);
        if (!grown) return vf_fail(err, "%s line %d: out of memory", L->path, line);
        L->rows = grown;
        L->cap = cap;
    }
    csv_row *r = &L->rows[L->n_rows];
    memset(r, 0, sizeof *r);
    r->line = line;
    r->image_id = strdup(trim(fields[L->c_id]));
    r->dx = strdup(trim(fields[L->c_dx]));
    r->split = L->c_split >= 0 ? strdup(trim(fields[L->c_split])) : NULL;
    r->lesion = strdup(L->c_lesion >= 0 ? trim(fields[L->c_lesion]) : r->image_id ? r->image_id : "");
    if (!r->image_id || !r->dx || !r->lesion || (L->c_split >= 0 && !r->split)) {
        free_row(r);
        return vf_fail(err, "%s line %d: out of memory", L->path, line);
    }
    if (check_row(L, r, err)) { free_row(r); return -1; }
    L->n_rows++;
    return 0;
}

static int take_record(char **fields, int nf, int line, void *ctx, vf_error *err) {
    csv_load *L = ctx;
    return L->n_cols ? take_row(L, fields, nf, line, err) : take_header(L, fields, nf, err);
}

/* Copies the rows' labels, ids and paths into the split arrays; ids and paths
 * share one string block owned by the data set. */
static int fill_splits(vf_dataset *ds, const csv_row *rows, int n_rows, const char *csv, vf_error *err) {
    vf_dataset_priv *p = ds->priv;
    size_t bytes = 0;
    for (int i = 0; i < n_rows; i++) bytes += strlen(rows[i].image_id) + strlen(rows[i].path) + 2;
    p->strings = malloc(bytes);
    if (!p->strings) return vf_fail(err, "%s: out of memory", csv);
    for (int sp = 0; sp < VF_SPLIT_COUNT; sp++) {
        int n = 0;
        for (int i = 0; i < n_rows; i++) n += rows[i].which == (vf_split)sp;
        vf_split_data *d = &ds->split[sp];
        d->labels = malloc((size_t)(n ? n : 1) * sizeof *d->labels);
        d->paths = malloc((size_t)(n ? n : 1) * sizeof *d->paths);
        d->ids = malloc((size_t)(n ? n : 1) * sizeof *d->ids);
        if (!d->labels || !d->paths || !d->ids) return vf_fail(err, "%s: out of memory", csv);
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
    return 0;
}

/* Reads the CSV's records into L->rows, finding each image in L->image_dir. */
static int load_rows(csv_load *L, vf_error *err) {
    char *text;
    size_t len;
    if (vf_read_file(L->path, &text, &len, err)) return -1;
    int rc = -1;
    const char *s = text;
    if (strlen(text) != len) { vf_fail(err, "%s: contains a NUL byte; not a text CSV", L->path); goto done; }
    if (len >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) { s += 3; len -= 3; }   /* Excel's UTF-8 byte-order mark */
    if (list_search_dirs(L->image_dir, &L->dirs, &L->n_dirs, err)) goto done;
    if (csv_read_records(L->path, s, len, take_record, L, err)) goto done;
    if (!L->n_cols) { vf_fail(err, "%s: empty file; expected a header row naming image_id and dx", L->path); goto done; }
    if (L->n_rows == 0) { vf_fail(err, "%s: no rows after the header", L->path); goto done; }
    rc = 0;
done:
    free(text);
    return rc;
}

int vf_dataset_open_csv(vf_dataset *ds, const char *csv_path, const char *image_dir, const char *const *codes,
                        int n_classes, unsigned long long seed, vf_error *err) {
    char dir_buf[4096];
    if (!image_dir) {
        snprintf(dir_buf, sizeof dir_buf, "%s", csv_path);
        image_dir = dirname(dir_buf);
    }
    csv_load L = {.path = csv_path, .image_dir = image_dir, .codes = codes, .n_classes = n_classes};
    int rc = -1;
    if (load_rows(&L, err)) goto done;
    if (L.c_split < 0 && seeded_split(L.rows, L.n_rows, n_classes, seed, csv_path, err)) goto done;
    rc = fill_splits(ds, L.rows, L.n_rows, csv_path, err);
done:
    for (int i = 0; i < L.n_rows; i++) free_row(&L.rows[i]);
    free(L.rows);
    for (int i = 0; i < L.n_dirs; i++) free(L.dirs[i]);
    free(L.dirs);
    return rc;
}
