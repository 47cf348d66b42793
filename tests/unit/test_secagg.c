/* test_secagg: the secure-aggregation primitives (common/secagg).
 *
 * The independent references are published test vectors, not this code's
 * own output: RFC 7748 section 6.1 (X25519: Alice's and Bob's keys and their
 * shared secret, reached through the pair seed's HKDF, itself checked on RFC
 * 5869 test case 1) and RFC 8439 section 2.4.2 (the ChaCha20 keystream).
 * The rest is behaviour: three image parties with real certificates (a CA
 * and leaf certificates made in a temporary directory) mask their vectors
 * and the masks cancel in the sum, exactly; each masked vector alone looks
 * nothing like its plain one; both ends of a pair agree on the seed; a new
 * attempt gives new masks; the key checks refuse a tampered signature, a
 * swapped key, a name that is not the certificate's, a knowledge party's
 * certificate and another CA's; fixed point rounds, refuses what it cannot
 * hold by index, and wraps negative numbers correctly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pki/mbedtls_compat.h"
#include "pki/pki.h"
#include "pki/pki_ca.h"
#include "pki/pki_issue.h"
#include "secagg/mask_key.h"
#include "secagg/masked_sum.h"
#include "util/sha256.h"

static void unhex(const char *hex, uint8_t *out, size_t n) {
    assert_int_equal(strlen(hex), 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

/* ---- the federation the behaviour tests use ------------------------------ */

#define N_IP 3
static const char *const g_names[N_IP] = {"hospital-a", "hospital-b", "hospital-c"};

typedef struct party {
    char key_path[400];
    unsigned char *der;
    size_t der_len;
} party;

static char g_dir[256];
static vf_pki_rng g_rng;
static vf_pki_ca g_ca, g_other_ca;
static party g_ip[N_IP];  /* image parties, signed by g_ca */
static party g_kp;        /* knowledge party "kp", signed by g_ca */
static party g_foreign;   /* image party "hospital-b", signed by g_other_ca */

static int make_party(vf_pki_ca *ca, vf_role role, const char *name, const char *file, party *p, vf_error *err) {
    mbedtls_pk_context key;
    mbedtls_x509_crt crt;
    mbedtls_pk_init(&key);
    mbedtls_x509_crt_init(&crt);
    static char pem[VF_PKI_PEM_MAX];
    long long now = (long long)time(NULL);
    vf_pki_subject s = {.role = role, .name = name, .not_before_unix = now - 60, .not_after_unix = now + 86400};
    snprintf(p->key_path, sizeof p->key_path, "%s/%s.key", g_dir, file);
    int rc = -1;
    if (vf_pki_gen_key(&key, &g_rng, err) != 0) goto out;
    if (vf_pki_key_pem(&key, pem, sizeof pem, err) != 0) goto out;
    if (vf_pki_write_file(p->key_path, pem, strlen(pem), 0600, err) != 0) goto out;
    if (vf_pki_issue_leaf(&s, &key, &ca->crt, &ca->key, &g_rng, pem, sizeof pem, err) != 0) goto out;
    if (mbedtls_x509_crt_parse(&crt, (unsigned char *)pem, strlen(pem) + 1) != 0) {
        vf_fail(err, "%s: issued certificate does not parse", name);
        goto out;
    }
    p->der = malloc(crt.raw.len);
    if (!p->der) goto out;
    memcpy(p->der, crt.raw.p, crt.raw.len);
    p->der_len = crt.raw.len;
    rc = 0;
out:
    mbedtls_x509_crt_free(&crt);
    mbedtls_pk_free(&key);
    return rc;
}

