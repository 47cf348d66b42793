/* pki_issue: making keys and certificates for the federation (mbedTLS
 * x509write): the private CA and the participants' leaf certificates, with
 * the extensions docs/pki.md lists.  Everything here is ECDSA P-256 with
 * SHA-256 and a random 126-bit serial number. */
#ifndef VF_PKI_ISSUE_H
#define VF_PKI_ISSUE_H

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "pki/pki.h"
#include "util/vf_error.h"

#define VF_PKI_PEM_MAX 8192

/* The random generator every key, serial and signature draws from. */
typedef struct vf_pki_rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} vf_pki_rng;
int vf_pki_rng_init(vf_pki_rng *rng, vf_error *err);
void vf_pki_rng_free(vf_pki_rng *rng);
int vf_pki_random(vf_pki_rng *rng, unsigned char *buf, size_t len, vf_error *err);

/* A fresh ECDSA P-256 key; key must be mbedtls_pk_init'ed. */
int vf_pki_gen_key(mbedtls_pk_context *key, vf_pki_rng *rng, vf_error *err);
/* SEC1 PEM ("EC PRIVATE KEY") into buf (NUL-terminated). */
int vf_pki_key_pem(mbedtls_pk_context *key, char *buf, size_t size, vf_error *err);
/* Readers that name the file in their error; key/crt must be init'ed. */
int vf_pki_load_key(const char *path, mbedtls_pk_context *key, vf_error *err);
int vf_pki_load_crt(const char *path, mbedtls_x509_crt *crt, vf_error *err);

/* What a certificate says.  For the CA, role is VF_ROLE_NONE and name is its
 * CN; for a participant, role and name go into the subject as pki.h says.
 * dns/ips become subjectAltName entries (the aggregator's host names and
 * addresses); ips are dotted IPv4 or IPv6 text. */
typedef struct vf_pki_subject {
    vf_role role;
    const char *name;
    const char *const *dns;
    int n_dns;
    const char *const *ips;
    int n_ips;
    long long not_before_unix, not_after_unix;
} vf_pki_subject;

/* Self-signed CA: basicConstraints CA:TRUE (critical, pathlen 0), keyUsage
 * keyCertSign+cRLSign (critical), subject key identifier.  PEM into pem. */
int vf_pki_issue_ca(const vf_pki_subject *s, mbedtls_pk_context *ca_key, vf_pki_rng *rng, char *pem, size_t pem_size,
                    vf_error *err);
/* Participant certificate signed by the CA: basicConstraints CA:FALSE
 * (critical), keyUsage digitalSignature (critical), extendedKeyUsage
 * serverAuth for the aggregator and clientAuth for the others, SANs, subject
 * and authority key identifiers.  PEM into pem. */
int vf_pki_issue_leaf(const vf_pki_subject *s, mbedtls_pk_context *subject_key, const mbedtls_x509_crt *ca_crt,
                      mbedtls_pk_context *ca_key, vf_pki_rng *rng, char *pem, size_t pem_size, vf_error *err);

/* "CN=<name>, OU=<role>, O=vflclip federation" (or "CN=<name>, O=..." for
 * VF_ROLE_NONE); fails on a name outside [A-Za-z0-9._-] or over 127 bytes. */
int vf_pki_subject_string(vf_role role, const char *name, char *out, size_t size, vf_error *err);
/* A name pki.h accepts: 1..127 bytes of [A-Za-z0-9._-]. */
int vf_pki_name_ok(const char *name);

#endif
