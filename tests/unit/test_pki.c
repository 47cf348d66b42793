/* test_pki: identities read from certificates, the revocation-list loader and
 * writer, and the CA directory, at the C level.
 *
 * The certificates the identity tests read are made with mbedTLS's own
 * x509write_crt (not with common/pki's encoder), with subjects the project
 * would never issue: missing OU, unknown role, CN too long, repeated CN.  The
 * revocation tests check the project's CRL writer against mbedTLS's parser
 * and its chain verifier (BADCERT_REVOKED); tests/python/test_pki.py checks
 * the same files against openssl and Python cryptography. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "pki/mbedtls_compat.h"
#include "pki/pki.h"
#include "pki/pki_ca.h"
#include "pki/pki_crl.h"
#include "pki/pki_issue.h"
#include "util/fileio.h"

static char g_dir[256];
static mbedtls_entropy_context g_entropy;
static mbedtls_ctr_drbg_context g_drbg;

static int setup_all(void **state) {
    snprintf(g_dir, sizeof g_dir, "/tmp/vf_test_pki.XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    mbedtls_entropy_init(&g_entropy);
    mbedtls_ctr_drbg_init(&g_drbg);
    return mbedtls_ctr_drbg_seed(&g_drbg, mbedtls_entropy_func, &g_entropy, (const unsigned char *)"test_pki", 8);
}

static int teardown_all(void **state) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    int rc = system(cmd);
    mbedtls_ctr_drbg_free(&g_drbg);
    mbedtls_entropy_free(&g_entropy);
    return rc == 0 ? 0 : -1;
}

static void path_in(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", g_dir, name); }

static void write_text(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* A self-signed certificate written by mbedTLS's x509write_crt with the given
 * subject, serial (hex) and not-after ("YYYYMMDDhhmmss"), parsed into crt.
 * extra_oid/extra_value add one more attribute to the subject even when it
 * repeats one (the string parser would merge repeats). */
static void make_crt_extra(const char *subject, const char *extra_oid, const char *extra_value, const char *serial_hex,
                           const char *not_after, mbedtls_x509_crt *crt) {
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    assert_int_equal(mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key), mbedtls_ctr_drbg_random, &g_drbg), 0);
    mbedtls_x509write_cert w;
    mbedtls_x509write_crt_init(&w);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &key);
    mbedtls_x509write_crt_set_issuer_key(&w, &key);
    assert_int_equal(mbedtls_x509write_crt_set_subject_name(&w, subject), 0);
    assert_int_equal(mbedtls_x509write_crt_set_issuer_name(&w, subject), 0);
    if (extra_oid) {
        mbedtls_asn1_named_data *n = calloc(1, sizeof *n);
        assert_non_null(n);
        n->oid.tag = MBEDTLS_ASN1_OID;
        n->oid.len = 3;
        n->oid.p = malloc(3);
        memcpy(n->oid.p, extra_oid, 3);
        n->val.tag = MBEDTLS_ASN1_UTF8_STRING;
        n->val.len = strlen(extra_value);
        n->val.p = malloc(n->val.len);
        memcpy(n->val.p, extra_value, n->val.len);
        n->next = w.VF_MBEDTLS_PRIV(subject);
        w.VF_MBEDTLS_PRIV(subject) = n;
    }
    assert_int_equal(vf_mbedtls_x509write_crt_set_serial_hex(&w, serial_hex), 0);
    assert_int_equal(mbedtls_x509write_crt_set_validity(&w, "20250101000000", not_after), 0);
    unsigned char pem[4096];
    assert_int_equal(mbedtls_x509write_crt_pem(&w, pem, sizeof pem, mbedtls_ctr_drbg_random, &g_drbg), 0);
    mbedtls_x509_crt_init(crt);
    assert_int_equal(mbedtls_x509_crt_parse(crt, pem, strlen((char *)pem) + 1), 0);
    mbedtls_x509write_crt_free(&w);
    mbedtls_pk_free(&key);
}

static void make_crt(const char *subject, const char *serial_hex, const char *not_after, mbedtls_x509_crt *crt) {
    make_crt_extra(subject, NULL, NULL, serial_hex, not_after, crt);
}

