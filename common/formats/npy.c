/* npy: parsing, conversion and atomic writing of .npy arrays (see npy.h). */
#include "formats/npy.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fileio.h"

static const unsigned char NPY_MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

int vf_npy_itemsize(const char *descr) {
    if (strlen(descr) != 3) return 0;
    char order = descr[0], kind = descr[1], size = descr[2];
    if (!strchr("<>|=", order)) return 0;
    int n = size - '0';
    int ok = (kind == 'f' && (n == 2 || n == 4 || n == 8)) ||
             ((kind == 'i' || kind == 'u') && (n == 1 || n == 2 || n == 4 || n == 8)) ||
             (kind == 'b' && n == 1);
    if (!ok) return 0;
    if (order == '|' && n != 1) return 0;   /* numpy writes '|' only for byte-sized types */
    return n;
}

int64_t vf_npy_numel(const vf_npy_view *v) {
    int64_t n = 1;
    for (int i = 0; i < v->ndim; i++) n *= v->shape[i];
    return n;
}

/* ---- header dict parser ---------------------------------------------------
 * The header is a Python literal; numpy writes exactly three keys, but any
 * order, quoting style and spacing that Python would accept is taken. */
typedef struct hdr_cursor {
    const char *p, *end;
} hdr_cursor;

static void skip_ws(hdr_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int eat(hdr_cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) { c->p++; return 1; }
    return 0;
}

/* Reads a quoted string into out (cap bytes); 0 on success. */
static int read_str(hdr_cursor *c, char *out, size_t cap) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return -1;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= cap) return -1;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return -1;
    c->p++;
    out[n] = 0;
    return 0;
}

static int read_word(hdr_cursor *c, const char *w) {
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) { c->p += n; return 1; }
    return 0;
}

/* "(3, 4)", "(3,)" or "()"; returns ndim or -1. */
static int read_shape(hdr_cursor *c, int64_t *shape, const char *name, vf_error *err) {
    if (!eat(c, '(')) return vf_fail(err, "%s: npy header: 'shape' is not a tuple", name);
    int ndim = 0;
    for (;;) {
        if (eat(c, ')')) return ndim;
        skip_ws(c);
        if (c->p >= c->end || !isdigit((unsigned char)*c->p))
            return vf_fail(err, "%s: npy header: shape entry is not a non-negative integer", name);
        int64_t v = 0;
        while (c->p < c->end && isdigit((unsigned char)*c->p)) {
            if (v > (INT64_MAX - 9) / 10) return vf_fail(err, "%s: npy header: shape entry overflows", name);
            v = v * 10 + (*c->p++ - '0');
        }
        if (c->p < c->end && *c->p == 'L') c->p++;   /* Python 2 long suffix */
        if (ndim == VF_NPY_MAX_DIMS) return vf_fail(err, "%s: npy header: more than %d dimensions", name, VF_NPY_MAX_DIMS);
        shape[ndim++] = v;
        if (eat(c, ',')) continue;
        if (eat(c, ')')) return ndim;
        return vf_fail(err, "%s: npy header: malformed shape tuple", name);
    }
}