static int setup_all(void **state) {
    vf_error err = {{0}};
    char dir[300];
    snprintf(g_dir, sizeof g_dir, "/tmp/vf_test_secagg.XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    if (vf_mbedtls_init() != 0) return -1;
    if (vf_pki_rng_init(&g_rng, &err) != 0) goto fail;
    snprintf(dir, sizeof dir, "%s/ca", g_dir);
    if (vf_pki_ca_create(dir, 30, 10, &g_rng, &err) != 0 || vf_pki_ca_open(&g_ca, dir, &err) != 0) goto fail;
    snprintf(dir, sizeof dir, "%s/other-ca", g_dir);
    if (vf_pki_ca_create(dir, 30, 10, &g_rng, &err) != 0 || vf_pki_ca_open(&g_other_ca, dir, &err) != 0) goto fail;
    for (int i = 0; i < N_IP; i++)
        if (make_party(&g_ca, VF_ROLE_IMAGE_PARTY, g_names[i], g_names[i], &g_ip[i], &err) != 0) goto fail;
    if (make_party(&g_ca, VF_ROLE_KNOWLEDGE_PARTY, "kp", "kp", &g_kp, &err) != 0) goto fail;
    if (make_party(&g_other_ca, VF_ROLE_IMAGE_PARTY, "hospital-b", "foreign-b", &g_foreign, &err) != 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "setup: %s\n", err.msg);
    return -1;
}

static int teardown_all(void **state) {
    for (int i = 0; i < N_IP; i++) free(g_ip[i].der);
    free(g_kp.der);
    free(g_foreign.der);
    vf_pki_ca_close(&g_ca);
    vf_pki_ca_close(&g_other_ca);
    vf_pki_rng_free(&g_rng);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void new_key(int i, vf_mask_key *k) {
    vf_error err = {{0}};
    if (vf_mask_key_new(k, g_names[i], g_ip[i].key_path, &err) != 0) fail_msg("%s", err.msg);
}

static vf_mask_peer peer_of(const vf_mask_key *k, const party *p) {
    vf_mask_peer m = {.name = k->name, .pub = k->pub, .pub_len = VF_MASK_PUB_LEN, .sig = k->sig, .sig_len = k->sig_len,
                      .cert_der = p->der, .cert_len = p->der_len};
    return m;
}

/* ---- published vectors ---------------------------------------------------- */

#define ALICE_PRIV "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
#define ALICE_PUB "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
#define BOB_PRIV "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
#define BOB_PUB "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
#define SHARED "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

/* RFC 5869 A.1: the HKDF-SHA256 the pair seed is made with. */
static void test_hkdf_rfc5869_case1(void **state) {
    uint8_t ikm[22], salt[13], info[10], okm[42], want[42];
    memset(ikm, 0x0b, sizeof ikm);
    for (int i = 0; i < 13; i++) salt[i] = (uint8_t)i;
    for (int i = 0; i < 10; i++) info[i] = (uint8_t)(0xf0 + i);
    unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865", want, sizeof want);
    assert_int_equal(mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), salt, sizeof salt, ikm, sizeof ikm, info,
                                  sizeof info, okm, sizeof okm),
                     0);
    assert_memory_equal(okm, want, sizeof want);
}

/* RFC 7748 6.1: the public keys of Alice's and Bob's scalars, and the seed
 * both derive is HKDF of the published shared secret with the info laid out
 * as mask_key.h says ("alice" < "bob"). */
static void test_x25519_rfc7748(void **state) {
    uint8_t a_priv[32], b_priv[32], a_pub[32], b_pub[32], shared[32];
    unhex(ALICE_PRIV, a_priv, 32);
    unhex(BOB_PRIV, b_priv, 32);
    unhex(ALICE_PUB, a_pub, 32);
    unhex(BOB_PUB, b_pub, 32);
    unhex(SHARED, shared, 32);
    vf_mask_key alice, bob;
    vf_error err = {{0}};
    if (vf_mask_key_from_private(&alice, "alice", a_priv, &err) != 0) fail_msg("%s", err.msg);
    if (vf_mask_key_from_private(&bob, "bob", b_priv, &err) != 0) fail_msg("%s", err.msg);
    assert_memory_equal(alice.pub, a_pub, 32);
    assert_memory_equal(bob.pub, b_pub, 32);
    assert_int_equal(alice.sig_len, 0);
    assert_string_equal(bob.name, "bob");

    uint8_t info[2 * (6 + 32)], want[32];
    size_t n = 0;
    memcpy(info + n, "alice", 6), n += 6; /* with its NUL */
    memcpy(info + n, a_pub, 32), n += 32;
    memcpy(info + n, "bob", 4), n += 4;
    memcpy(info + n, b_pub, 32), n += 32;
    static const char salt[] = "vflclip mask seed v1";
    assert_int_equal(mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), (const unsigned char *)salt, sizeof salt - 1,
                                  shared, 32, info, n, want, 32),
                     0);
    uint8_t s_ab[32], s_ba[32];
    if (vf_mask_pair_seed(&alice, "bob", b_pub, s_ab, &err) != 0) fail_msg("%s", err.msg);
    if (vf_mask_pair_seed(&bob, "alice", a_pub, s_ba, &err) != 0) fail_msg("%s", err.msg);
    assert_memory_equal(s_ab, want, 32);
    assert_memory_equal(s_ba, want, 32);

    /* The wipe clears the scalar, nothing else. */
    vf_mask_key_wipe(&alice);
    uint8_t zero[32] = {0};
    assert_memory_equal(alice.priv, zero, 32);
    assert_memory_equal(alice.pub, a_pub, 32);
}

