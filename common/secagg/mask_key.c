/* mask_key: X25519 mask keys, signed with the party's certificate key, and
 * the pairwise seeds (see mask_key.h).
 *
 * X25519 is mbedTLS's Curve25519 group (Montgomery ladder): a scalar is read
 * and written as 32 little-endian bytes, clamped as RFC 7748 section 5 says;
 * a public key is the little-endian u-coordinate (mbedtls_ecp_point_write_binary
 * and _read_binary use exactly that encoding for Montgomery curves, and the
 * reader masks the top bit).  Everything used here has the same form in
 * mbedTLS 2.28 and 3.6, except pk_parse/pk_sign, which go through
 * pki/mbedtls_compat.h. */
#include "secagg/mask_key.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <stdio.h>
#include <string.h>

#include "pki/mbedtls_compat.h"
#include "pki/pki.h"
#include "pki/pki_issue.h"
#include "util/sha256.h"

#define KEY_LABEL "vflclip mask key v1"
#define SEED_SALT "vflclip mask seed v1"

static int mbed_fail(vf_error *err, int ret, const char *what, const char *who) {
    char msg[160];
    mbedtls_strerror(ret, msg, sizeof msg);
    return vf_fail(err, "%s: %s: %s (-0x%04x)", who, what, msg, (unsigned)-ret);
}

/* A CTR-DRBG seeded from the platform entropy source (key generation, the
 * ladder's coordinate blinding, ECDSA). */
typedef struct mask_rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} mask_rng;

static int rng_open(mask_rng *r) {
    static const char personal[] = "vflclip-mask-key";
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    return mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy, (const unsigned char *)personal,
                                 sizeof personal - 1);
}

static void rng_close(mask_rng *r) {
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
}

/* SHA-256 of "vflclip mask key v1" 0x00 name 0x00 pub: what the certificate
 * key signs. */
static void key_message_hash(const char *name, const uint8_t pub[VF_MASK_PUB_LEN], unsigned char hash[32]) {
    static const unsigned char zero = 0;
    vf_sha256_ctx h;
    vf_sha256_begin(&h);
    vf_sha256_add(&h, KEY_LABEL, sizeof KEY_LABEL - 1);
    vf_sha256_add(&h, &zero, 1);
    vf_sha256_add(&h, name, strlen(name));
    vf_sha256_add(&h, &zero, 1);
    vf_sha256_add(&h, pub, VF_MASK_PUB_LEN);
    vf_sha256_end(&h, hash);
}

static void clamp(uint8_t s[32]) {
    s[0] &= 248;
    s[31] &= 127;
    s[31] |= 64;
}

/* pub = X25519(priv, 9); priv already clamped. */
static int public_of(const uint8_t priv[32], uint8_t pub[VF_MASK_PUB_LEN], mask_rng *rng, int *mbed_ret) {
    mbedtls_ecp_group grp;
    mbedtls_mpi d;
    mbedtls_ecp_point Q;
    mbedtls_ecp_group_init(&grp);
    mbedtls_mpi_init(&d);
    mbedtls_ecp_point_init(&Q);
    size_t olen = 0;
    int ret = mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519);
    if (ret == 0) ret = mbedtls_mpi_read_binary_le(&d, priv, 32);
    if (ret == 0) ret = mbedtls_ecp_mul(&grp, &Q, &d, &grp.G, mbedtls_ctr_drbg_random, &rng->drbg);
    if (ret == 0) ret = mbedtls_ecp_point_write_binary(&grp, &Q, MBEDTLS_ECP_PF_UNCOMPRESSED, &olen, pub, VF_MASK_PUB_LEN);
    if (ret == 0 && olen != VF_MASK_PUB_LEN) ret = MBEDTLS_ERR_ECP_BAD_INPUT_DATA;
    mbedtls_ecp_point_free(&Q);
    mbedtls_mpi_free(&d);
    mbedtls_ecp_group_free(&grp);
    *mbed_ret = ret;
    return ret == 0 ? 0 : -1;
}

