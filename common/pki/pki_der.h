/* pki_der: the DER building blocks the certificate and revocation-list
 * writers share, on top of mbedtls/asn1write.h.
 *
 * Why not mbedtls_x509write_crt: mbedTLS 2.28 writes the ECDSA signature
 * AlgorithmIdentifier with a NULL parameter, which RFC 5758 forbids (Python
 * cryptography already warns that it will reject such certificates), and it
 * has no CRL writer at all.  So the to-be-signed parts are encoded here and
 * signed with mbedtls_pk_sign.
 *
 * Every writer follows mbedTLS's convention: *p starts at the end of a buffer
 * whose first byte is `start` and moves down; the return value is the number
 * of bytes written, or a negative mbedTLS error. */
#ifndef VF_PKI_DER_H
#define VF_PKI_DER_H

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/pk.h>
#include <stddef.h>

#include "util/vf_error.h"

/* Adds what one writer wrote to the local `len`; returns its error. */
#define VF_DER(call)             \
    do {                         \
        int r_ = (call);         \
        if (r_ < 0) return r_;   \
        len += (size_t)r_;       \
    } while (0)

/* SEQUENCE header around the content_len bytes already written. */
int vf_der_sequence(unsigned char **p, unsigned char *start, size_t content_len);
/* Header with any tag around the content_len bytes already written. */
int vf_der_wrap(unsigned char **p, unsigned char *start, unsigned char tag, size_t content_len);
/* UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 4.1.2.5). */
int vf_der_time(unsigned char **p, unsigned char *start, long long unix_time);
/* AlgorithmIdentifier ecdsa-with-SHA256 with the parameters absent. */
int vf_der_ecdsa_sha256(unsigned char **p, unsigned char *start);
/* Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
int vf_der_extension(unsigned char **p, unsigned char *start, const char *oid, size_t oid_len, int critical,
                     const unsigned char *value, size_t value_len);

/* "<what>: <mbedTLS's text for mbedtls_ret>" into err; returns -1. */
int vf_der_fail(vf_error *err, int mbedtls_ret, const char *what);

/* SHA-1 of the key's subjectPublicKey bits (RFC 5280 4.2.1.2 method 1). */
int vf_der_key_id(mbedtls_pk_context *key, unsigned char id[20], vf_error *err);

/* Signs tbs with key (ECDSA, SHA-256) and writes
 * SEQUENCE { tbs, ecdsa-with-SHA256, BIT STRING signature } as PEM with the
 * given label ("CERTIFICATE", "X509 CRL") into pem (NUL-terminated). */
int vf_der_sign_to_pem(const unsigned char *tbs, size_t tbs_len, mbedtls_pk_context *key, mbedtls_ctr_drbg_context *drbg,
                       const char *label, char *pem, size_t pem_size, vf_error *err);

#endif
