/* test_data: the npz reader (libzip underneath), the CSV loader and the seeded orders on
 * hand-built input.  Archives are assembled here byte by byte from the zip
 * specification (APPNOTE 4.3/4.5: local headers, central directory, EOCD,
 * zip64 records) with zlib's raw deflate and crc32, so each damage case can
 * be made precisely: bad CRC, unknown method, encryption, out-of-range
 * directory, truncated deflate data, data longer than declared.  Every bad
 * case must return -1 with a message naming the file and (where there is
 * one) the member; nothing may crash. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "coop/trainer.h"
#include "data/dataset.h"
#include "data/shuffle.h"

static char tmpdir[256];

/* ---- building blocks ------------------------------------------------------ */
typedef struct buf { unsigned char *p; size_t n, cap; } buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u16(buf *b, unsigned v) { unsigned char x[2] = {v, v >> 8}; put(b, x, 2); }
static void u32(buf *b, uint32_t v) { unsigned char x[4] = {v, v >> 8, v >> 16, v >> 24}; put(b, x, 4); }
static void u64(buf *b, uint64_t v) { u32(b, (uint32_t)v); u32(b, (uint32_t)(v >> 32)); }

/* A .npy v1.0 file: header dict padded to a multiple of 64 with the newline last. */
static buf npy(const char *descr, const char *shape, const void *data, size_t nbytes) {
    buf b = {0};
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    put(&b, "\x93NUMPY\x01\x00", 8);
    u16(&b, (unsigned)(n + pad + 1));
    put(&b, dict, n);
    for (int i = 0; i < pad; i++) put(&b, " ", 1);
    put(&b, "\n", 1);
    put(&b, data, nbytes);
    return b;
}

static buf raw_deflate(const buf *in) {
    z_stream s = {0};
    assert_int_equal(deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    buf out = {0};
    out.cap = deflateBound(&s, in->n) + 16;
    out.p = malloc(out.cap);
    s.next_in = in->p;
    s.avail_in = (uInt)in->n;
    s.next_out = out.p;
    s.avail_out = (uInt)out.cap;
    assert_int_equal(deflate(&s, Z_FINISH), Z_STREAM_END);
    out.n = s.total_out;
    deflateEnd(&s);
    return out;
}

typedef struct member {
    const char *name;
    buf data;
    int method;           /* 0 stored, 8 deflated, other = declared but stored */
    int bad_crc, encrypted, zip64_central, size_delta, cut_tail;
} member;

/* Local headers + data, central directory, (zip64 EOCD + locator,) EOCD. */
static buf build_zip(member *m, int n, int zip64_eocd, int cd_offset_delta) {
    buf z = {0}, cd = {0};
    for (int i = 0; i < n; i++) {
        buf payload = m[i].method == 8 ? raw_deflate(&m[i].data) : (buf){0};
        const unsigned char *bytes = m[i].method == 8 ? payload.p : m[i].data.p;
        size_t comp = (m[i].method == 8 ? payload.n : m[i].data.n) - m[i].cut_tail;
        uint32_t crc = (uint32_t)crc32(0, m[i].data.p, (uInt)m[i].data.n) ^ (m[i].bad_crc ? 1u : 0u);
        uint64_t size = m[i].data.n + m[i].size_delta;
        uint32_t offset = (uint32_t)z.n;
        size_t name_len = strlen(m[i].name);
        /* local header, with numpy-style forced zip64 sizes */
        u32(&z, 0x04034b50); u16(&z, 45); u16(&z, m[i].encrypted); u16(&z, m[i].method); u16(&z, 0); u16(&z, 0);
        u32(&z, crc); u32(&z, 0xFFFFFFFFu); u32(&z, 0xFFFFFFFFu); u16(&z, (unsigned)name_len); u16(&z, 20);
        put(&z, m[i].name, name_len);
        u16(&z, 1); u16(&z, 16); u64(&z, size); u64(&z, comp);
        put(&z, bytes, comp);
        /* central entry */
        int z64 = m[i].zip64_central;
        u32(&cd, 0x02014b50); u16(&cd, 45); u16(&cd, 45); u16(&cd, m[i].encrypted); u16(&cd, m[i].method);
        u16(&cd, 0); u16(&cd, 0); u32(&cd, crc);
        u32(&cd, z64 ? 0xFFFFFFFFu : (uint32_t)comp); u32(&cd, z64 ? 0xFFFFFFFFu : (uint32_t)size);
        u16(&cd, (unsigned)name_len); u16(&cd, z64 ? 28 : 0); u16(&cd, 0); u16(&cd, 0); u16(&cd, 0); u32(&cd, 0);
        u32(&cd, z64 ? 0xFFFFFFFFu : offset);
        put(&cd, m[i].name, name_len);
        if (z64) { u16(&cd, 1); u16(&cd, 24); u64(&cd, size); u64(&cd, comp); u64(&cd, offset); }
        free(payload.p);
    }
    uint64_t cd_off = z.n + cd_offset_delta;
    put(&z, cd.p, cd.n);
    if (zip64_eocd) {
        uint64_t e64 = z.n;
        u32(&z, 0x06064b50); u64(&z, 44); u16(&z, 45); u16(&z, 45); u32(&z, 0); u32(&z, 0);
        u64(&z, (uint64_t)n); u64(&z, (uint64_t)n); u64(&z, cd.n); u64(&z, cd_off);
        u32(&z, 0x07064b50); u32(&z, 0); u64(&z, e64); u32(&z, 1);
    }
    u32(&z, 0x06054b50); u16(&z, 0); u16(&z, 0);
    u16(&z, zip64_eocd ? 0xFFFF : (unsigned)n); u16(&z, zip64_eocd ? 0xFFFF : (unsigned)n);
    u32(&z, zip64_eocd ? 0xFFFFFFFFu : (uint32_t)cd.n); u32(&z, zip64_eocd ? 0xFFFFFFFFu : (uint32_t)cd_off); u16(&z, 0);
    free(cd.p);
    return z;
}

static void write_file(const char *path, const buf *b) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b->p, 1, b->n, f), b->n);
    fclose(f);
}