/* RFC 8439 2.4.2: ciphertext XOR plaintext is the keystream of key 00..1f,
 * nonce 00 00 00 00 00 00 00 4a 00 00 00 00, from block 1. */
static void test_chacha20_rfc8439(void **state) {
    static const char plain[] =
        "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    uint8_t key[32], nonce[12], cipher[114], ks[114];
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)i;
    unhex("000000000000004a00000000", nonce, 12);
    unhex("6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
          "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
          "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
          "5af90bbf74a35be6b40b8eedf2785e42874d",
          cipher, sizeof cipher);
    assert_int_equal(sizeof plain - 1, 114);
    vf_error err = {{0}};
    if (vf_mask_stream(key, nonce, 1, ks, sizeof ks, &err) != 0) fail_msg("%s", err.msg);
    for (int i = 0; i < 114; i++) assert_int_equal(ks[i] ^ (uint8_t)plain[i], cipher[i]);

    /* The stream stops at block 2^32. */
    assert_int_equal(vf_mask_stream(key, nonce, 0xffffffffu, ks, 64, &err), 0);
    assert_int_equal(vf_mask_stream(key, nonce, 0xffffffffu, ks, 65, &err), -1);
    assert_non_null(strstr(err.msg, "2^32"));
}

/* vf_mask_add is + / - the keystream from block 0 under the nonce laid out
 * as masked_sum.h says, read as little-endian words, across the 4 KiB pieces
 * it is made in. */
static void test_mask_add_is_the_specified_stream(void **state) {
    enum { N = 1300 };
    static const char label[] = "vflclip mask nonce v1";
    vf_mask_nonce nc = {.run_id = "run-7", .purpose = VF_MASK_PURPOSE_EVAL | (2u << 8), .step = 0x0102030405060708ull,
                        .attempt = 3};
    uint8_t buf[sizeof label - 1 + 5 + 1 + 16], digest[32], iv[12];
    size_t n = 0;
    memcpy(buf, label, sizeof label - 1), n += sizeof label - 1;
    memcpy(buf + n, "run-7", 6), n += 6; /* with its NUL */
    const uint8_t ints[16] = {2, 2, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 3, 0, 0, 0};
    memcpy(buf + n, ints, 16), n += 16;
    assert_int_equal(n, sizeof buf);
    vf_sha256(buf, n, digest);
    vf_error err = {{0}};
    assert_int_equal(vf_mask_nonce_bytes(&nc, iv, &err), 0);
    assert_memory_equal(iv, digest, 12);

    uint8_t seed[32];
    for (int i = 0; i < 32; i++) seed[i] = (uint8_t)(7 * i + 1);
    static uint8_t ks[N * 8];
    assert_int_equal(vf_mask_stream(seed, digest, 0, ks, sizeof ks, &err), 0);
    static uint64_t v[N];
    for (int i = 0; i < N; i++) v[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
    if (vf_mask_add(v, N, seed, 1, &nc, &err) != 0) fail_msg("%s", err.msg);
    for (int i = 0; i < N; i++) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--) w = w << 8 | ks[8 * i + b];
        assert_true(v[i] == (uint64_t)i * 0x9e3779b97f4a7c15ull + w);
    }
    if (vf_mask_add(v, N, seed, -1, &nc, &err) != 0) fail_msg("%s", err.msg);
    for (int i = 0; i < N; i++) assert_true(v[i] == (uint64_t)i * 0x9e3779b97f4a7c15ull);

    assert_int_equal(vf_mask_add(v, N, seed, 2, &nc, &err), -1);
    assert_non_null(strstr(err.msg, "sign"));
    nc.run_id = NULL;
    assert_int_equal(vf_mask_add(v, N, seed, 1, &nc, &err), -1);
    assert_non_null(strstr(err.msg, "run id"));
}

