/* pki_der: DER pieces and the sign-and-wrap step shared by the certificate
 * and revocation-list writers (see pki_der.h). */
#include "pki/pki_der.h"

#include <mbedtls/asn1write.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pki/mbedtls_compat.h"
#include "util/sha256.h"

int vf_der_wrap(unsigned char **p, unsigned char *start, unsigned char tag, size_t content_len) {
    size_t len = 0;
    VF_DER(mbedtls_asn1_write_len(p, start, content_len));
    VF_DER(mbedtls_asn1_write_tag(p, start, tag));
    return (int)len;
}

int vf_der_sequence(unsigned char **p, unsigned char *start, size_t content_len) {
    return vf_der_wrap(p, start, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE, content_len);
}

int vf_der_time(unsigned char **p, unsigned char *start, long long unix_time) {
    time_t tt = (time_t)unix_time;
    struct tm tm;
    if (!gmtime_r(&tt, &tm)) return MBEDTLS_ERR_ASN1_INVALID_DATA;
    int year = tm.tm_year + 1900;
    char text[20];
    int n;
    unsigned char tag;
    if (year < 1950 || year > 9999) return MBEDTLS_ERR_ASN1_INVALID_DATA;
    if (year < 2050) {
        n = snprintf(text, sizeof text, "%02d%02d%02d%02d%02d%02dZ", year % 100, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        tag = MBEDTLS_ASN1_UTC_TIME;
    } else {
        n = snprintf(text, sizeof text, "%04d%02d%02d%02d%02d%02dZ", year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        tag = MBEDTLS_ASN1_GENERALIZED_TIME;
    }
    size_t len = 0;
    VF_DER(mbedtls_asn1_write_raw_buffer(p, start, (const unsigned char *)text, (size_t)n));
    VF_DER(vf_der_wrap(p, start, tag, len));
    return (int)len;
}

int vf_der_ecdsa_sha256(unsigned char **p, unsigned char *start) {
    size_t len = 0;
    VF_DER(mbedtls_asn1_write_oid(p, start, MBEDTLS_OID_ECDSA_SHA256, MBEDTLS_OID_SIZE(MBEDTLS_OID_ECDSA_SHA256)));
    VF_DER(vf_der_sequence(p, start, len));
    return (int)len;
}

int vf_der_extension(unsigned char **p, unsigned char *start, const char *oid, size_t oid_len, int critical,
                     const unsigned char *value, size_t value_len) {
    size_t len = 0;
    VF_DER(mbedtls_asn1_write_octet_string(p, start, value, value_len));
    if (critical) VF_DER(mbedtls_asn1_write_bool(p, start, 1));
    VF_DER(mbedtls_asn1_write_oid(p, start, oid, oid_len));
    VF_DER(vf_der_sequence(p, start, len));
    return (int)len;
}

int vf_der_fail(vf_error *err, int mbedtls_ret, const char *what) {
    char msg[200];
    mbedtls_strerror(mbedtls_ret, msg, sizeof msg);
    return vf_fail(err, "%s: %s", what, msg);
}

int vf_der_key_id(mbedtls_pk_context *key, unsigned char id[20], vf_error *err) {
    unsigned char buf[256];
    unsigned char *p = buf + sizeof buf;
    int n = mbedtls_pk_write_pubkey(&p, buf, key);
    if (n < 0) return vf_der_fail(err, n, "encoding the public key");
    int ret = vf_mbedtls_sha1(p, (size_t)n, id);
    return ret != 0 ? vf_der_fail(err, ret, "hashing the public key") : 0;
}

int vf_der_sign_to_pem(const unsigned char *tbs, size_t tbs_len, mbedtls_pk_context *key, mbedtls_ctr_drbg_context *drbg,
                       const char *label, char *pem, size_t pem_size, vf_error *err) {
    unsigned char hash[32], sig[MBEDTLS_ECDSA_MAX_LEN];
    size_t sig_len = 0;
    vf_sha256(tbs, tbs_len, hash);
    int ret = vf_mbedtls_pk_sign(key, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, sizeof sig, &sig_len, mbedtls_ctr_drbg_random,
                                 drbg);
    if (ret != 0) return vf_der_fail(err, ret, "signing");

    size_t cap = tbs_len + sig_len + 64;
    unsigned char *buf = malloc(cap);
    if (!buf) return vf_fail(err, "out of memory signing %zu bytes", tbs_len);
    unsigned char *p = buf + cap;
    size_t len = 0;
    int r;
    /* SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING signature } */
    if ((r = mbedtls_asn1_write_bitstring(&p, buf, sig, sig_len * 8)) >= 0) len += (size_t)r;
    if (r >= 0 && (r = vf_der_ecdsa_sha256(&p, buf)) >= 0) len += (size_t)r;
    if (r >= 0 && (r = mbedtls_asn1_write_raw_buffer(&p, buf, tbs, tbs_len)) >= 0) len += (size_t)r;
    if (r >= 0 && (r = vf_der_sequence(&p, buf, len)) >= 0) len += (size_t)r;
    if (r < 0) { free(buf); return vf_der_fail(err, r, "encoding the signed structure"); }

    char header[64], footer[64];
    snprintf(header, sizeof header, "-----BEGIN %s-----\n", label);
    snprintf(footer, sizeof footer, "-----END %s-----\n", label);
    size_t olen = 0;
    ret = mbedtls_pem_write_buffer(header, footer, p, len, (unsigned char *)pem, pem_size, &olen);
    free(buf);
    return ret != 0 ? vf_der_fail(err, ret, "writing PEM") : 0;
}