/* A complete MedMNIST-like set of six members: 5/2/3 images of 4x4 px. */
enum { S = 4 };
static const int counts[3] = {5, 2, 3};
static unsigned char pixels[3][5 * S * S * 3];
static unsigned char labels[3][5];

static int medmnist_members(member *m, int method) {
    static const char *const split[3] = {"train", "val", "test"};
    static char names[6][32];
    for (int s = 0; s < 3; s++) {
        char shape[64];
        for (int i = 0; i < counts[s] * S * S * 3; i++) pixels[s][i] = (unsigned char)(i * 31 + s * 7);
        for (int i = 0; i < counts[s]; i++) labels[s][i] = (unsigned char)((i * 3 + s) % 7);
        snprintf(names[2 * s], 32, "%s_images.npy", split[s]);
        snprintf(shape, sizeof shape, "(%d, %d, %d, 3)", counts[s], S, S);
        m[2 * s] = (member){.name = names[2 * s], .data = npy("|u1", shape, pixels[s], (size_t)counts[s] * S * S * 3), .method = method};
        snprintf(names[2 * s + 1], 32, "%s_labels.npy", split[s]);
        snprintf(shape, sizeof shape, "(%d, 1)", counts[s]);
        m[2 * s + 1] = (member){.name = names[2 * s + 1], .data = npy("|u1", shape, labels[s], (size_t)counts[s]), .method = method};
    }
    return 6;
}

static void free_members(member *m, int n) { for (int i = 0; i < n; i++) free(m[i].data.p); }

static int open_npz(const char *name, member *m, int n, int zip64_eocd, int cd_delta, vf_dataset *ds, vf_error *err) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    buf z = build_zip(m, n, zip64_eocd, cd_delta);
    write_file(path, &z);
    free(z.p);
    return vf_dataset_open(ds, path, NULL, err);
}

static void check_contents(const vf_dataset *ds) {
    for (int s = 0; s < 3; s++) {
        assert_int_equal(ds->split[s].n, counts[s]);
        assert_int_equal(ds->split[s].h, S);
        assert_memory_equal(ds->split[s].pixels, pixels[s], (size_t)counts[s] * S * S * 3);
        for (int i = 0; i < counts[s]; i++) assert_int_equal(ds->split[s].labels[i], labels[s][i]);
    }
}