/* ---- behaviour ------------------------------------------------------------ */

static void test_three_parties_masks_cancel(void **state) {
    enum { N = 1500 }; /* three 4 KiB pieces of stream, the last one short */
    vf_mask_key k[N_IP];
    vf_error err = {{0}};
    for (int i = 0; i < N_IP; i++) new_key(i, &k[i]);
    /* Every party checks every other's relayed key. */
    for (int i = 0; i < N_IP; i++)
        for (int j = 0; j < N_IP; j++) {
            vf_mask_peer p = peer_of(&k[j], &g_ip[j]);
            if (i != j && vf_mask_peer_verify(&p, &g_ca.crt, &err) != 0) fail_msg("%s", err.msg);
        }
    uint8_t pubs[N_IP][VF_MASK_PUB_LEN];
    for (int i = 0; i < N_IP; i++) memcpy(pubs[i], k[i].pub, VF_MASK_PUB_LEN);

    static double x[N_IP][N], want[N], got[N];
    static uint64_t plain[N_IP][N], masked[N_IP][N], sum_plain[N], sum_masked[N];
    srand(12345);
    memset(want, 0, sizeof want);
    for (int i = 0; i < N_IP; i++)
        for (int e = 0; e < N; e++) {
            x[i][e] = ((double)rand() / RAND_MAX - 0.5) * 2000.0; /* negatives too */
            want[e] += x[i][e];
        }
    vf_mask_nonce nc = {.run_id = "run-1", .purpose = VF_MASK_PURPOSE_STEP, .step = 41, .attempt = 0};
    memset(sum_plain, 0, sizeof sum_plain);
    memset(sum_masked, 0, sizeof sum_masked);
    for (int i = 0; i < N_IP; i++) {
        if (vf_fx_encode(x[i], N, plain[i], "loss", &err) != 0) fail_msg("%s", err.msg);
        memcpy(masked[i], plain[i], sizeof plain[i]);
        /* The whole list, the party itself included: it is skipped by name. */
        if (vf_mask_vector(masked[i], N, &k[i], g_names, (const uint8_t(*)[VF_MASK_PUB_LEN])pubs, N_IP, &nc, &err) != 0)
            fail_msg("%s", err.msg);
        int same = 0;
        for (int e = 0; e < N; e++) same += masked[i][e] == plain[i][e];
        assert_true(same <= 1);
        vf_masked_sum_add(sum_plain, plain[i], N);
        vf_masked_sum_add(sum_masked, masked[i], N);
    }
    assert_memory_equal(sum_masked, sum_plain, sizeof sum_plain);
    vf_fx_decode(sum_masked, N, got);
    for (int e = 0; e < N; e++) assert_true(fabs(got[e] - want[e]) <= 1e-9);

    /* Two of the three alone do not cancel: the third party's pair masks stay. */
    static uint64_t two[N];
    memset(two, 0, sizeof two);
    vf_masked_sum_add(two, masked[0], N);
    vf_masked_sum_add(two, masked[1], N);
    int same = 0;
    for (int e = 0; e < N; e++) same += two[e] == plain[0][e] + plain[1][e];
    assert_true(same <= 1);
    for (int i = 0; i < N_IP; i++) vf_mask_key_wipe(&k[i]);
}