/* Identity of a subject, or the error message. */
static int identity_of(const char *subject, vf_peer_identity *id, vf_error *err) {
    mbedtls_x509_crt crt;
    make_crt(subject, "1234", "20300101000000", &crt);
    memset(id, 0, sizeof *id);
    int rc = vf_pki_identity_from_crt(&crt, id, err);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

static void test_identity_of_each_role(void **state) {
    static const char *roles[] = {"aggregator", "image-party", "knowledge-party", "admin"};
    static const vf_role want[] = {VF_ROLE_AGGREGATOR, VF_ROLE_IMAGE_PARTY, VF_ROLE_KNOWLEDGE_PARTY, VF_ROLE_ADMIN};
    for (int i = 0; i < 4; i++) {
        char subject[200];
        snprintf(subject, sizeof subject, "CN=site-%d.example_x, OU=%s, O=vflclip federation", i, roles[i]);
        mbedtls_x509_crt crt;
        /* The top bit set: DER prepends a zero byte, which the hex must drop. */
        make_crt(subject, "A1B2C3D4E5F60718", "20300101000000", &crt);
        vf_peer_identity id;
        vf_error err = {{0}};
        if (vf_pki_identity_from_crt(&crt, &id, &err) != 0) fail_msg("%s: %s", subject, err.msg);
        assert_int_equal(id.role, want[i]);
        char name[64];
        snprintf(name, sizeof name, "site-%d.example_x", i);
        assert_string_equal(id.name, name);
        assert_string_equal(id.serial_hex, "A1B2C3D4E5F60718");
        assert_int_equal(id.not_after_unix, 1893456000LL); /* 2030-01-01T00:00:00Z */
        assert_string_equal(vf_role_name(id.role), roles[i]);
        vf_role parsed;
        assert_int_equal(vf_role_parse(roles[i], &parsed), 0);
        assert_int_equal(parsed, want[i]);
        mbedtls_x509_crt_free(&crt);
    }
    vf_role r;
    assert_int_equal(vf_role_parse("Admin", &r), -1);
    assert_int_equal(vf_role_parse("none", &r), -1);
    assert_int_equal(vf_role_parse(NULL, &r), -1);
    assert_string_equal(vf_role_name((vf_role)42), "none");
}

static void expect_identity_error(const char *subject, const char *needle) {
    vf_peer_identity id;
    vf_error err = {{0}};
    assert_int_equal(identity_of(subject, &id, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("subject '%s': error '%s' lacks '%s'", subject, err.msg, needle);
    assert_int_equal(id.role, VF_ROLE_NONE);
    printf("  %-60.60s -> %s\n", subject, err.msg);
}

/* "CN=a, OU=admin, O=vflclip federation" plus a second CN or OU. */
static void expect_repeat_error(const char *oid, const char *value, const char *needle) {
    mbedtls_x509_crt crt;
    make_crt_extra("CN=a, OU=admin, O=vflclip federation", oid, value, "1234", "20300101000000", &crt);
    char dn[256];
    mbedtls_x509_dn_gets(dn, sizeof dn, &crt.subject);
    vf_peer_identity id = {0};
    vf_error err = {{0}};
    assert_int_equal(vf_pki_identity_from_crt(&crt, &id, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("subject '%s': error '%s' lacks '%s'", dn, err.msg, needle);
    printf("  %-60.60s -> %s\n", dn, err.msg);
    mbedtls_x509_crt_free(&crt);
}

static void test_identity_rejects_bad_subjects(void **state) {
    expect_identity_error("CN=hospital-a, O=vflclip federation", "no OU");
    expect_identity_error("OU=admin, O=vflclip federation", "no CN");
    expect_identity_error("CN=hospital-a, OU=admin", "no O");
    expect_identity_error("CN=hospital-a, OU=doctor, O=vflclip federation", "'doctor' is not a known role");
    expect_identity_error("CN=hospital-a, OU=Admin, O=vflclip federation", "not a known role");
    expect_identity_error("CN=hospital-a, OU=admin, O=another federation", "expected 'vflclip federation'");
    expect_repeat_error(MBEDTLS_OID_AT_CN, "b", "more than one CN");
    expect_repeat_error(MBEDTLS_OID_AT_ORG_UNIT, "aggregator", "more than one OU");
    expect_identity_error("CN=a b, OU=admin, O=vflclip federation", "byte 0x20");
    expect_identity_error("CN=a/../b, OU=admin, O=vflclip federation", "byte 0x2f");
}

static void test_identity_cn_length_limit(void **state) {
    char subject[400], cn[200];
    memset(cn, 'a', 127);
    cn[127] = 0;
    snprintf(subject, sizeof subject, "CN=%s, OU=admin, O=vflclip federation", cn);
    vf_peer_identity id;
    vf_error err = {{0}};
    if (identity_of(subject, &id, &err) != 0) fail_msg("127-byte CN: %s", err.msg);
    assert_string_equal(id.name, cn);
    memset(cn, 'a', 128);
    cn[128] = 0;
    snprintf(subject, sizeof subject, "CN=%s, OU=admin, O=vflclip federation", cn);
    expect_identity_error(subject, "128 bytes long, the limit is 127");
}

static void test_garbage_certificates(void **state) {
    vf_error err = {{0}};
    vf_peer_identity id;
    mbedtls_x509_crt empty;
    mbedtls_x509_crt_init(&empty);
    assert_int_equal(vf_pki_identity_from_crt(&empty, &id, &err), -1);
    assert_non_null(strstr(err.msg, "no certificate"));
    assert_int_equal(vf_pki_identity_from_crt(NULL, &id, &err), -1);

    static const struct { const char *name, *text; } bad[] = {
        {"garbage.pem", "-----BEGIN CERTIFICATE-----\nThis is !! not base64 at all\n-----END CERTIFICATE-----\n"},
        {"empty-body.pem", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"},
        {"truncated.pem", "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIQ\n-----END CERTIFICATE-----\n"},
        {"random.der", "\x30\x82\xff\xff\x01\x02\x03"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[300];
        path_in(path, sizeof path, bad[i].name);
        write_text(path, bad[i].text, strlen(bad[i].text));
        mbedtls_x509_crt crt;
        mbedtls_x509_crt_init(&crt);
        assert_int_equal(vf_pki_load_crt(path, &crt, &err), -1);
        if (!strstr(err.msg, path)) fail_msg("error '%s' does not name %s", err.msg, path);
        printf("  %-20s -> %s\n", bad[i].name, err.msg);
        mbedtls_x509_crt_free(&crt);
    }
    char missing[300];
    path_in(missing, sizeof missing, "no-such.pem");
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    assert_int_equal(vf_pki_load_crt(missing, &crt, &err), -1);
    assert_non_null(strstr(err.msg, "No such file"));
    mbedtls_x509_crt_free(&crt);
}

static void test_crl_loader_missing_and_corrupt(void **state) {
    mbedtls_x509_crl crl;
    vf_error err = {{0}};
    char path[300];
    /* Absent lists revoke nothing. */
    assert_int_equal(vf_pki_load_crl(NULL, &crl, &err), 0);
    assert_int_equal(crl.version, 0);
    mbedtls_x509_crl_free(&crl);
    assert_int_equal(vf_pki_load_crl("", &crl, &err), 0);
    mbedtls_x509_crl_free(&crl);
    path_in(path, sizeof path, "absent-crl.pem");
    assert_int_equal(vf_pki_load_crl(path, &crl, &err), 0);
    assert_int_equal(crl.version, 0);
    mbedtls_x509_crl_free(&crl);

    static const struct { const char *name, *text, *needle; } bad[] = {
        {"empty.crl", "", "empty file"},
        {"garbage.crl", "\x30\x03\x02\x01\x05 these are not the bytes of a CRL", "not a valid DER revocation list"},
        {"garbage-pem.crl", "-----BEGIN X509 CRL-----\n%%%%\n-----END X509 CRL-----\n", "not a valid PEM revocation list"},
        {"text.crl", "hello\n", "not a valid DER revocation list"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        path_in(path, sizeof path, bad[i].name);
        write_text(path, bad[i].text, strlen(bad[i].text));
        assert_int_equal(vf_pki_load_crl(path, &crl, &err), -1);
        if (!strstr(err.msg, path) || !strstr(err.msg, bad[i].needle)) fail_msg("error '%s' lacks %s or '%s'", err.msg, path, bad[i].needle);
        assert_int_equal(crl.version, 0);
        printf("  %-16s -> %s\n", bad[i].name, err.msg);
        mbedtls_x509_crl_free(&crl);
    }
    /* A directory is not a list either. */
    assert_int_equal(vf_pki_load_crl(g_dir, &crl, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    mbedtls_x509_crl_free(&crl);
}

/* A CA directory made by the code under test, shared by the tests below. */
static void open_test_ca(const char *name, vf_pki_ca *ca, vf_pki_rng *rng) {
    char dir[300];
    vf_error err = {{0}};
    path_in(dir, sizeof dir, name);
    assert_int_equal(vf_pki_rng_init(rng, &err), 0);
    struct stat st;
    if (stat(dir, &st) != 0 && vf_pki_ca_create(dir, 30, 10, rng, &err) != 0) fail_msg("%s", err.msg);
    if (vf_pki_ca_open(ca, dir, &err) != 0) fail_msg("%s", err.msg);
}

static void issue_leaf(vf_pki_ca *ca, vf_pki_rng *rng, vf_role role, const char *name, mbedtls_x509_crt *crt) {
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    vf_error err = {{0}};
    assert_int_equal(vf_pki_gen_key(&key, rng, &err), 0);
    long long now = (long long)time(NULL);
    vf_pki_subject s = {.role = role, .name = name, .not_before_unix = now - 60, .not_after_unix = now + 86400};
    static char pem[VF_PKI_PEM_MAX];
    if (vf_pki_issue_leaf(&s, &key, &ca->crt, &ca->key, rng, pem, sizeof pem, &err) != 0) fail_msg("%s", err.msg);
    mbedtls_x509_crt_init(crt);
    assert_int_equal(mbedtls_x509_crt_parse(crt, (unsigned char *)pem, strlen(pem) + 1), 0);
    mbedtls_pk_free(&key);
}

static void test_revocation_list_round_trip_and_verify(void **state) {
    vf_pki_ca ca;
    vf_pki_rng rng;
    vf_error err = {{0}};
    open_test_ca("ca-a", &ca, &rng);
    mbedtls_x509_crt revoked, kept;
    issue_leaf(&ca, &rng, VF_ROLE_IMAGE_PARTY, "hospital-a", &revoked);
    issue_leaf(&ca, &rng, VF_ROLE_IMAGE_PARTY, "hospital-b", &kept);

    int added = 0;
    if (vf_pki_ca_update_crl(&ca, revoked.serial.p, revoked.serial.len, 10, &rng, &added, NULL, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(added, 1);
    if (vf_pki_ca_update_crl(&ca, revoked.serial.p, revoked.serial.len, 10, &rng, &added, NULL, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(added, 0);

    char path[300];
    snprintf(path, sizeof path, "%s/crl.pem", ca.dir);
    mbedtls_x509_crl crl;
    if (vf_pki_load_crl(path, &crl, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(crl.version, 2);
    if (vf_pki_check_crl(&crl, &ca.crt, path, &err) != 0) fail_msg("%s", err.msg);

    vf_pki_revoked *entries;
    int n;
    unsigned long long number;
    assert_int_equal(vf_pki_crl_entries(&crl, &entries, &n, &number, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(number, 3); /* 1 at creation, +1 per update */
    assert_int_equal(entries[0].serial_len, revoked.serial.len);
    assert_memory_equal(entries[0].serial, revoked.serial.p, revoked.serial.len);
    free(entries);

    /* mbedTLS's own chain verification (what the TLS layer runs) honours it. */
    uint32_t flags = 0;
    assert_int_not_equal(mbedtls_x509_crt_verify(&revoked, &ca.crt, &crl, NULL, &flags, NULL, NULL), 0);
    assert_true(flags & MBEDTLS_X509_BADCERT_REVOKED);
    flags = 0;
    assert_int_equal(mbedtls_x509_crt_verify(&kept, &ca.crt, &crl, NULL, &flags, NULL, NULL), 0);
    assert_int_equal(flags, 0);

    mbedtls_x509_crl_free(&crl);
    mbedtls_x509_crt_free(&revoked);
    mbedtls_x509_crt_free(&kept);
    vf_pki_ca_close(&ca);
    vf_pki_rng_free(&rng);
}

static void test_crl_from_another_ca_or_expired_is_refused(void **state) {
    vf_pki_ca a, b;
    vf_pki_rng rng_a, rng_b;
    vf_error err = {{0}};
    open_test_ca("ca-a", &a, &rng_a);
    open_test_ca("ca-b", &b, &rng_b);
    long long now = (long long)time(NULL);
    char *pem = NULL, path[300];
    mbedtls_x509_crl crl;

    /* Signed by B: A's check must say so. */
    assert_int_equal(vf_pki_crl_pem(&b.crt, &b.key, NULL, 0, 1, now, now + 86400, &rng_b.drbg, &pem, &err), 0);
    path_in(path, sizeof path, "foreign.crl");
    write_text(path, pem, strlen(pem));
    free(pem);
    assert_int_equal(vf_pki_load_crl(path, &crl, &err), 0);
    assert_int_equal(vf_pki_check_crl(&crl, &a.crt, path, &err), -1);
    printf("  foreign list -> %s\n", err.msg);
    assert_non_null(strstr(err.msg, "different CA"));
    mbedtls_x509_crl_free(&crl);

    /* B's subject but A's signature: the names match, the signature must not. */
    mbedtls_x509_crt forged_issuer;
    mbedtls_x509_crt_init(&forged_issuer);
    assert_int_equal(mbedtls_x509_crt_parse_der(&forged_issuer, b.crt.raw.p, b.crt.raw.len), 0);
    assert_int_equal(vf_pki_crl_pem(&forged_issuer, &a.key, NULL, 0, 1, now, now + 86400, &rng_a.drbg, &pem, &err), 0);
    write_text(path, pem, strlen(pem));
    free(pem);
    assert_int_equal(vf_pki_load_crl(path, &crl, &err), 0);
    assert_int_equal(vf_pki_check_crl(&crl, &b.crt, path, &err), -1);
    printf("  forged list  -> %s\n", err.msg);
    assert_non_null(strstr(err.msg, "signature does not verify"));
    mbedtls_x509_crl_free(&crl);
    mbedtls_x509_crt_free(&forged_issuer);

    /* Expired yesterday. */
    assert_int_equal(vf_pki_crl_pem(&a.crt, &a.key, NULL, 0, 1, now - 2 * 86400, now - 86400, &rng_a.drbg, &pem, &err), 0);
    path_in(path, sizeof path, "expired.crl");
    write_text(path, pem, strlen(pem));
    free(pem);
    assert_int_equal(vf_pki_load_crl(path, &crl, &err), 0);
    assert_int_equal(vf_pki_check_crl(&crl, &a.crt, path, &err), -1);
    printf("  expired list -> %s\n", err.msg);
    assert_non_null(strstr(err.msg, "expired"));
    mbedtls_x509_crl_free(&crl);
    assert_int_equal(vf_pki_crl_pem(&a.crt, &a.key, NULL, 0, 1, now, now - 1, &rng_a.drbg, &pem, &err), -1);

    vf_pki_ca_close(&a);
    vf_pki_ca_close(&b);
    vf_pki_rng_free(&rng_a);
    vf_pki_rng_free(&rng_b);
}

static void test_ca_open_refuses_bad_key_files(void **state) {
    vf_pki_ca a, b;
    vf_pki_rng rng;
    vf_error err = {{0}};
    open_test_ca("ca-a", &a, &rng);
    open_test_ca("ca-b", &b, &rng);
    char mixed[300], src[600], dst[600];
    path_in(mixed, sizeof mixed, "ca-mixed");
    assert_int_equal(mkdir(mixed, 0700), 0);
    char *data;
    size_t len;
    snprintf(src, sizeof src, "%s/ca.crt", a.dir);
    assert_int_equal(vf_read_file(src, &data, &len, &err), 0);
    snprintf(dst, sizeof dst, "%s/ca.crt", mixed);
    write_text(dst, data, len);
    free(data);
    snprintf(src, sizeof src, "%s/ca.key", b.dir);
    assert_int_equal(vf_read_file(src, &data, &len, &err), 0);
    snprintf(dst, sizeof dst, "%s/ca.key", mixed);
    assert_int_equal(vf_pki_write_file(dst, data, len, 0600, &err), 0);
    free(data);

    vf_pki_ca m;
    assert_int_equal(vf_pki_ca_open(&m, mixed, &err), -1);
    printf("  mismatched key -> %s\n", err.msg);
    assert_non_null(strstr(err.msg, "does not match"));
    vf_pki_ca_close(&m);

    assert_int_equal(chmod(dst, 0644), 0);
    assert_int_equal(vf_pki_ca_open(&m, mixed, &err), -1);
    printf("  readable key   -> %s\n", err.msg);
    assert_non_null(strstr(err.msg, "chmod 600"));
    vf_pki_ca_close(&m);

    /* A CA directory is never created over an existing one. */
    assert_int_equal(vf_pki_ca_create(a.dir, 30, 10, &rng, &err), -1);
    assert_non_null(strstr(err.msg, "already exists"));

    vf_pki_ca_close(&a);
    vf_pki_ca_close(&b);
    vf_pki_rng_free(&rng);
}

static void test_serial_from_hex(void **state) {
    unsigned char out[32];
    size_t n;
    vf_error err = {{0}};
    assert_int_equal(vf_pki_serial_from_hex("ABC", out, sizeof out, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "\x0a\xbc", 2);
    assert_int_equal(vf_pki_serial_from_hex("0x80", out, sizeof out, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "\x00\x80", 2);
    assert_int_equal(vf_pki_serial_from_hex("00:00:7f:01", out, sizeof out, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "\x7f\x01", 2);
    assert_int_equal(vf_pki_serial_from_hex("", out, sizeof out, &n, &err), -1);
    assert_int_equal(vf_pki_serial_from_hex("12g4", out, sizeof out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "not hexadecimal"));
    assert_int_equal(vf_pki_serial_from_hex("0102030405060708090a0b0c0d0e0f101112131415", out, sizeof out, &n, &err), -1);
}

/* The Name encoder the certificate writer uses (mbedTLS 3.x keeps its own
 * internal): a fixed encoding on every version, and on 2.x the very bytes of
 * mbedtls_x509_write_names for the subjects the project issues. */
static void test_name_encoding(void **state) {
    static const unsigned char cn_a_o_b[] = {0x30, 0x18, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01,
                                             0x61, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x01, 0x62};
    unsigned char buf[512], *p = buf + sizeof buf;
    mbedtls_asn1_named_data *names = NULL;
    assert_int_equal(mbedtls_x509_string_to_names(&names, "CN=a, O=b"), 0);
    assert_int_equal(vf_mbedtls_write_names(&p, buf, names), (int)sizeof cn_a_o_b);
    assert_memory_equal(p, cn_a_o_b, sizeof cn_a_o_b);
    mbedtls_asn1_free_named_data_list(&names);
    /* too small a buffer is an error, not an overrun */
    unsigned char small[10], *q = small + sizeof small;
    assert_int_equal(mbedtls_x509_string_to_names(&names, "CN=a, O=b"), 0);
    assert_true(vf_mbedtls_write_names(&q, small, names) < 0);
    mbedtls_asn1_free_named_data_list(&names);
#if MBEDTLS_VERSION_NUMBER < 0x03000000
    const vf_role roles[] = {VF_ROLE_AGGREGATOR, VF_ROLE_IMAGE_PARTY, VF_ROLE_KNOWLEDGE_PARTY, VF_ROLE_ADMIN};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        char subject[256];
        vf_error err = {{0}};
        assert_int_equal(vf_pki_subject_string(roles[i], "hospital-a.example", subject, sizeof subject, &err), 0);
        unsigned char ours[512], theirs[512], *po = ours + sizeof ours, *pt = theirs + sizeof theirs;
        assert_int_equal(mbedtls_x509_string_to_names(&names, subject), 0);
        int no = vf_mbedtls_write_names(&po, ours, names), nt = mbedtls_x509_write_names(&pt, theirs, names);
        mbedtls_asn1_free_named_data_list(&names);
        assert_true(no > 0);
        assert_int_equal(no, nt);
        assert_memory_equal(po, pt, (size_t)no);
    }
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_encoding),
        cmocka_unit_test(test_identity_of_each_role),
        cmocka_unit_test(test_identity_rejects_bad_subjects),
        cmocka_unit_test(test_identity_cn_length_limit),
        cmocka_unit_test(test_garbage_certificates),
        cmocka_unit_test(test_crl_loader_missing_and_corrupt),
        cmocka_unit_test(test_revocation_list_round_trip_and_verify),
        cmocka_unit_test(test_crl_from_another_ca_or_expired_is_refused),
        cmocka_unit_test(test_ca_open_refuses_bad_key_files),
        cmocka_unit_test(test_serial_from_hex),
    };
    return cmocka_run_group_tests_name("pki", tests, setup_all, teardown_all);
}