/* ---- npz: good archives ------------------------------------------------------ */
static void test_npz_stored_deflated_zip64(void **state) {
    (void)state;
    for (int variant = 0; variant < 4; variant++) {
        member m[6];
        int n = medmnist_members(m, variant & 1 ? 8 : 0);
        for (int i = 0; i < n; i++) m[i].zip64_central = variant >= 2;
        vf_dataset ds;
        vf_error err = {{0}};
        int rc = open_npz("good.npz", m, n, variant >= 2, 0, &ds, &err);
        if (rc) print_error("variant %d: %s\n", variant, err.msg);
        assert_int_equal(rc, 0);
        check_contents(&ds);
        vf_dataset_close(&ds);
        free_members(m, n);
    }
}

/* ---- npz: damaged archives ---------------------------------------------------- */
static void expect_fail(const char *file, member *m, int n, int zip64_eocd, int cd_delta, const char *needle) {
    vf_dataset ds;
    vf_error err = {{0}};
    assert_int_equal(open_npz(file, m, n, zip64_eocd, cd_delta, &ds, &err), -1);
    print_message("%s\n", err.msg);
    assert_non_null(strstr(err.msg, file));
    assert_non_null(strstr(err.msg, needle));
}

static void test_npz_damage(void **state) {
    (void)state;
    struct { const char *file, *needle; int member, method, what; } cases[] = {
        {"crc.npz", "val_labels.npy' fails its CRC-32", 3, 0, 0},
        {"method.npz", "compression method 12", 0, 12, 1},
        {"encrypted.npz", "is encrypted", 2, 0, 2},
        {"cut.npz", "test_images.npy' is truncated: its data ends after 264 of the 272 bytes", 4, 8, 3},
        {"longer.npz", "train_labels.npy' inflates to more than", 1, 8, 4},
        {"shorter.npz", "train_images.npy' inflates to 368 bytes, the directory says 371", 0, 8, 5},
        {"bomb.npz", "test_labels.npy' declares 1073741955 bytes, more than", 5, 8, 6},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        member m[6];
        int n = medmnist_members(m, 0);
        member *x = &m[cases[c].member];
        x->method = cases[c].method;
        if (cases[c].what == 0) x->bad_crc = 1;
        if (cases[c].what == 2) x->encrypted = 1;
        if (cases[c].what == 3) x->cut_tail = 9;        /* deflate data ends early */
        if (cases[c].what == 4) x->size_delta = -3;     /* inflates past the declared size */
        if (cases[c].what == 5) x->size_delta = +3;     /* inflates short of the declared size */
        if (cases[c].what == 6) x->size_delta = 1 << 30;   /* a declared size no deflate stream this short can reach */
        expect_fail(cases[c].file, m, n, 0, 0, cases[c].needle);
        free_members(m, n);
    }
    member m[6];
    int n = medmnist_members(m, 0);
    expect_fail("cdir.npz", m, n, 0, 1 << 20, "directory is inconsistent");
    expect_fail("cdir64.npz", m, n, 1, 1 << 20, "directory is inconsistent");
    free_members(m, n);
}

/* ---- CSV -------------------------------------------------------------------- */
static void touch(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);
}

static int open_csv(const char *name, const char *text, vf_dataset *ds, vf_error *err) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    buf b = {.p = (unsigned char *)text, .n = strlen(text)};
    write_file(path, &b);
    return vf_dataset_open(ds, path, NULL, err);
}

static void test_csv_quoting_crlf_bom(void **state) {
    (void)state;
    touch("a,b.png");
    touch("say \"hi\".jpg");
    touch("plain.jpeg");
    vf_dataset ds;
    vf_error err = {{0}};
    const char *text = "\xEF\xBB\xBFimage_id,\"dx\",split\r\n"
                       "\"a,b\",mel,train\r\n"
                       "\"say \"\"hi\"\"\", NV ,test\r\n"
                       "plain,\"vasc\",valid\r\n\r\n";
    int rc = open_csv("quoted.csv", text, &ds, &err);
    if (rc) print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(ds.split[VF_SPLIT_TRAIN].n, 1);
    assert_string_equal(ds.split[VF_SPLIT_TRAIN].ids[0], "a,b");
    assert_int_equal(ds.split[VF_SPLIT_TRAIN].labels[0], 4);
    assert_string_equal(ds.split[VF_SPLIT_TEST].ids[0], "say \"hi\"");
    assert_int_equal(ds.split[VF_SPLIT_TEST].labels[0], 5);
    assert_int_equal(ds.split[VF_SPLIT_VAL].labels[0], 6);
    vf_dataset_close(&ds);

    assert_int_equal(open_csv("open.csv", "image_id,dx\n\"plain,nv\n", &ds, &err), -1);
    assert_non_null(strstr(err.msg, "open.csv line 2: unterminated quoted field"));
    assert_int_equal(open_csv("split.csv", "image_id,dx,split\nplain,nv,holdout\n", &ds, &err), -1);
    assert_non_null(strstr(err.msg, "split.csv line 2: split 'holdout'"));
    assert_int_equal(open_csv("path.csv", "image_id,dx\n../etc/passwd,nv\n", &ds, &err), -1);
    assert_non_null(strstr(err.msg, "path.csv line 2: image_id '../etc/passwd' must be a plain file name"));
    assert_int_equal(open_csv("empty.csv", "image_id,dx\n", &ds, &err), -1);
    assert_non_null(strstr(err.msg, "empty.csv: no rows"));
}

