/* safetensors: validated mmap reader and atomic writer (see safetensors.h). */
#include "formats/safetensors.h"
#include "util/sha256.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { const char *name; vf_dtype dt; size_t size; } k_dtypes[] = {
    {"F32", VF_DT_F32, 4}, {"F16", VF_DT_F16, 2}, {"BF16", VF_DT_BF16, 2}, {"F64", VF_DT_F64, 8},
    {"I64", VF_DT_I64, 8}, {"I32", VF_DT_I32, 4}, {"I16", VF_DT_I16, 2}, {"I8", VF_DT_I8, 1},
    {"U8", VF_DT_U8, 1},   {"BOOL", VF_DT_BOOL, 1},
};

const char *vf_dtype_name(vf_dtype dt) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof *k_dtypes; i++)
        if (k_dtypes[i].dt == dt) return k_dtypes[i].name;
    return "?";
}

size_t vf_dtype_size(vf_dtype dt) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof *k_dtypes; i++)
        if (k_dtypes[i].dt == dt) return k_dtypes[i].size;
    return 0;
}

int vf_dtype_parse(const char *s, vf_dtype *dt) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof *k_dtypes; i++)
        if (strcmp(k_dtypes[i].name, s) == 0) { *dt = k_dtypes[i].dt; return 0; }
    return -1;
}

/* ---- half precision ------------------------------------------------------ */
float vf_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t vf_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                           /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float vf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    if (exp == 0) {
        if (mant == 0) u = sign;
        else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) { mant <<= 1; exp--; }
            u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) u = sign | 0x7f800000u | (mant << 13);
    else u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t vf_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xffu);
    uint32_t mant = u & 0x7fffffu;
    if (exp == 255) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;
    return (uint16_t)half;
}

/* ---- reader -------------------------------------------------------------- */
static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const vf_st_tensor *)a)->name, ((const vf_st_tensor *)b)->name);
}
static int cmp_tensor_begin(const void *a, const void *b) {
    const vf_st_tensor *x = *(vf_st_tensor *const *)a, *y = *(vf_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* A JSON object whose keys repeat means different things to different
 * readers (cJSON's lookups take the first, Python's dict the last), and a
 * count taken with cJSON_GetArraySize no longer bounds the distinct entries a
 * later pass fills: every object of the header is checked for repeated keys
 * before anything is sized from it.  `what` ("" or "tensor x: ") says
 * whose keys these are. */
static int cmp_key(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int check_unique_keys(const char *path, const cJSON *obj, const char *what, vf_error *err) {
    size_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) n++;
    if (n < 2) return 0;
    const char **keys = malloc(n * sizeof *keys);
    if (!keys) return vf_fail(err, "%s: out of memory", path);
    n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) keys[n++] = c->string ? c->string : "";
    qsort(keys, n, sizeof *keys, cmp_key);
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++)
        if (strcmp(keys[i], keys[i - 1]) == 0)
            rc = vf_fail(err, "%s: %skey \"%s\" appears twice in the header", path, what, keys[i]);
    free(keys);
    return rc;
}

/* JSON offsets and sizes arrive as doubles: a whole number in [0, 2^53]
 * (beyond that doubles skip integers, and no file is that large). */