static void test_pair_seed_is_symmetric_and_pairwise(void **state) {
    vf_mask_key k[N_IP];
    vf_error err = {{0}};
    for (int i = 0; i < N_IP; i++) new_key(i, &k[i]);
    uint8_t ab[32], ba[32], ac[32], ca[32], bc[32];
    assert_int_equal(vf_mask_pair_seed(&k[0], k[1].name, k[1].pub, ab, &err), 0);
    assert_int_equal(vf_mask_pair_seed(&k[1], k[0].name, k[0].pub, ba, &err), 0);
    assert_int_equal(vf_mask_pair_seed(&k[0], k[2].name, k[2].pub, ac, &err), 0);
    assert_int_equal(vf_mask_pair_seed(&k[2], k[0].name, k[0].pub, ca, &err), 0);
    assert_int_equal(vf_mask_pair_seed(&k[1], k[2].name, k[2].pub, bc, &err), 0);
    assert_memory_equal(ab, ba, 32);
    assert_memory_equal(ac, ca, 32);
    assert_memory_not_equal(ab, ac, 32);
    assert_memory_not_equal(ab, bc, 32);
    /* The names are bound in: the same keys under another name give another seed. */
    uint8_t renamed[32];
    assert_int_equal(vf_mask_pair_seed(&k[0], "hospital-z", k[1].pub, renamed, &err), 0);
    assert_memory_not_equal(ab, renamed, 32);
    /* A fresh key for the same party: a fresh seed. */
    vf_mask_key again;
    new_key(0, &again);
    assert_memory_not_equal(again.pub, k[0].pub, 32);
    uint8_t ab2[32];
    assert_int_equal(vf_mask_pair_seed(&again, k[1].name, k[1].pub, ab2, &err), 0);
    assert_memory_not_equal(ab, ab2, 32);

    /* Refused: the party's own name, and a low-order public key (u = 0 and u = 1). */
    assert_int_equal(vf_mask_pair_seed(&k[0], k[0].name, k[1].pub, ab2, &err), -1);
    assert_non_null(strstr(err.msg, "own name"));
    uint8_t low[32] = {0};
    assert_int_equal(vf_mask_pair_seed(&k[0], "hospital-b", low, ab2, &err), -1);
    printf("  u=0 -> %s\n", err.msg);
    assert_non_null(strstr(err.msg, "hospital-b"));
    assert_non_null(strstr(err.msg, "low-order"));
    low[0] = 1;
    assert_int_equal(vf_mask_pair_seed(&k[0], "hospital-b", low, ab2, &err), -1);
    assert_non_null(strstr(err.msg, "low-order"));
    /* A wiped key derives nothing. */
    vf_mask_key_wipe(&again);
    assert_int_equal(vf_mask_pair_seed(&again, k[1].name, k[1].pub, ab2, &err), -1);
    assert_non_null(strstr(err.msg, "wiped"));
}

static void test_new_attempt_gives_new_masks(void **state) {
    enum { N = 64 };
    uint8_t seed[32];
    for (int i = 0; i < 32; i++) seed[i] = (uint8_t)i;
    vf_mask_nonce base = {.run_id = "run-1", .purpose = VF_MASK_PURPOSE_STEP, .step = 5, .attempt = 0};
    vf_mask_nonce variants[5] = {base, base, base, base, base};
    variants[0].attempt = 1;
    variants[1].step = 6;
    variants[2].purpose = VF_MASK_PURPOSE_EVAL;
    variants[3].run_id = "run-2";
    /* variants[4] == base: the same stream again */
    uint64_t m0[N] = {0}, m[N];
    vf_error err = {{0}};
    assert_int_equal(vf_mask_add(m0, N, seed, 1, &base, &err), 0);
    for (int v = 0; v < 5; v++) {
        memset(m, 0, sizeof m);
        assert_int_equal(vf_mask_add(m, N, seed, 1, &variants[v], &err), 0);
        int same = 0;
        for (int e = 0; e < N; e++) same += m[e] == m0[e];
        if (v < 4) assert_int_equal(same, 0);
        else assert_int_equal(same, N);
    }

    /* Through vf_mask_vector with real keys: attempt 1 masks differently. */
    vf_mask_key a, b;
    new_key(0, &a);
    new_key(1, &b);
    const char *names[1] = {b.name};
    uint64_t x0[N] = {0}, x1[N] = {0};
    vf_mask_nonce n1 = base;
    n1.attempt = 1;
    assert_int_equal(vf_mask_vector(x0, N, &a, names, (const uint8_t(*)[VF_MASK_PUB_LEN]) & b.pub, 1, &base, &err), 0);
    assert_int_equal(vf_mask_vector(x1, N, &a, names, (const uint8_t(*)[VF_MASK_PUB_LEN]) & b.pub, 1, &n1, &err), 0);
    int same = 0;
    for (int e = 0; e < N; e++) same += x0[e] == x1[e];
    assert_int_equal(same, 0);

    /* A peer listed twice is refused before v is touched. */
    const char *twice[2] = {b.name, b.name};
    uint8_t pubs[2][VF_MASK_PUB_LEN];
    memcpy(pubs[0], b.pub, 32);
    memcpy(pubs[1], b.pub, 32);
    uint64_t untouched[N] = {0};
    assert_int_equal(vf_mask_vector(untouched, N, &a, twice, (const uint8_t(*)[VF_MASK_PUB_LEN])pubs, 2, &base, &err), -1);
    assert_non_null(strstr(err.msg, "twice"));
    for (int e = 0; e < N; e++) assert_true(untouched[e] == 0);
}

