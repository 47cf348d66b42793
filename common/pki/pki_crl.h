/* pki_crl: writing the federation's certificate revocation list (RFC 5280
 * section 5, v2, signed by the CA with ECDSA SHA-256) and reading back what an
 * existing list holds, so revoking one more certificate keeps the earlier
 * entries.  mbedTLS 2.28 parses CRLs but cannot write them. */
#ifndef VF_PKI_CRL_H
#define VF_PKI_CRL_H

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include "util/vf_error.h"

typedef struct vf_pki_revoked {
    unsigned char serial[32]; /* DER INTEGER content, exactly as in the certificate */
    size_t serial_len;
    long long revoked_unix;
} vf_pki_revoked;

/* Encodes and signs a CRL: issuer = the CA's subject (byte for byte),
 * thisUpdate/nextUpdate as given, the entries in order, and the extensions
 * authorityKeyIdentifier and cRLNumber.  *pem is malloc'ed, NUL-terminated. */
int vf_pki_crl_pem(const mbedtls_x509_crt *ca_crt, mbedtls_pk_context *ca_key, const vf_pki_revoked *entries, int n_entries,
                   unsigned long long crl_number, long long this_update, long long next_update, mbedtls_ctr_drbg_context *drbg,
                   char **pem, vf_error *err);

/* The entries and the cRLNumber (0 when absent) of a parsed list; *entries is
 * malloc'ed (NULL when there are none). */
int vf_pki_crl_entries(const mbedtls_x509_crl *crl, vf_pki_revoked **entries, int *n_entries, unsigned long long *crl_number,
                       vf_error *err);

/* Serial text (hex, optional "0x" and ':' separators) to DER INTEGER
 * content as a positive number, the form certificates carry. */
int vf_pki_serial_from_hex(const char *hex, unsigned char *out, size_t out_size, size_t *out_len, vf_error *err);

#endif