static int whole_number(const cJSON *v, double max, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > max || d > 9007199254740992.0 || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_entry(vf_safetensors *st, const cJSON *item, vf_st_tensor *t, size_t data_len,
                       vf_error *err) {
    const char *f = st->path;
    if (!cJSON_IsObject(item)) return vf_fail(err, "%s: tensor %s: entry is not an object", f, item->string);
    char what[300];
    snprintf(what, sizeof what, "tensor %s: ", item->string);
    if (check_unique_keys(f, item, what, err)) return -1;
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return vf_fail(err, "%s: tensor %s: needs dtype, shape and two data_offsets", f, item->string);
    if (vf_dtype_parse(jd->valuestring, &t->dtype) != 0)
        return vf_fail(err, "%s: tensor %s: unknown dtype \"%s\"", f, item->string, jd->valuestring);
    t->ndim = cJSON_GetArraySize(js);
    if (t->ndim > VF_ST_MAX_DIMS) return vf_fail(err, "%s: tensor %s: %d dimensions (max %d)", f, item->string, t->ndim, VF_ST_MAX_DIMS);
    t->numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d;
        if (whole_number(cJSON_GetArrayItem(js, i), 9.0e15, &d))
            return vf_fail(err, "%s: tensor %s: bad shape entry", f, item->string);
        t->shape[i] = (int64_t)d;
        if (t->shape[i] && t->numel > INT64_MAX / t->shape[i]) return vf_fail(err, "%s: tensor %s: shape overflows", f, item->string);
        t->numel *= t->shape[i];
    }
    uint64_t b, e;
    if (whole_number(cJSON_GetArrayItem(jo, 0), INFINITY, &b) || whole_number(cJSON_GetArrayItem(jo, 1), INFINITY, &e) || e < b)
        return vf_fail(err, "%s: tensor %s: bad data_offsets (two whole numbers, begin <= end)", f, item->string);
    if (e > data_len)
        return vf_fail(err, "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] past the end of the %zu-byte data section (file truncated?)",
                       f, item->string, b, e, data_len);
    t->begin = (size_t)b;
    t->end = (size_t)e;
    /* numel <= bytes / size first: the product itself could wrap around. */
    if ((uint64_t)t->numel > (t->end - t->begin) / vf_dtype_size(t->dtype) ||
        (uint64_t)t->numel * vf_dtype_size(t->dtype) != t->end - t->begin)
        return vf_fail(err, "%s: tensor %s: %zu bytes of data for %" PRId64 " %s elements", f, item->string,
                       t->end - t->begin, t->numel, vf_dtype_name(t->dtype));
    t->name = strdup(item->string);
    return t->name ? 0 : vf_fail(err, "%s: out of memory", f);
}

/* Called once per header (a second "__metadata__" is refused before this);
 * the arrays are sized from this object's own child count and the fill
 * loop is bounded by it, so the two passes cannot disagree. */
static int parse_metadata(vf_safetensors *st, const cJSON *meta, vf_error *err) {
    if (!cJSON_IsObject(meta)) return vf_fail(err, "%s: __metadata__ is not an object", st->path);
    if (st->meta_keys) return vf_fail(err, "%s: key \"__metadata__\" appears twice in the header", st->path);
    if (check_unique_keys(st->path, meta, "__metadata__: ", err)) return -1;
    int n = cJSON_GetArraySize(meta);
    st->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    st->meta_vals = calloc((size_t)n + 1, sizeof(char *));
    if (!st->meta_keys || !st->meta_vals) return vf_fail(err, "%s: out of memory", st->path);
    for (const cJSON *m = meta->child; m; m = m->next) {
        if (!cJSON_IsString(m)) return vf_fail(err, "%s: __metadata__ value %s is not a string", st->path, m->string);
        if (st->n_meta >= n) return vf_fail(err, "%s: __metadata__ changed while it was read", st->path);
        char *k = strdup(m->string), *v = strdup(m->valuestring);
        if (!k || !v) { free(k); free(v); return vf_fail(err, "%s: out of memory", st->path); }
        st->meta_keys[st->n_meta] = k;
        st->meta_vals[st->n_meta] = v;
        st->n_meta++;
    }
    return 0;
}

static int check_layout(vf_safetensors *st, size_t data_len, vf_error *err) {
    vf_st_tensor **by_begin = malloc(sizeof(*by_begin) * (size_t)(st->n_tensors ? st->n_tensors : 1));
    if (!by_begin) return vf_fail(err, "%s: out of memory", st->path);
    for (int i = 0; i < st->n_tensors; i++) by_begin[i] = &st->tensors[i];
    qsort(by_begin, (size_t)st->n_tensors, sizeof *by_begin, cmp_tensor_begin);
    size_t pos = 0;
    int rc = 0;
    for (int i = 0; i < st->n_tensors && rc == 0; i++) {
        const vf_st_tensor *t = by_begin[i];
        if (t->begin < pos)
            rc = vf_fail(err, "%s: tensor %s overlaps tensor %s in the data section", st->path, t->name, by_begin[i - 1]->name);
        else if (t->begin > pos)
            rc = vf_fail(err, "%s: tensor %s starts at %zu, leaving a gap after byte %zu", st->path, t->name, t->begin, pos);
        pos = t->end;
    }
    if (rc == 0 && pos != data_len)
        rc = vf_fail(err, "%s: %zu trailing bytes after the last tensor", st->path, data_len - pos);
    free(by_begin);
    return rc;
}