/* Excel's "CSV (Macintosh)" ends records in a bare CR.  The old hand-written
 * loader sized its row array by counting LFs (one row here) and wrote every
 * row past it; all 300 rows must come back. */
static void test_csv_bare_cr_records(void **state) {
    (void)state;
    touch("plain.jpeg");
    enum { N = 300 };
    static const char *const dx[3] = {"mel", "nv", "bcc"};
    static const char *const split[3] = {"train", "val", "test"};
    buf b = {0};
    put(&b, "image_id,dx,split\r", 18);
    for (int i = 0; i < N; i++) {
        char line[64];
        int n = snprintf(line, sizeof line, "plain,%s,%s\r", dx[i % 3], split[i % 3]);
        put(&b, line, (size_t)n);
    }
    put(&b, "", 1);   /* NUL for open_csv's strlen, not part of the file */
    vf_dataset ds;
    vf_error err = {{0}};
    int rc = open_csv("mac.csv", (const char *)b.p, &ds, &err);
    free(b.p);
    if (rc) print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    for (int s = 0; s < 3; s++) {
        assert_int_equal(ds.split[s].n, N / 3);
        for (int i = 0; i < N / 3; i++) assert_int_equal(ds.split[s].labels[i], s == 0 ? 4 : s == 1 ? 5 : 1);
    }
    vf_dataset_close(&ds);

    /* A bad record after bare-CR lines is reported by its physical line. */
    assert_int_equal(open_csv("mac_bad.csv", "image_id,dx\rplain,nv\r\rplain,mole\r", &ds, &err), -1);
    assert_non_null(strstr(err.msg, "mac_bad.csv line 4: dx 'mole'"));
}

/* Quoted fields may hold commas, quotes and CRLF line breaks; a record that
 * spans lines shifts the physical line numbers of those after it, and errors
 * must name the physical line (an editor's line), not the record count. */
static void test_csv_multiline_fields_and_line_numbers(void **state) {
    (void)state;
    touch("a,b.png");
    touch("plain.jpeg");
    vf_dataset ds;
    vf_error err = {{0}};
    const char *good = "image_id,dx,note\r\n"
                       "plain,nv,\"first line\r\nsecond, with a comma and \"\"quotes\"\"\"\r\n"
                       "\"a,b\",mel,\"x\r\ny\r\nz\"\r\n";
    int rc = open_csv("notes.csv", good, &ds, &err);
    if (rc) print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    int total = 0;
    for (int s = 0; s < 3; s++) total += ds.split[s].n;
    assert_int_equal(total, 2);
    int found_ab = 0;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < ds.split[s].n; i++)
            if (!strcmp(ds.split[s].ids[i], "a,b")) { found_ab = 1; assert_int_equal(ds.split[s].labels[i], 4); }
    assert_true(found_ab);
    vf_dataset_close(&ds);

    const char *bad = "image_id,dx,note\r\n"
                      "plain,nv,\"first line\r\nsecond, with a comma\"\r\n"
                      "plain,melanoma?,x\r\n";   /* record 3, physical line 4 */
    assert_int_equal(open_csv("notes_bad.csv", bad, &ds, &err), -1);
    print_message("%s\n", err.msg);
    assert_non_null(strstr(err.msg, "notes_bad.csv line 4: dx 'melanoma?'"));

    /* An unterminated quote is reported at the line where its record starts. */
    assert_int_equal(open_csv("open_cr.csv", "image_id,dx\rplain,nv\rplain,\"nv\rmore\r", &ds, &err), -1);
    assert_non_null(strstr(err.msg, "open_cr.csv line 3: unterminated quoted field"));
    /* A stray quote inside an unquoted field is refused, not read as part of a name. */
    assert_int_equal(open_csv("stray.csv", "image_id,dx\nplain,n\"v\n", &ds, &err), -1);
    assert_non_null(strstr(err.msg, "stray.csv line 2: malformed quoting"));
}

