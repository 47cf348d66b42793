/* mask_key: who an image party shares pairwise masks with, and the seed of
 * each pair (secure aggregation, [run] loss_at = image-parties).
 *
 * Each image party makes a fresh X25519 key pair per connection and signs
 * its public half with its certificate key (the same key its TLS
 * certificate holds), over
 *     "vflclip mask key v1" || 0x00 || name || 0x00 || public key (32 bytes).
 * The aggregator relays every party's (name, public key, signature,
 * certificate DER) to the others.  A party accepts a peer's key only when
 * the certificate chains to the federation CA, is an image party's
 * certificate (OU=image-party) whose CN is the claimed name, and the
 * signature verifies: the aggregator relays the keys but cannot swap them.
 *
 * The pair's seed is HKDF-SHA256 of the X25519 shared secret, salt
 * "vflclip mask seed v1", info = the two (name, public key) pairs in name
 * order, so both ends derive the same 32 bytes whatever side they are on. */
#ifndef VF_SECAGG_MASK_KEY_H
#define VF_SECAGG_MASK_KEY_H

#include <stddef.h>
#include <stdint.h>
#include <mbedtls/x509_crt.h>

#include "util/vf_error.h"

#define VF_MASK_PUB_LEN 32
#define VF_MASK_SEED_LEN 32
#define VF_MASK_SIG_MAX 160     /* an ECDSA P-521 or RSA-1024 signature fits; longer keys are refused */

typedef struct vf_mask_key {
    uint8_t priv[32];                  /* X25519 scalar (kept in memory only) */
    uint8_t pub[VF_MASK_PUB_LEN];
    uint8_t sig[VF_MASK_SIG_MAX];      /* over the message above, by the certificate key */
    size_t sig_len;
    char name[128];
} vf_mask_key;

/* A fresh key pair for party `name`, signed with the private key in
 * key_path (PEM or DER, the party's TLS key).  Errors name the key file. */
int vf_mask_key_new(vf_mask_key *k, const char *name, const char *key_path, vf_error *err);
/* Wipes the private half. */
void vf_mask_key_wipe(vf_mask_key *k);
/* For tests and key import: k from a given X25519 scalar (32 bytes,
 * little-endian, clamped here as RFC 7748 says; k->priv keeps the clamped
 * form) and its public key; k->sig is left empty (sig_len 0). */
int vf_mask_key_from_private(vf_mask_key *k, const char *name, const uint8_t priv[32], vf_error *err);

/* A peer's key as the aggregator relays it. */
typedef struct vf_mask_peer {
    const char *name;
    const uint8_t *pub;
    size_t pub_len;
    const uint8_t *sig;
    size_t sig_len;
    const uint8_t *cert_der;
    size_t cert_len;
} vf_mask_peer;

/* Accepts p when its certificate chains to ca (the federation CA, already
 * parsed; no revocation list here: the TLS layer checks that on the
 * connection), is an image party's with CN == p->name (and, when it has a
 * keyUsage, digitalSignature), and p->sig verifies over p->name and p->pub
 * with the certificate's key.  Errors name the peer and the check that
 * failed ("image party 'b': mask key signature does not verify"). */
int vf_mask_peer_verify(const vf_mask_peer *p, mbedtls_x509_crt *ca, vf_error *err);

/* The 32-byte seed k shares with the peer (peer_name, peer_pub): HKDF as
 * above of X25519(k->priv, peer_pub).  Refuses the party's own name, a
 * wiped key, and a low-order peer key (an all-zero shared secret). */
int vf_mask_pair_seed(const vf_mask_key *k, const char *peer_name, const uint8_t peer_pub[VF_MASK_PUB_LEN],
                      uint8_t seed[VF_MASK_SEED_LEN], vf_error *err);

#endif