/* cJSON turns "\u0000" (and takes a raw NUL byte) into the end of a C
 * string, so "a\u0000b" would silently become tensor "a" here while other
 * readers see "a\0b".  JSON allows no raw control byte in a string, and
 * outside strings only whitespace: any raw byte below 0x20 other than
 * tab/newline/return, or a \u0000 escape, is refused. */
static const char *header_bad_char(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') return "a control byte";
        if (p[i] != '\\') continue;
        if (i + 5 < n && p[i + 1] == 'u' && !memcmp(p + i + 2, "0000", 4)) return "a \\u0000 escape";
        i++; /* the escaped character cannot start another escape */
    }
    return NULL;
}

static int verify_checksum(const vf_safetensors *st, const unsigned char *data, size_t data_len, vf_error *err);

int vf_st_open(vf_safetensors *st, const char *path, vf_error *err) {
    memset(st, 0, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    /* O_NONBLOCK: a FIFO given as a model path must not hang the open. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return vf_fail_errno(err, path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) { close(fd); return vf_fail_errno(err, path); }
    if (!S_ISREG(sb.st_mode)) { close(fd); return vf_fail(err, "%s: not a regular file", path); }
    if ((size_t)sb.st_size < 8) { close(fd); return vf_fail(err, "%s: %lld bytes is too short for a safetensors file", path, (long long)sb.st_size); }
    st->map_len = (size_t)sb.st_size;
    st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (st->map == MAP_FAILED) { st->map = NULL; return vf_fail_errno(err, path); }

    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->map[i];
    if (hlen > st->map_len - 8) {
        vf_fail(err, "%s: header length %" PRIu64 " is past the end of the %zu-byte file", path, hlen, st->map_len);
        goto fail;
    }
    if (hlen > 100u * 1024 * 1024) { vf_fail(err, "%s: header length %" PRIu64 " exceeds 100 MiB", path, hlen); goto fail; }
    const char *hdr = (const char *)st->map + 8, *bad = header_bad_char((const unsigned char *)hdr, (size_t)hlen);
    if (bad) { vf_fail(err, "%s: the header contains %s (a name would be cut short)", path, bad); goto fail; }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        vf_fail(err, "%s: header is not a valid JSON object", path);
        goto fail;
    }
    /* The writer pads the header with spaces; anything else after the object
     * is a second document other readers reject. */
    for (; end < hdr + hlen; end++)
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(root);
            vf_fail(err, "%s: characters after the header's JSON object (byte %td of %" PRIu64 ")", path, end - hdr, hlen);
            goto fail;
        }
    if (check_unique_keys(path, root, "", err)) { cJSON_Delete(root); goto fail; }
    size_t data_len = st->map_len - 8 - (size_t)hlen;
    const unsigned char *data = st->map + 8 + hlen;
    int n = cJSON_GetArraySize(root);
    st->tensors = calloc((size_t)n + 1, sizeof *st->tensors);
    if (!st->tensors) { cJSON_Delete(root); vf_fail(err, "%s: out of memory", path); goto fail; }
    int rc = 0;
    for (const cJSON *it = root->child; it && rc == 0; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) { rc = parse_metadata(st, it, err); continue; }
        if (st->n_tensors >= n) { rc = vf_fail(err, "%s: header changed while it was read", path); break; }
        vf_st_tensor *t = &st->tensors[st->n_tensors];
        rc = parse_entry(st, it, t, data_len, err);
        if (rc == 0) { t->data = data + t->begin; st->n_tensors++; }
    }
    cJSON_Delete(root);
    if (rc != 0) goto fail;
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_tensor_name);
    /* Unreachable after check_unique_keys unless a name held a NUL, which
     * header_bad_char refuses; kept because bsearch needs unique names. */
    for (int i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0) {
            vf_fail(err, "%s: tensor %s appears twice", path, st->tensors[i].name);
            goto fail;
        }
    if (check_layout(st, data_len, err) != 0 || verify_checksum(st, data, data_len, err) != 0) goto fail;
    return 0;
fail:
    vf_st_close(st);
    return -1;
}

void vf_st_close(vf_safetensors *st) {
    if (st->map) munmap(st->map, st->map_len);
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) { free(st->meta_keys[i]); free(st->meta_vals[i]); }
    free(st->meta_keys);
    free(st->meta_vals);
    char path[sizeof st->path];
    memcpy(path, st->path, sizeof path);
    memset(st, 0, sizeof *st);
    memcpy(st->path, path, sizeof path);
}