static int parse_header_dict(const char *text, size_t len, const char *name, vf_npy_view *v, vf_error *err) {
    hdr_cursor c = {text, text + len};
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    if (!eat(&c, '{')) return vf_fail(err, "%s: npy header is not a dict literal", name);
    for (;;) {
        if (eat(&c, '}')) break;
        char key[32];
        if (read_str(&c, key, sizeof key) != 0) return vf_fail(err, "%s: npy header: malformed key", name);
        if (!eat(&c, ':')) return vf_fail(err, "%s: npy header: missing ':' after '%s'", name, key);
        if (strcmp(key, "descr") == 0) {
            if (read_str(&c, v->descr, sizeof v->descr) != 0)
                return vf_fail(err, "%s: npy header: 'descr' is not a simple dtype string (structured arrays are not supported)", name);
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (read_word(&c, "True")) v->fortran_order = 1;
            else if (read_word(&c, "False")) v->fortran_order = 0;
            else return vf_fail(err, "%s: npy header: 'fortran_order' is not True/False", name);
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            int nd = read_shape(&c, v->shape, name, err);
            if (nd < 0) return -1;
            v->ndim = nd;
            have_shape = 1;
        } else {
            return vf_fail(err, "%s: npy header: unexpected key '%s'", name, key);
        }
        if (eat(&c, ',')) continue;
        if (eat(&c, '}')) break;
        return vf_fail(err, "%s: npy header: expected ',' or '}' after '%s'", name, key);
    }
    skip_ws(&c);
    if (c.p != c.end) return vf_fail(err, "%s: npy header: trailing characters after the dict", name);
    if (!have_descr || !have_fortran || !have_shape)
        return vf_fail(err, "%s: npy header lacks '%s'", name, !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    if (!vf_npy_itemsize(v->descr))
        return vf_fail(err, "%s: unsupported npy dtype '%s' (want a numeric type such as '<f4', '<f8', '|u1', '<i8')", name, v->descr);
    return 0;
}

int vf_npy_parse(const void *buf, size_t len, const char *name, vf_npy_view *v, vf_error *err) {
    const unsigned char *b = buf;
    memset(v, 0, sizeof *v);
    if (len < 10 || memcmp(b, NPY_MAGIC, 6) != 0) return vf_fail(err, "%s: not a .npy file (bad magic)", name);
    int major = b[6];
    size_t hdr_len, pre;
    if (major == 1) { hdr_len = (size_t)b[8] | (size_t)b[9] << 8; pre = 10; }
    else if (major == 2 || major == 3) {
        if (len < 12) return vf_fail(err, "%s: truncated .npy preamble", name);
        hdr_len = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        pre = 12;
    } else return vf_fail(err, "%s: unsupported .npy version %d.%d", name, major, b[7]);
    if (hdr_len > len - pre)
        return vf_fail(err, "%s: npy header length %zu runs past the end of the %zu-byte data", name, hdr_len, len);
    /* v1/v2 headers are latin-1 and v3 utf-8; the dict itself is ASCII either way. */
    if (parse_header_dict((const char *)b + pre, hdr_len, name, v, err) != 0) return -1;
    size_t item = (size_t)vf_npy_itemsize(v->descr);
    size_t avail = len - pre - hdr_len;
    size_t need = item;
    for (int i = 0; i < v->ndim; i++) {
        if (v->shape[i] != 0 && need > SIZE_MAX / (size_t)v->shape[i])
            return vf_fail(err, "%s: npy shape overflows the address space", name);
        need *= (size_t)v->shape[i];
    }
    if (need != avail)
        return vf_fail(err, "%s: npy data is %zu bytes but shape and dtype '%s' need %zu%s", name, avail, v->descr, need,
                       avail < need ? " (truncated file?)" : "");
    v->data = b + pre + hdr_len;
    v->nbytes = need;
    return 0;
}

/* ---- conversion ------------------------------------------------------------ */
static int host_little(void) { const uint16_t x = 1; return *(const unsigned char *)&x == 1; }

static double load_elem(const unsigned char *p, char kind, int size, int swap) {
    unsigned char t[8];
    for (int i = 0; i < size; i++) t[i] = swap ? p[size - 1 - i] : p[i];
    switch (kind) {
    case 'f':
        if (size == 2) { uint16_t h; memcpy(&h, t, 2);
            /* IEEE half -> float, exact */
            int e = (h >> 10) & 31, m = h & 1023; double s = (h >> 15) ? -1.0 : 1.0;
            if (e == 0) return s * m * (1.0 / 16777216.0);
            if (e == 31) return m ? (double)NAN : s * (double)INFINITY;
            return s * (1024 + m) * ldexp(1.0, e - 25); }
        if (size == 4) { float f; memcpy(&f, t, 4); return f; }
        { double d; memcpy(&d, t, 8); return d; }
    case 'i':
        if (size == 1) return (int8_t)t[0];
        if (size == 2) { int16_t x; memcpy(&x, t, 2); return x; }
        if (size == 4) { int32_t x; memcpy(&x, t, 4); return x; }
        { int64_t x; memcpy(&x, t, 8); return (double)x; }
    case 'u':
        if (size == 1) return t[0];
        if (size == 2) { uint16_t x; memcpy(&x, t, 2); return x; }
        if (size == 4) { uint32_t x; memcpy(&x, t, 4); return x; }
        { uint64_t x; memcpy(&x, t, 8); return (double)x; }
    default: /* 'b' */
        return t[0] ? 1.0 : 0.0;
    }
}

int vf_npy_view_to_f32(const vf_npy_view *v, float *dst, const char *name, vf_error *err) {
    int size = vf_npy_itemsize(v->descr);
    if (!size) return vf_fail(err, "%s: unsupported npy dtype '%s'", name, v->descr);
    char kind = v->descr[1];
    int file_little = v->descr[0] != '>' && !(v->descr[0] == '=' && !host_little());
    int swap = size > 1 && file_little != host_little();
    int64_t n = vf_npy_numel(v);
    if (!v->fortran_order || v->ndim < 2) {
        if (kind == 'f' && size == 4 && !swap) { memcpy(dst, v->data, (size_t)n * 4); return 0; }
        for (int64_t i = 0; i < n; i++) dst[i] = (float)load_elem(v->data + (size_t)i * size, kind, size, swap);
        return 0;
    }
    /* Fortran order: walk the file linearly (first index fastest) and scatter
     * into C order (last index fastest). */
    int64_t idx[VF_NPY_MAX_DIMS] = {0}, cstride[VF_NPY_MAX_DIMS];
    cstride[v->ndim - 1] = 1;
    for (int d = v->ndim - 2; d >= 0; d--) cstride[d] = cstride[d + 1] * v->shape[d + 1];
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int d = 0; d < v->ndim; d++) off += idx[d] * cstride[d];
        dst[off] = (float)load_elem(v->data + (size_t)i * size, kind, size, swap);
        for (int d = 0; d < v->ndim; d++) { if (++idx[d] < v->shape[d]) break; idx[d] = 0; }
    }
    return 0;
}