static int set_name(vf_mask_key *k, const char *name, vf_error *err) {
    if (!vf_pki_name_ok(name))
        return vf_fail(err, "mask key: party name '%.127s' is not 1..127 characters of [A-Za-z0-9._-]", name ? name : "");
    snprintf(k->name, sizeof k->name, "%s", name);
    return 0;
}

int vf_mask_key_from_private(vf_mask_key *k, const char *name, const uint8_t priv[32], vf_error *err) {
    memset(k, 0, sizeof *k);
    if (set_name(k, name, err) != 0) return -1;
    memcpy(k->priv, priv, 32);
    clamp(k->priv);
    mask_rng rng;
    int ret = rng_open(&rng);
    if (ret == 0) public_of(k->priv, k->pub, &rng, &ret);
    rng_close(&rng);
    if (ret != 0) {
        vf_mask_key_wipe(k);
        return mbed_fail(err, ret, "computing the X25519 public key", "mask key");
    }
    return 0;
}

int vf_mask_key_new(vf_mask_key *k, const char *name, const char *key_path, vf_error *err) {
    memset(k, 0, sizeof *k);
    if (set_name(k, name, err) != 0) return -1;
    mask_rng rng;
    mbedtls_ecp_group grp;
    mbedtls_mpi d;
    mbedtls_ecp_point Q;
    mbedtls_pk_context pk;
    mbedtls_ecp_group_init(&grp);
    mbedtls_mpi_init(&d);
    mbedtls_ecp_point_init(&Q);
    mbedtls_pk_init(&pk);
    unsigned char hash[32], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t olen = 0, sig_len = 0;
    int rc = -1;

    int ret = rng_open(&rng);
    if (ret != 0) {
        mbed_fail(err, ret, "seeding the random generator", "mask key");
        goto out;
    }
    ret = mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519);
    if (ret == 0) ret = mbedtls_ecp_gen_keypair(&grp, &d, &Q, mbedtls_ctr_drbg_random, &rng.drbg);
    if (ret == 0) ret = mbedtls_mpi_write_binary_le(&d, k->priv, sizeof k->priv);
    if (ret == 0) ret = mbedtls_ecp_point_write_binary(&grp, &Q, MBEDTLS_ECP_PF_UNCOMPRESSED, &olen, k->pub, sizeof k->pub);
    if (ret == 0 && olen != VF_MASK_PUB_LEN) ret = MBEDTLS_ERR_ECP_BAD_INPUT_DATA;
    if (ret != 0) {
        mbed_fail(err, ret, "generating an X25519 key pair", "mask key");
        goto out;
    }

    ret = vf_mbedtls_pk_parse_keyfile(&pk, key_path);
    if (ret != 0) {
        mbed_fail(err, ret, "reading the private key", key_path);
        goto out;
    }
    key_message_hash(k->name, k->pub, hash);
    ret = vf_mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, sizeof sig, &sig_len, mbedtls_ctr_drbg_random,
                             &rng.drbg);
    if (ret != 0) {
        mbed_fail(err, ret, "signing the mask key", key_path);
        goto out;
    }
    if (sig_len > VF_MASK_SIG_MAX) {
        vf_fail(err, "%s: the key's %zu-byte signature is longer than the %d bytes a mask key carries (use an EC key)",
                key_path, sig_len, VF_MASK_SIG_MAX);
        goto out;
    }
    memcpy(k->sig, sig, sig_len);
    k->sig_len = sig_len;
    rc = 0;
out:
    if (rc != 0) vf_mask_key_wipe(k);
    mbedtls_pk_free(&pk);
    mbedtls_ecp_point_free(&Q);
    mbedtls_mpi_free(&d);
    mbedtls_ecp_group_free(&grp);
    rng_close(&rng);
    return rc;
}