const vf_st_tensor *vf_st_find(const vf_safetensors *st, const char *name) {
    vf_st_tensor key = {.name = (char *)name};
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_tensor_name);
}

const vf_st_tensor *vf_st_require(const vf_safetensors *st, const char *name, vf_error *err) {
    const vf_st_tensor *t = vf_st_find(st, name);
    if (!t) vf_fail(err, "%s: missing tensor %s", st->path, name);
    return t;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

int vf_st_check_shape(const vf_safetensors *st, const vf_st_tensor *t, int ndim, const int64_t *shape,
                      vf_error *err) {
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return 0;
    char want[128], got[128];
    shape_str(want, sizeof want, ndim, shape);
    shape_str(got, sizeof got, t->ndim, t->shape);
    return vf_fail(err, "%s: tensor %s has shape %s, the config needs %s", st->path, t->name, got, want);
}

int vf_st_read_f32(const vf_safetensors *st, const char *name, int ndim, const int64_t *shape, float *dst,
                   vf_error *err) {
    const vf_st_tensor *t = vf_st_require(st, name, err);
    if (!t || vf_st_check_shape(st, t, ndim, shape, err) != 0) return -1;
    const unsigned char *p = t->data;
    int64_t n = t->numel;
    switch (t->dtype) {
    case VF_DT_F32: memcpy(dst, p, (size_t)n * 4); break;
    case VF_DT_F64:
        for (int64_t i = 0; i < n; i++) { double d; memcpy(&d, p + 8 * i, 8); dst[i] = (float)d; }
        break;
    case VF_DT_F16:
    case VF_DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
            dst[i] = t->dtype == VF_DT_F16 ? vf_f16_to_f32(h) : vf_bf16_to_f32(h);
        }
        break;
    default:
        return vf_fail(err, "%s: tensor %s has dtype %s, a float type is needed", st->path, name, vf_dtype_name(t->dtype));
    }
    return 0;
}

const char *vf_st_meta(const vf_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_vals[i];
    return NULL;
}

/* ---- writer -------------------------------------------------------------- */
void vf_st_writer_init(vf_st_writer *w) { memset(w, 0, sizeof *w); }

static vf_st_writer_entry *writer_push(vf_st_writer *w, const char *name, vf_dtype dt, int ndim,
                                       const int64_t *shape, vf_error *err) {
    if (ndim > VF_ST_MAX_DIMS) { vf_fail(err, "tensor %s: too many dimensions", name); return NULL; }
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        vf_st_writer_entry *e = realloc(w->e, sizeof *e * (size_t)cap);
        if (!e) { vf_fail(err, "out of memory"); return NULL; }
        w->e = e;
        w->cap = cap;
    }
    vf_st_writer_entry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->dtype = dt;
    e->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) { e->shape[i] = shape[i]; numel *= (size_t)shape[i]; }
    e->nbytes = numel * vf_dtype_size(dt);
    return e;
}

int vf_st_writer_add_f32(vf_st_writer *w, const char *name, vf_dtype dtype, int ndim, const int64_t *shape,
                         const float *data, vf_error *err) {
    if (dtype != VF_DT_F32 && dtype != VF_DT_F16 && dtype != VF_DT_BF16)
        return vf_fail(err, "tensor %s: cannot store float data as %s", name, vf_dtype_name(dtype));
    vf_st_writer_entry *e = writer_push(w, name, dtype, ndim, shape, err);
    if (!e) return -1;
    e->src = data;
    e->src_is_f32 = 1;
    return 0;
}

int vf_st_writer_add_raw(vf_st_writer *w, const char *name, vf_dtype dtype, int ndim, const int64_t *shape,
                         const void *data, vf_error *err) {
    vf_st_writer_entry *e = writer_push(w, name, dtype, ndim, shape, err);
    if (!e) return -1;
    e->src = data;
    return 0;
}

int vf_st_writer_meta(vf_st_writer *w, const char *key, const char *value, vf_error *err) {
    char **k = realloc(w->meta_keys, sizeof(char *) * (size_t)(w->n_meta + 1));
    if (k) w->meta_keys = k;
    char **v = realloc(w->meta_vals, sizeof(char *) * (size_t)(w->n_meta + 1));
    if (v) w->meta_vals = v;
    if (!k || !v) return vf_fail(err, "out of memory");
    w->meta_keys[w->n_meta] = strdup(key);
    w->meta_vals[w->n_meta] = strdup(value);
    w->n_meta++;
    return 0;
}