/* The last record may lack a line ending; an empty file and a header with no
 * rows are refused by name, whatever ends the header. */
static void test_csv_ends_empty_and_header_only(void **state) {
    (void)state;
    touch("plain.jpeg");
    vf_dataset ds;
    vf_error err = {{0}};
    int rc = open_csv("no_eol.csv", "image_id,dx,split\nplain,nv,train\n  \nplain,mel,test", &ds, &err);
    if (rc) print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(ds.split[VF_SPLIT_TRAIN].n, 1);
    assert_int_equal(ds.split[VF_SPLIT_TEST].n, 1);
    assert_int_equal(ds.split[VF_SPLIT_TEST].labels[0], 4);
    vf_dataset_close(&ds);

    assert_int_equal(open_csv("zero.csv", "", &ds, &err), -1);
    print_message("%s\n", err.msg);
    assert_non_null(strstr(err.msg, "zero.csv: empty file"));
    static const char *const headers[] = {"image_id,dx", "image_id,dx\r", "image_id,dx\r\n", "image_id,dx\n\r\n"};
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        assert_int_equal(open_csv("header_only.csv", headers[i], &ds, &err), -1);
        assert_non_null(strstr(err.msg, "header_only.csv: no rows after the header"));
    }
}

/* ---- seeded orders and batches ---------------------------------------------- */
static void test_epoch_orders_and_batches(void **state) {
    (void)state;
    enum { N = 103 };
    int a[N], b[N], seen[N];
    vf_epoch_order(7, 0, a, N);
    vf_epoch_order(7, 0, b, N);
    assert_memory_equal(a, b, sizeof a);            /* same seed and epoch: same order */
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N; i++) seen[a[i]]++;
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);   /* a permutation */
    vf_epoch_order(7, 1, b, N);
    assert_memory_not_equal(a, b, sizeof a);        /* a new epoch reshuffles */
    vf_epoch_order(8, 0, b, N);
    assert_memory_not_equal(a, b, sizeof a);

    vf_batcher bt;
    vf_error err;
    assert_int_equal(vf_batcher_init(&bt, N, 10, 7, &err), 0);
    assert_int_equal(bt.steps_per_epoch, 10);        /* 103 / 10: the incomplete batch is dropped */
    for (int e = 0; e < 2; e++) {
        vf_batcher_start_epoch(&bt, e);
        vf_epoch_order(7, e, a, N);
        memset(seen, 0, sizeof seen);
        const int *idx;
        int k, steps = 0, pos = 0;
        while ((k = vf_batcher_next(&bt, &idx)) > 0) {
            assert_int_equal(k, 10);
            for (int i = 0; i < k; i++) { assert_int_equal(idx[i], a[pos++]); seen[idx[i]]++; }
            steps++;
        }
        assert_int_equal(steps, 10);
        for (int i = 0; i < N; i++) assert_true(seen[i] <= 1);
    }
    vf_batcher_free(&bt);
    assert_int_equal(vf_batcher_init(&bt, 5, 32, 1, &err), 0);  /* fewer images than a batch: one step of all */
    const int *idx;
    assert_int_equal(vf_batcher_next(&bt, &idx), 5);
    assert_int_equal(vf_batcher_next(&bt, &idx), 0);
    vf_batcher_free(&bt);
    assert_int_equal(vf_batcher_init(&bt, 0, 32, 1, &err), -1);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vf_test_data.XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_npz_stored_deflated_zip64),
        cmocka_unit_test(test_npz_damage),
        cmocka_unit_test(test_csv_quoting_crlf_bom),
        cmocka_unit_test(test_csv_bare_cr_records),
        cmocka_unit_test(test_csv_multiline_fields_and_line_numbers),
        cmocka_unit_test(test_csv_ends_empty_and_header_only),
        cmocka_unit_test(test_epoch_orders_and_batches),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
