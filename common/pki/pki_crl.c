/* pki_crl: CRL encoding/signing and reading entries back (see pki_crl.h). */
#include "pki/pki_crl.h"

#include <mbedtls/asn1.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/oid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pki/pki.h"
#include "pki/pki_der.h"

/* A non-negative INTEGER from raw big-endian content bytes, made minimal. */
static int der_positive_integer(unsigned char **p, unsigned char *start, const unsigned char *be, size_t n) {
    size_t len = 0;
    while (n > 1 && be[0] == 0 && !(be[1] & 0x80)) { be++; n--; }
    VF_DER(mbedtls_asn1_write_raw_buffer(p, start, be, n));
    if (be[0] & 0x80) VF_DER(mbedtls_asn1_write_raw_buffer(p, start, (const unsigned char *)"\0", 1));
    VF_DER(vf_der_wrap(p, start, MBEDTLS_ASN1_INTEGER, len));
    return (int)len;
}

static int der_crl_extensions(unsigned char **p, unsigned char *start, const unsigned char key_id[20], unsigned long long number) {
    size_t len = 0;
    unsigned char scratch[64];
    unsigned char *q = scratch + sizeof scratch;

    unsigned char be[8];
    for (int i = 0; i < 8; i++) be[i] = (unsigned char)(number >> (56 - 8 * i));
    int n = der_positive_integer(&q, scratch, be, 8);
    if (n < 0) return n;
    VF_DER(vf_der_extension(p, start, MBEDTLS_OID_CRL_NUMBER, MBEDTLS_OID_SIZE(MBEDTLS_OID_CRL_NUMBER), 0, q, (size_t)n));

    q = scratch + sizeof scratch;
    size_t aki = 0;
    int r;
    if ((r = mbedtls_asn1_write_raw_buffer(&q, scratch, key_id, 20)) < 0) return r;
    aki += (size_t)r;
    if ((r = vf_der_wrap(&q, scratch, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 0, 20)) < 0) return r;
    aki += (size_t)r;
    if ((r = vf_der_sequence(&q, scratch, aki)) < 0) return r;
    aki += (size_t)r;
    VF_DER(vf_der_extension(p, start, MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER, MBEDTLS_OID_SIZE(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER), 0,
                         q, aki));
    VF_DER(vf_der_sequence(p, start, len));
    VF_DER(vf_der_wrap(p, start, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 0, len));
    return (int)len;
}

/* TBSCertList, RFC 5280 5.1. */
static int der_tbs_cert_list(unsigned char **p, unsigned char *start, const mbedtls_x509_crt *ca_crt, const unsigned char key_id[20],
                             const vf_pki_revoked *e, int n_entries, unsigned long long number, long long this_update,
                             long long next_update) {
    size_t len = 0;
    VF_DER(der_crl_extensions(p, start, key_id, number));
    if (n_entries > 0) {
        size_t list = 0;
        for (int i = n_entries - 1; i >= 0; i--) {
            size_t one = 0;
            int r;
            if ((r = vf_der_time(p, start, e[i].revoked_unix)) < 0) return r;
            one += (size_t)r;
            if ((r = mbedtls_asn1_write_raw_buffer(p, start, e[i].serial, e[i].serial_len)) < 0) return r;
            one += (size_t)r;
            if ((r = vf_der_wrap(p, start, MBEDTLS_ASN1_INTEGER, e[i].serial_len)) < 0) return r;
            one += (size_t)r;
            if ((r = vf_der_sequence(p, start, one)) < 0) return r;
            list += one + (size_t)r;
        }
        len += list;
        VF_DER(vf_der_sequence(p, start, list));
    }
    VF_DER(vf_der_time(p, start, next_update));
    VF_DER(vf_der_time(p, start, this_update));
    VF_DER(mbedtls_asn1_write_raw_buffer(p, start, ca_crt->subject_raw.p, ca_crt->subject_raw.len));
    VF_DER(vf_der_ecdsa_sha256(p, start));
    VF_DER(mbedtls_asn1_write_int(p, start, 1)); /* v2 */
    VF_DER(vf_der_sequence(p, start, len));
    return (int)len;
}

int vf_pki_crl_pem(const mbedtls_x509_crt *ca_crt, mbedtls_pk_context *ca_key, const vf_pki_revoked *entries, int n_entries,
                   unsigned long long crl_number, long long this_update, long long next_update, mbedtls_ctr_drbg_context *drbg,
                   char **pem, vf_error *err) {
    *pem = NULL;
    if (next_update <= this_update) return vf_fail(err, "revocation list next-update must be after this-update");
    unsigned char key_id[20];
    if (vf_der_key_id(ca_key, key_id, err) != 0) return -1;
    size_t cap = 1024 + (size_t)n_entries * 64;
    unsigned char *buf = malloc(cap);
    size_t pem_cap = cap * 2 + 256;
    char *out = malloc(pem_cap);
    if (!buf || !out) { free(buf); free(out); return vf_fail(err, "out of memory for a revocation list of %d entries", n_entries); }
    unsigned char *p = buf + cap;
    int n = der_tbs_cert_list(&p, buf, ca_crt, key_id, entries, n_entries, crl_number, this_update, next_update);
    int rc = n < 0 ? vf_der_fail(err, n, "encoding the revocation list")
                   : vf_der_sign_to_pem(p, (size_t)n, ca_key, drbg, "X509 CRL", out, pem_cap, err);
    free(buf);
    if (rc != 0) { free(out); return -1; }
    *pem = out;
    return 0;
}