/* The bytes of one entry as stored (F16/BF16 converted in chunks), handed to sink. */
typedef int (*data_sink)(void *ctx, const void *data, size_t len, vf_error *err);

static int emit_entry(const vf_st_writer_entry *e, data_sink sink, void *ctx, vf_error *err) {
    if (!e->src_is_f32 || e->dtype == VF_DT_F32) return sink(ctx, e->src, e->nbytes, err);
    const float *src = e->src;
    size_t n = e->nbytes / 2, chunk = 1 << 16;
    unsigned char buf[2 << 16];
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        for (size_t j = 0; j < m; j++) {
            uint16_t h = e->dtype == VF_DT_F16 ? vf_f32_to_f16(src[i + j]) : vf_f32_to_bf16(src[i + j]);
            buf[2 * j] = (unsigned char)(h & 0xff);
            buf[2 * j + 1] = (unsigned char)(h >> 8);
        }
        if (sink(ctx, buf, 2 * m, err) != 0) return -1;
    }
    return 0;
}

static int sink_file(void *f, const void *data, size_t len, vf_error *err) { return vf_atomic_write(f, data, len, err); }

static int sink_hash(void *h, const void *data, size_t len, vf_error *err) {
    vf_sha256_add(h, data, len);
    return 0;
}

void vf_st_writer_checksum(vf_st_writer *w) { w->checksum = 1; }

#define DATA_SHA256_KEY "vflclip_data_sha256"

static void data_checksum(const vf_st_writer *w, char hex[65]) {
    vf_sha256_ctx h;
    unsigned char d[32];
    vf_sha256_begin(&h);
    for (int i = 0; i < w->n; i++) emit_entry(&w->e[i], sink_hash, &h, NULL);
    vf_sha256_end(&h, d);
    vf_sha256_to_hex(d, hex);
}

/* A sealed file's data must still be what was written. */
static int verify_checksum(const vf_safetensors *st, const unsigned char *data, size_t data_len, vf_error *err) {
    const char *want = vf_st_meta(st, DATA_SHA256_KEY);
    if (!want) return 0;
    unsigned char d[32];
    char hex[65];
    vf_sha256(data, data_len, d);
    vf_sha256_to_hex(d, hex);
    if (strcmp(hex, want) != 0)
        return vf_fail(err, "%s: the data does not match the file's checksum (%s %.16s..., computed %.16s...): the file is "
                       "corrupt", st->path, DATA_SHA256_KEY, want, hex);
    return 0;
}

int vf_st_writer_save(vf_st_writer *w, const char *path, vf_error *err) {
    cJSON *root = cJSON_CreateObject();
    if (w->n_meta || w->checksum) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < w->n_meta; i++) cJSON_AddStringToObject(meta, w->meta_keys[i], w->meta_vals[i]);
        if (w->checksum) {
            char hex[65];
            data_checksum(w, hex);
            cJSON_AddStringToObject(meta, DATA_SHA256_KEY, hex);
        }
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const vf_st_writer_entry *e = &w->e[i];
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        cJSON_AddStringToObject(t, "dtype", vf_dtype_name(e->dtype));
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + e->nbytes)));
        off += e->nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return vf_fail(err, "%s: out of memory building the header", path);
    size_t jlen = strlen(json), padded = (jlen + 7) & ~(size_t)7; /* keeps F32 data 8-aligned */
    unsigned char hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    vf_atomic_file f;
    int rc = vf_atomic_open(&f, path, err);
    if (rc == 0) rc = vf_atomic_write(&f, hdr, 8, err);
    if (rc == 0) rc = vf_atomic_write(&f, json, jlen, err);
    if (rc == 0 && padded > jlen) rc = vf_atomic_write(&f, "        ", padded - jlen, err);
    for (int i = 0; i < w->n && rc == 0; i++) rc = emit_entry(&w->e[i], sink_file, &f, err);
    free(json);
    if (rc != 0) { vf_atomic_abort(&f); return -1; }
    return vf_atomic_commit(&f, err);
}

void vf_st_writer_free(vf_st_writer *w) {
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    for (int i = 0; i < w->n_meta; i++) { free(w->meta_keys[i]); free(w->meta_vals[i]); }
    free(w->meta_keys);
    free(w->meta_vals);
    memset(w, 0, sizeof *w);
}