void vf_mask_key_wipe(vf_mask_key *k) {
    if (k) mbedtls_platform_zeroize(k->priv, sizeof k->priv);
}

int vf_mask_peer_verify(const vf_mask_peer *p, mbedtls_x509_crt *ca, vf_error *err) {
    if (!p || !vf_pki_name_ok(p->name))
        return vf_fail(err, "image party: the claimed name is not 1..127 characters of [A-Za-z0-9._-]");
    const char *who = p->name;
    if (!p->pub || p->pub_len != VF_MASK_PUB_LEN)
        return vf_fail(err, "image party '%s': mask public key is %zu bytes, not %d", who, p->pub ? p->pub_len : 0,
                       VF_MASK_PUB_LEN);
    if (!p->sig || p->sig_len == 0 || p->sig_len > VF_MASK_SIG_MAX)
        return vf_fail(err, "image party '%s': mask key signature is %zu bytes (1..%d)", who, p->sig ? p->sig_len : 0,
                       VF_MASK_SIG_MAX);
    if (!p->cert_der || p->cert_len == 0) return vf_fail(err, "image party '%s': no certificate", who);

    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int rc = -1;
    int ret = mbedtls_x509_crt_parse_der(&crt, p->cert_der, p->cert_len);
    if (ret != 0) {
        char msg[160];
        mbedtls_strerror(ret, msg, sizeof msg);
        vf_fail(err, "image party '%s': certificate does not parse: %s", who, msg);
        goto out;
    }
    uint32_t flags = 0;
    ret = mbedtls_x509_crt_verify(&crt, ca, NULL, NULL, &flags, NULL, NULL);
    if (ret != 0 || flags != 0) {
        if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
            vf_fail(err, "image party '%s': certificate is not signed by the federation CA", who);
        } else {
            char info[512];
            int n = mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
            if (n <= 0) snprintf(info, sizeof info, "verification failed (-0x%04x)", (unsigned)-ret);
            for (char *c = info; *c; c++)
                if (*c == '\n') *c = (c[1] ? ';' : '\0');
            vf_fail(err, "image party '%s': certificate does not verify against the federation CA: %s", who, info);
        }
        goto out;
    }
    vf_peer_identity id;
    if (vf_pki_identity_from_crt(&crt, &id, err) != 0) {
        vf_error_prefix(err, "image party '%s': certificate", who);
        goto out;
    }
    if (id.role != VF_ROLE_IMAGE_PARTY || strcmp(id.name, p->name) != 0) {
        vf_fail(err, "image party '%s': certificate is for %s '%s'", who, vf_role_name(id.role), id.name);
        goto out;
    }
    if (mbedtls_x509_crt_check_key_usage(&crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0) {
        vf_fail(err, "image party '%s': certificate's key usage does not allow signatures", who);
        goto out;
    }
    unsigned char hash[32];
    key_message_hash(p->name, p->pub, hash);
    ret = vf_mbedtls_init();
    if (ret == 0) ret = mbedtls_pk_verify(&crt.pk, MBEDTLS_MD_SHA256, hash, sizeof hash, p->sig, p->sig_len);
    if (ret != 0) {
        vf_fail(err, "image party '%s': mask key signature does not verify", who);
        goto out;
    }
    rc = 0;
out:
    mbedtls_x509_crt_free(&crt);
    return rc;
}