/* cRLNumber out of the raw crlExtensions mbedtls kept: [0] { SEQUENCE OF Extension }. */
static int read_crl_number(const mbedtls_x509_buf *ext, unsigned long long *number) {
    *number = 0;
    if (ext->p == NULL || ext->len == 0) return 0;
    unsigned char *p = ext->p, *end = ext->p + ext->len;
    size_t len;
    if (*p == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 0)) {
        if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 0) != 0) return -1;
        end = p + len;
    }
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) return -1;
    end = p + len;
    while (p < end) {
        if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) return -1;
        unsigned char *ext_end = p + len;
        mbedtls_asn1_buf oid;
        if (mbedtls_asn1_get_tag(&p, ext_end, &oid.len, MBEDTLS_ASN1_OID) != 0) return -1;
        oid.p = p;
        p += oid.len;
        int critical = 0;
        if (p < ext_end && *p == MBEDTLS_ASN1_BOOLEAN && mbedtls_asn1_get_bool(&p, ext_end, &critical) != 0) return -1;
        if (mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0) return -1;
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_CRL_NUMBER, &oid) == 0) {
            size_t ilen;
            if (mbedtls_asn1_get_tag(&p, ext_end, &ilen, MBEDTLS_ASN1_INTEGER) != 0 || ilen == 0 || (p[0] & 0x80)) return -1;
            while (ilen > 1 && p[0] == 0) { p++; ilen--; }
            if (ilen > 8) return -1;
            for (size_t i = 0; i < ilen; i++) *number = (*number << 8) | p[i];
            return 0;
        }
        p = ext_end;
    }
    return 0;
}

int vf_pki_crl_entries(const mbedtls_x509_crl *crl, vf_pki_revoked **entries, int *n_entries, unsigned long long *crl_number,
                       vf_error *err) {
    *entries = NULL;
    *n_entries = 0;
    *crl_number = 0;
    if (crl->version == 0) return 0;
    if (read_crl_number(&crl->crl_ext, crl_number) != 0) return vf_fail(err, "revocation list has a malformed cRLNumber");
    int count = 0;
    for (const mbedtls_x509_crl_entry *e = &crl->entry; e && e->raw.p; e = e->next) count++;
    if (count == 0) return 0;
    vf_pki_revoked *out = calloc((size_t)count, sizeof *out);
    if (!out) return vf_fail(err, "out of memory for %d revocation entries", count);
    int i = 0;
    for (const mbedtls_x509_crl_entry *e = &crl->entry; e && e->raw.p; e = e->next, i++) {
        if (e->serial.len == 0 || e->serial.len > sizeof out[i].serial) {
            free(out);
            return vf_fail(err, "revocation entry %d has a serial of %zu bytes", i, e->serial.len);
        }
        memcpy(out[i].serial, e->serial.p, e->serial.len);
        out[i].serial_len = e->serial.len;
        out[i].revoked_unix = vf_pki_time_to_unix(&e->revocation_date);
    }
    *entries = out;
    *n_entries = count;
    return 0;
}

int vf_pki_serial_from_hex(const char *hex, unsigned char *out, size_t out_size, size_t *out_len, vf_error *err) {
    const char *s = hex;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s += 2;
    unsigned char tmp[64];
    size_t nibbles = 0;
    for (const char *c = s; *c; c++) {
        if (*c == ':') continue;
        int v = (*c >= '0' && *c <= '9') ? *c - '0' : (*c >= 'a' && *c <= 'f') ? *c - 'a' + 10 : (*c >= 'A' && *c <= 'F') ? *c - 'A' + 10 : -1;
        if (v < 0) return vf_fail(err, "serial '%s' is not hexadecimal", hex);
        if (nibbles >= 2 * sizeof tmp) return vf_fail(err, "serial '%s' is too long", hex);
        tmp[nibbles / 2] = (unsigned char)((nibbles & 1) ? (tmp[nibbles / 2] | v) : (v << 4));
        nibbles++;
    }
    if (nibbles == 0) return vf_fail(err, "serial is empty");
    /* An odd digit count means the first digit stands alone: shift right one nibble. */
    size_t n = (nibbles + 1) / 2;
    if (nibbles & 1) {
        for (size_t i = n; i-- > 0;) {
            unsigned char lo = tmp[i] >> 4, hi = i > 0 ? (unsigned char)(tmp[i - 1] & 0x0f) : 0;
            tmp[i] = (unsigned char)((hi << 4) | lo);
        }
    }
    const unsigned char *b = tmp;
    while (n > 1 && b[0] == 0) { b++; n--; }
    size_t need = n + ((b[0] & 0x80) ? 1 : 0);
    if (need > out_size || need > 20) return vf_fail(err, "serial '%s' is longer than the 20 bytes RFC 5280 allows", hex);
    size_t o = 0;
    if (b[0] & 0x80) out[o++] = 0;
    memcpy(out + o, b, n);
    *out_len = need;
    return 0;
}