int vf_npy_read_f32(const char *path, float **data, int *ndim, int64_t *shape, vf_error *err) {
    *data = NULL;
    char *buf;
    size_t len;
    if (vf_read_file(path, &buf, &len, err) != 0) return -1;
    vf_npy_view v;
    if (vf_npy_parse(buf, len, path, &v, err) != 0) { free(buf); return -1; }
    int64_t n = vf_npy_numel(&v);
    float *out = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!out) { free(buf); return vf_fail(err, "%s: out of memory for %lld floats", path, (long long)n); }
    if (vf_npy_view_to_f32(&v, out, path, err) != 0) { free(out); free(buf); return -1; }
    *ndim = v.ndim;
    for (int i = 0; i < v.ndim; i++) shape[i] = v.shape[i];
    *data = out;
    free(buf);
    return 0;
}

int vf_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape, vf_error *err) {
    if (ndim < 0 || ndim > VF_NPY_MAX_DIMS) return vf_fail(err, "%s: cannot write a %d-dimensional npy", path, ndim);
    if (!host_little()) return vf_fail(err, "%s: npy writer supports little-endian hosts only", path);
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return vf_fail(err, "%s: negative dimension %lld", path, (long long)shape[i]);
        n += snprintf(dict + n, sizeof dict - n, "%lld%s", (long long)shape[i], ndim == 1 ? "," : i + 1 < ndim ? ", " : "");
        count *= (size_t)shape[i];
    }
    n += snprintf(dict + n, sizeof dict - n, "), }");
    /* Pad magic+len+dict+'\n' to a multiple of 64 as numpy does, so the data is aligned. */
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) & ~(size_t)63;
    unsigned char pre[10 + sizeof dict + 64];
    memcpy(pre, NPY_MAGIC, 6);
    pre[6] = 1; pre[7] = 0;
    size_t hlen = padded - 10;
    pre[8] = (unsigned char)(hlen & 0xff); pre[9] = (unsigned char)(hlen >> 8);
    memcpy(pre + 10, dict, (size_t)n);
    memset(pre + 10 + n, ' ', hlen - (size_t)n - 1);
    pre[padded - 1] = '\n';
    vf_atomic_file f;
    if (vf_atomic_open(&f, path, err) != 0) return -1;
    if (vf_atomic_write(&f, pre, padded, err) != 0 || vf_atomic_write(&f, data, count * sizeof(float), err) != 0) {
        vf_atomic_abort(&f);
        return -1;
    }
    return vf_atomic_commit(&f, err);
}