static void expect_refused(const vf_mask_peer *p, mbedtls_x509_crt *ca, const char *needle, const char *who) {
    vf_error err = {{0}};
    assert_int_equal(vf_mask_peer_verify(p, ca, &err), -1);
    printf("  %s\n", err.msg);
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
    char named[200];
    snprintf(named, sizeof named, "image party '%s'", who);
    if (!strstr(err.msg, named)) fail_msg("'%s' does not name %s", err.msg, named);
}

static void test_verification_refusals(void **state) {
    vf_mask_key b, c, kp, foreign;
    vf_error err = {{0}};
    new_key(1, &b);
    new_key(2, &c);
    vf_mask_peer good = peer_of(&b, &g_ip[1]);
    assert_int_equal(vf_mask_peer_verify(&good, &g_ca.crt, &err), 0);

    /* A signature with one bit flipped. */
    uint8_t sig[VF_MASK_SIG_MAX];
    memcpy(sig, b.sig, b.sig_len);
    sig[b.sig_len / 2] ^= 0x01;
    vf_mask_peer p = good;
    p.sig = sig;
    expect_refused(&p, &g_ca.crt, "mask key signature does not verify", "hospital-b");

    /* c's public key under b's name, signature and certificate (the aggregator swapping keys). */
    p = good;
    p.pub = c.pub;
    expect_refused(&p, &g_ca.crt, "mask key signature does not verify", "hospital-b");

    /* b's key and certificate relayed as c's. */
    p = good;
    p.name = "hospital-c";
    expect_refused(&p, &g_ca.crt, "certificate is for image-party 'hospital-b'", "hospital-c");

    /* A knowledge party's certificate and a key it signed. */
    if (vf_mask_key_new(&kp, "kp", g_kp.key_path, &err) != 0) fail_msg("%s", err.msg);
    p = peer_of(&kp, &g_kp);
    expect_refused(&p, &g_ca.crt, "certificate is for knowledge-party 'kp'", "kp");

    /* hospital-b's certificate from another CA, and the key that CA's b signed. */
    if (vf_mask_key_new(&foreign, "hospital-b", g_foreign.key_path, &err) != 0) fail_msg("%s", err.msg);
    p = peer_of(&foreign, &g_foreign);
    expect_refused(&p, &g_ca.crt, "certificate is not signed by the federation CA", "hospital-b");
    /* ... which its own CA accepts. */
    assert_int_equal(vf_mask_peer_verify(&p, &g_other_ca.crt, &err), 0);

    /* Malformed relays. */
    p = good;
    p.pub_len = 31;
    expect_refused(&p, &g_ca.crt, "31 bytes", "hospital-b");
    p = good;
    p.sig_len = 0;
    expect_refused(&p, &g_ca.crt, "signature", "hospital-b");
    p = good;
    p.cert_len = good.cert_len / 2;
    expect_refused(&p, &g_ca.crt, "certificate does not parse", "hospital-b");
    p = good;
    p.name = "bad name\n";
    assert_int_equal(vf_mask_peer_verify(&p, &g_ca.crt, &err), -1);
    assert_null(strchr(err.msg, '\n'));
}