int vf_mask_pair_seed(const vf_mask_key *k, const char *peer_name, const uint8_t peer_pub[VF_MASK_PUB_LEN],
                      uint8_t seed[VF_MASK_SEED_LEN], vf_error *err) {
    if (!vf_pki_name_ok(peer_name))
        return vf_fail(err, "mask seed: peer name is not 1..127 characters of [A-Za-z0-9._-]");
    int order = strcmp(k->name, peer_name);
    if (order == 0) return vf_fail(err, "mask seed: peer '%s' has this party's own name", peer_name);

    unsigned char any = 0;
    for (size_t i = 0; i < sizeof k->priv; i++) any |= k->priv[i];
    if (any == 0) return vf_fail(err, "mask seed with '%s': this party's mask key has been wiped", peer_name);

    uint8_t shared[32];
    mask_rng rng;
    mbedtls_ecp_group grp;
    mbedtls_mpi d;
    mbedtls_ecp_point P, S;
    mbedtls_ecp_group_init(&grp);
    mbedtls_mpi_init(&d);
    mbedtls_ecp_point_init(&P);
    mbedtls_ecp_point_init(&S);
    size_t olen = 0;
    int rc = -1;
    int ret = rng_open(&rng);
    if (ret == 0) ret = mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519);
    if (ret == 0) ret = mbedtls_mpi_read_binary_le(&d, k->priv, sizeof k->priv);
    if (ret == 0) ret = mbedtls_ecp_point_read_binary(&grp, &P, peer_pub, VF_MASK_PUB_LEN);
    /* mbedtls_ecp_mul refuses the low-order points (MBEDTLS_ERR_ECP_INVALID_KEY);
     * the all-zero check below is RFC 7748 section 6.1's. */
    if (ret == 0) {
        ret = mbedtls_ecp_mul(&grp, &S, &d, &P, mbedtls_ctr_drbg_random, &rng.drbg);
        if (ret == MBEDTLS_ERR_ECP_INVALID_KEY) { /* our scalar is a clamped one: the peer's point is refused */
            vf_fail(err, "mask seed with '%s': the peer's public key is refused (a low-order point)", peer_name);
            goto out;
        }
    }
    if (ret == 0) ret = mbedtls_ecp_point_write_binary(&grp, &S, MBEDTLS_ECP_PF_UNCOMPRESSED, &olen, shared, sizeof shared);
    if (ret == 0 && olen != sizeof shared) ret = MBEDTLS_ERR_ECP_BAD_INPUT_DATA;
    if (ret != 0) {
        char who[160];
        snprintf(who, sizeof who, "mask seed with '%s'", peer_name);
        mbed_fail(err, ret, "X25519 with the peer's public key", who);
        goto out;
    }
    unsigned char acc = 0;
    for (size_t i = 0; i < sizeof shared; i++) acc |= shared[i];
    if (acc == 0) {
        vf_fail(err, "mask seed with '%s': the X25519 shared secret is all zero (a low-order public key)", peer_name);
        goto out;
    }

    /* info = name_lo 0x00 pub_lo name_hi 0x00 pub_hi */
    const char *names[2] = {k->name, peer_name};
    const uint8_t *pubs[2] = {k->pub, peer_pub};
    int lo = order < 0 ? 0 : 1;
    unsigned char info[2 * (128 + VF_MASK_PUB_LEN)];
    size_t n = 0;
    for (int s = 0; s < 2; s++) {
        int i = s == 0 ? lo : 1 - lo;
        size_t len = strlen(names[i]);
        memcpy(info + n, names[i], len);
        n += len;
        info[n++] = 0;
        memcpy(info + n, pubs[i], VF_MASK_PUB_LEN);
        n += VF_MASK_PUB_LEN;
    }
    ret = mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), (const unsigned char *)SEED_SALT, sizeof SEED_SALT - 1,
                       shared, sizeof shared, info, n, seed, VF_MASK_SEED_LEN);
    if (ret != 0) {
        char who[160];
        snprintf(who, sizeof who, "mask seed with '%s'", peer_name);
        mbed_fail(err, ret, "HKDF-SHA256", who);
        goto out;
    }
    rc = 0;
out:
    mbedtls_platform_zeroize(shared, sizeof shared);
    mbedtls_ecp_point_free(&S);
    mbedtls_ecp_point_free(&P);
    mbedtls_mpi_free(&d);
    mbedtls_ecp_group_free(&grp);
    rng_close(&rng);
    return rc;
}
