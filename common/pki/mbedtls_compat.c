/* mbedtls_compat: one form for the mbedTLS calls that 2.28 and 3.x spell
 * differently (see mbedtls_compat.h). */
#include "pki/mbedtls_compat.h"

#include <mbedtls/asn1write.h>
#include <mbedtls/md.h>
#include <mbedtls/sha1.h>

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define VF_MBEDTLS_3 1
#include <psa/crypto.h>
#else
#define VF_MBEDTLS_3 0
#endif

int vf_mbedtls_init(void) {
#if VF_MBEDTLS_3 && defined(MBEDTLS_PSA_CRYPTO_C)
    psa_status_t st = psa_crypto_init(); /* idempotent */
    return st == PSA_SUCCESS ? 0 : (int)st;
#else
    return 0;
#endif
}

int vf_mbedtls_sha1(const unsigned char *in, size_t len, unsigned char out[20]) {
#if VF_MBEDTLS_3
    return mbedtls_sha1(in, len, out);
#else
    return mbedtls_sha1_ret(in, len, out);
#endif
}

/* 3.x wants a random generator for key blinding while parsing and checking
 * pairs; mbedTLS's own test generator is not for production, so a CTR-DRBG
 * seeded from the platform entropy source is used. */
#if VF_MBEDTLS_3
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

typedef struct {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} compat_rng;

static int rng_open(compat_rng *r) {
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    int ret = vf_mbedtls_init();
    if (ret == 0)
        ret = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy, (const unsigned char *)"vflclip-pk", 10);
    return ret;
}

static void rng_close(compat_rng *r) {
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
}
#endif

int vf_mbedtls_pk_parse_key(mbedtls_pk_context *key, const unsigned char *buf, size_t len) {
#if VF_MBEDTLS_3
    compat_rng r;
    int ret = rng_open(&r);
    if (ret == 0) ret = mbedtls_pk_parse_key(key, buf, len, NULL, 0, mbedtls_ctr_drbg_random, &r.drbg);
    rng_close(&r);
    return ret;
#else
    return mbedtls_pk_parse_key(key, buf, len, NULL, 0);
#endif
}

int vf_mbedtls_pk_parse_keyfile(mbedtls_pk_context *key, const char *path) {
#if VF_MBEDTLS_3
    compat_rng r;
    int ret = rng_open(&r);
    if (ret == 0) ret = mbedtls_pk_parse_keyfile(key, path, NULL, mbedtls_ctr_drbg_random, &r.drbg);
    rng_close(&r);
    return ret;
#else
    return mbedtls_pk_parse_keyfile(key, path, NULL);
#endif
}

int vf_mbedtls_pk_check_pair(const mbedtls_pk_context *pub, const mbedtls_pk_context *prv) {
#if VF_MBEDTLS_3
    compat_rng r;
    int ret = rng_open(&r);
    if (ret == 0) ret = mbedtls_pk_check_pair(pub, prv, mbedtls_ctr_drbg_random, &r.drbg);
    rng_close(&r);
    return ret;
#else
    return mbedtls_pk_check_pair(pub, prv);
#endif
}

int vf_mbedtls_pk_sign(mbedtls_pk_context *key, mbedtls_md_type_t md, const unsigned char *hash, size_t hash_len,
                       unsigned char *sig, size_t sig_size, size_t *sig_len,
                       int (*f_rng)(void *, unsigned char *, size_t), void *p_rng) {
#if VF_MBEDTLS_3
    int ret = vf_mbedtls_init();
    return ret ? ret : mbedtls_pk_sign(key, md, hash, hash_len, sig, sig_size, sig_len, f_rng, p_rng);
#else
    (void)sig_size; /* 2.28 writes at most MBEDTLS_PK_SIGNATURE_MAX_SIZE, which callers provide */
    return mbedtls_pk_sign(key, md, hash, hash_len, sig, sig_len, f_rng, p_rng);
#endif
}

mbedtls_ecp_group_id vf_mbedtls_pk_ec_group(const mbedtls_pk_context *key) {
    mbedtls_pk_type_t t = mbedtls_pk_get_type(key);
    if (t != MBEDTLS_PK_ECKEY && t != MBEDTLS_PK_ECKEY_DH && t != MBEDTLS_PK_ECDSA) return MBEDTLS_ECP_DP_NONE;
#if VF_MBEDTLS_3
    return mbedtls_ecp_keypair_get_group_id(mbedtls_pk_ec(*key));
#else
    return mbedtls_pk_ec(*key)->grp.id;
#endif
}

#if VF_MBEDTLS_3
#define PRIV(s, f) ((s)->MBEDTLS_PRIVATE(f))
#else
#define PRIV(s, f) ((s)->f)
#endif