static void test_key_new_errors_name_the_file(void **state) {
    vf_mask_key k;
    vf_error err = {{0}};
    char path[400];
    snprintf(path, sizeof path, "%s/missing.key", g_dir);
    assert_int_equal(vf_mask_key_new(&k, "hospital-a", path, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    uint8_t zero[32] = {0};
    assert_memory_equal(k.priv, zero, 32);
    assert_int_equal(vf_mask_key_new(&k, "no spaces allowed", g_ip[0].key_path, &err), -1);
    assert_non_null(strstr(err.msg, "name"));
}

/* ---- fixed point ---------------------------------------------------------- */

static void test_fixed_point(void **state) {
    const double x[] = {0.0, 1.0, -1.0, 0.1, -0.1, 1e-13, -3.14159265358979, 8388607.999, -8388607.999, 123456.789012345,
                        5e-13 /* half a step and a bit */, -2.5 / 1099511627776.0 /* -2.5 steps: rounds away from zero */};
    const size_t n = sizeof x / sizeof x[0];
    uint64_t q[sizeof x / sizeof x[0]];
    double back[sizeof x / sizeof x[0]];
    vf_error err = {{0}};
    assert_int_equal(vf_fx_encode(x, n, q, "grad", &err), 0);
    vf_fx_decode(q, n, back);
    for (size_t i = 0; i < n; i++)
        if (!(fabs(back[i] - x[i]) <= ldexp(1.0, -41))) fail_msg("x[%zu] = %.17g came back %.17g", i, x[i], back[i]);
    assert_true(q[1] == (uint64_t)1 << 40);
    assert_true(q[2] == (uint64_t)0 - ((uint64_t)1 << 40)); /* two's complement */
    assert_true(q[11] == (uint64_t)-3);

    /* float input */
    const float f[] = {0.5f, -0.25f, 1e-3f};
    uint64_t qf[3];
    assert_int_equal(vf_fx_encode_f(f, 3, qf, "grad", &err), 0);
    assert_true(qf[0] == (uint64_t)1 << 39);
    assert_true(qf[1] == (uint64_t)0 - ((uint64_t)1 << 38));

    /* Refused, by name and index. */
    const double bad[][4] = {{0, 1, 2, 8388608.0}, {0, 1, 2, -8388608.0}, {0, 1, 2, 1e300}, {0, 1, 2, NAN}, {0, 1, 2, INFINITY}};
    for (int b = 0; b < 5; b++) {
        uint64_t out[4];
        assert_int_equal(vf_fx_encode(bad[b], 4, out, "loss_sum", &err), -1);
        printf("  %s\n", err.msg);
        assert_non_null(strstr(err.msg, "loss_sum[3]"));
    }
    const float fbad[2] = {1.0f, NAN};
    uint64_t out2[2];
    assert_int_equal(vf_fx_encode_f(fbad, 2, out2, "logits", &err), -1);
    assert_non_null(strstr(err.msg, "logits[1]"));

    /* Negative numbers sum through the wrap-around. */
    const double parts[] = {-1.5, 0.25, 2.0, -7.125, 3.0};
    uint64_t pq[5], s = 0;
    assert_int_equal(vf_fx_encode(parts, 5, pq, "parts", &err), 0);
    for (int i = 0; i < 5; i++) vf_masked_sum_add(&s, &pq[i], 1);
    double total;
    vf_fx_decode(&s, 1, &total);
    assert_true(total == -3.375);
    uint64_t neg[3];
    const double negs[3] = {-1000.0, -2000.5, -0.5};
    assert_int_equal(vf_fx_encode(negs, 3, neg, "negs", &err), 0);
    s = neg[0] + neg[1] + neg[2];
    vf_fx_decode(&s, 1, &total);
    assert_true(total == -3001.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hkdf_rfc5869_case1),
        cmocka_unit_test(test_x25519_rfc7748),
        cmocka_unit_test(test_chacha20_rfc8439),
        cmocka_unit_test(test_mask_add_is_the_specified_stream),
        cmocka_unit_test(test_three_parties_masks_cancel),
        cmocka_unit_test(test_pair_seed_is_symmetric_and_pairwise),
        cmocka_unit_test(test_new_attempt_gives_new_masks),
        cmocka_unit_test(test_verification_refusals),
        cmocka_unit_test(test_key_new_errors_name_the_file),
        cmocka_unit_test(test_fixed_point),
    };
    return cmocka_run_group_tests_name("secagg", tests, setup_all, teardown_all);
}
