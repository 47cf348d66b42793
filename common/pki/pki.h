/* pki: who a peer is, read from its certificate, and the federation's
 * revocation list.  This is the part of the trust layer the TLS code calls on
 * every handshake; issuing certificates lives in pki_issue.h, writing the
 * revocation list in pki_crl.h.
 *
 * Identity convention (docs/pki.md): every participant certificate has the
 * subject "CN=<name>, OU=<role>, O=vflclip federation", where <role> is one of
 * aggregator, image-party, knowledge-party, admin and <name> is 1..127 bytes
 * of [A-Za-z0-9._-].  Exactly one CN, one OU and one O, so a certificate
 * cannot be read two ways. */
#ifndef VF_PKI_H
#define VF_PKI_H

#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include "util/vf_error.h"

#define VF_PKI_ORGANIZATION "vflclip federation"

typedef enum {
    VF_ROLE_NONE = 0,
    VF_ROLE_AGGREGATOR,
    VF_ROLE_IMAGE_PARTY,
    VF_ROLE_KNOWLEDGE_PARTY,
    VF_ROLE_ADMIN
} vf_role;

/* "aggregator", "image-party", "knowledge-party", "admin"; "none" otherwise. */
const char *vf_role_name(vf_role r);
/* Exact (case-sensitive) inverse of vf_role_name for the four real roles. */
int vf_role_parse(const char *s, vf_role *r);

typedef struct vf_peer_identity {
    vf_role role;
    char name[128];         /* the subject CN */
    char serial_hex[64];    /* upper-case hex, no leading zero bytes, as `openssl x509 -serial` prints it */
    long long not_after_unix;
} vf_peer_identity;

/* Reads role, name, serial and expiry from a participant certificate.  Fails
 * (without touching *id's role) on a missing or repeated CN/OU/O, an unknown
 * role, a wrong organisation, or a name that is too long or has characters
 * outside [A-Za-z0-9._-].  Does not verify the chain: call it on a
 * certificate the TLS layer already verified against the federation CA. */
int vf_pki_identity_from_crt(const mbedtls_x509_crt *crt, vf_peer_identity *id, vf_error *err);

/* Loads a revocation list, PEM or DER, into an mbedtls_x509_crl the caller has
 * NOT initialised (this function calls mbedtls_x509_crl_init; the caller
 * always calls mbedtls_x509_crl_free, also after a failure).  A NULL or empty
 * path, or a file that does not exist, is "no revocation list": returns 0 and
 * leaves crl empty (crl->version == 0), which mbedtls_x509_crt_verify treats
 * as revoking nothing.  A file that exists but does not parse is an error.
 * Logs a warning when the list's next-update is past or less than 7 days
 * away: mbedtls rejects every peer once the list has expired
 * (MBEDTLS_X509_BADCRL_EXPIRED), so the operator must re-sign it in time
 * (`vflclip cert crl`). */
int vf_pki_load_crl(const char *path, mbedtls_x509_crl *crl, vf_error *err);

/* Checks that every list in crl is signed by ca and not expired; the TLS layer
 * can call it after a reload to refuse a bad list with a clear message
 * instead of failing every handshake with BADCRL_NOT_TRUSTED. */
int vf_pki_check_crl(const mbedtls_x509_crl *crl, const mbedtls_x509_crt *ca, const char *path, vf_error *err);

/* Time helpers shared by the pki files. */
long long vf_pki_time_to_unix(const mbedtls_x509_time *t);
/* Upper-case hex of a DER INTEGER's content without leading zero bytes
 * ("0" for zero).  out must hold 2*len+1 bytes. */
void vf_pki_serial_to_hex(const unsigned char *p, size_t len, char *out, size_t out_size);

#endif