int vf_mbedtls_crt_is_ca(const mbedtls_x509_crt *crt) { return PRIV(crt, ca_istrue) != 0; }
int vf_mbedtls_crt_has_ext(const mbedtls_x509_crt *crt, int ext_type) { return (PRIV(crt, ext_types) & ext_type) != 0; }
unsigned int vf_mbedtls_crt_key_usage(const mbedtls_x509_crt *crt) { return PRIV(crt, key_usage); }

static int signed_by(const mbedtls_x509_buf *tbs, mbedtls_md_type_t md_type, mbedtls_pk_type_t sig_pk, const void *sig_opts,
                     const mbedtls_x509_buf *sig, const mbedtls_pk_context *pk) {
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(md_type);
    unsigned char hash[MBEDTLS_MD_MAX_SIZE];
    if (!md || mbedtls_md(md, tbs->p, tbs->len, hash) != 0) return VF_MBEDTLS_SIG_DIGEST;
    if (mbedtls_pk_verify_ext(sig_pk, sig_opts, (mbedtls_pk_context *)pk, md_type, hash, mbedtls_md_get_size(md), sig->p,
                              sig->len) != 0)
        return VF_MBEDTLS_SIG_BAD;
    return 0;
}

int vf_mbedtls_crt_signed_by(const mbedtls_x509_crt *crt, const mbedtls_pk_context *pk) {
    return signed_by(&crt->tbs, PRIV(crt, sig_md), PRIV(crt, sig_pk), PRIV(crt, sig_opts), &PRIV(crt, sig), pk);
}

int vf_mbedtls_crl_signed_by(const mbedtls_x509_crl *crl, const mbedtls_pk_context *pk) {
    return signed_by(&crl->tbs, PRIV(crl, sig_md), PRIV(crl, sig_pk), PRIV(crl, sig_opts), &PRIV(crl, sig), pk);
}

/* As mbedTLS 2.28's x509_write_name: SET { SEQUENCE { OID, string } } with
 * the string tag string_to_names chose. */
static int write_rdn(unsigned char **p, unsigned char *start, const mbedtls_asn1_named_data *n) {
    int ret;
    size_t len = 0;
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tagged_string(p, start, n->val.tag, (const char *)n->val.p, n->val.len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_oid(p, start, (const char *)n->oid.p, n->oid.len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SET));
    return (int)len;
}

int vf_mbedtls_write_names(unsigned char **p, unsigned char *start, const mbedtls_asn1_named_data *first) {
    int ret;
    size_t len = 0;
    for (const mbedtls_asn1_named_data *n = first; n; n = n->next) MBEDTLS_ASN1_CHK_ADD(len, write_rdn(p, start, n));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    return (int)len;
}

void vf_mbedtls_ssl_conf_tls12_only(mbedtls_ssl_config *conf) {
#if VF_MBEDTLS_3
    mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
    mbedtls_ssl_conf_max_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
}

int vf_mbedtls_ssl_conf_groups(mbedtls_ssl_config *conf, vf_mbedtls_groups *store, const mbedtls_ecp_group_id *curves) {
    int n = 0;
    for (; curves[n] != MBEDTLS_ECP_DP_NONE; n++) {
        if (n + 1 >= (int)(sizeof store->ids / sizeof store->ids[0])) return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
#if VF_MBEDTLS_3
        const mbedtls_ecp_curve_info *info = mbedtls_ecp_curve_info_from_grp_id(curves[n]);
        if (!info) return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
        store->ids[n] = info->tls_id;
#else
        store->ids[n] = curves[n];
#endif
    }
#if VF_MBEDTLS_3
    store->ids[n] = 0; /* MBEDTLS_SSL_IANA_TLS_GROUP_NONE */
    mbedtls_ssl_conf_groups(conf, store->ids);
#else
    store->ids[n] = MBEDTLS_ECP_DP_NONE;
    mbedtls_ssl_conf_curves(conf, store->ids);
#endif
    return 0;
}

int vf_mbedtls_x509write_crt_set_serial_hex(mbedtls_x509write_cert *w, const char *hex) {
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    int rc = mbedtls_mpi_read_string(&serial, 16, hex);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    unsigned char raw[MBEDTLS_X509_RFC5280_MAX_SERIAL_LEN];
    size_t len = mbedtls_mpi_size(&serial);
    if (rc == 0 && (len == 0 || len > sizeof raw)) rc = MBEDTLS_ERR_X509_BAD_INPUT_DATA;
    if (rc == 0) rc = mbedtls_mpi_write_binary(&serial, raw, len);
    if (rc == 0) rc = mbedtls_x509write_crt_set_serial_raw(w, raw, len);
#else
    if (rc == 0) rc = mbedtls_x509write_crt_set_serial(w, &serial);
#endif
    mbedtls_mpi_free(&serial);
    return rc;
}
