/* masked_sum: the vectors image parties send for a secure sum, and the
 * masks that make each one unreadable alone.
 *
 * A vector is n words of Z_2^64.  Real numbers go in as fixed point with
 * VF_FX_FRAC_BITS fractional bits (two's complement, so |x| < 2^(63 -
 * VF_FX_FRAC_BITS) and the sum of all parties' values must stay inside that
 * too); counts go in as they are.  Party i adds, for every other participant
 * j, the mask stream of the pair's seed: + when name_i < name_j (strcmp),
 * - otherwise, so the masks cancel in the sum of all participants' vectors
 * and the aggregator learns only the sum (mod 2^64).
 *
 * The mask stream is ChaCha20 (RFC 8439, mbedTLS) keyed by the pair's seed,
 * its 96-bit nonce the first 12 bytes of SHA-256("vflclip mask nonce v1" ||
 * run id || 0x00 || purpose || step || attempt) (integers little-endian,
 * 4, 8, 4 bytes), read as little-endian uint64 words.  A step that is redone
 * (a party dropped out) has a new attempt number, hence fresh masks. */
#ifndef VF_SECAGG_MASKED_SUM_H
#define VF_SECAGG_MASKED_SUM_H

#include <stddef.h>
#include <stdint.h>

#include "secagg/mask_key.h"
#include "util/vf_error.h"

#define VF_FX_FRAC_BITS 40

/* out[i] = round(x[i] * 2^VF_FX_FRAC_BITS) mod 2^64.  A non-finite value or
 * |x| >= 2^(63 - VF_FX_FRAC_BITS) is an error naming `what` and the index. */
int vf_fx_encode(const double *x, size_t n, uint64_t *out, const char *what, vf_error *err);
int vf_fx_encode_f(const float *x, size_t n, uint64_t *out, const char *what, vf_error *err);
/* x[i] = (int64_t)in[i] / 2^VF_FX_FRAC_BITS. */
void vf_fx_decode(const uint64_t *in, size_t n, double *x);

/* What a mask is for, so two secure sums of one step never share a stream. */
typedef enum { VF_MASK_PURPOSE_STEP = 1, VF_MASK_PURPOSE_EVAL = 2 } vf_mask_purpose;

typedef struct vf_mask_nonce {
    const char *run_id;
    uint32_t purpose;    /* vf_mask_purpose (with the split for an evaluation: purpose | split << 8) */
    uint64_t step;
    uint32_t attempt;
} vf_mask_nonce;

#define VF_MASK_NONCE_LEN 12

/* The ChaCha20 nonce above: the first 12 bytes of SHA-256("vflclip mask
 * nonce v1" || run_id || 0x00 || purpose (4 LE) || step (8 LE) || attempt
 * (4 LE)).  Fails when run_id is NULL. */
int vf_mask_nonce_bytes(const vf_mask_nonce *nonce, uint8_t out[VF_MASK_NONCE_LEN], vf_error *err);
/* len bytes of the ChaCha20 (RFC 8439) keystream of (key, nonce) from block
 * `counter` on (the masks start at block 0); fails past block 2^32. */
int vf_mask_stream(const uint8_t key[32], const uint8_t nonce[VF_MASK_NONCE_LEN], uint32_t counter, uint8_t *out, size_t len,
                   vf_error *err);

/* v (n) += sign * ChaCha20(seed, nonce) words, mod 2^64; sign is +1 or -1.
 * The stream is made 4 KiB at a time on the stack; n is at most 2^35 (one
 * ChaCha20 stream). */
int vf_mask_add(uint64_t *v, size_t n, const uint8_t seed[VF_MASK_SEED_LEN], int sign, const vf_mask_nonce *nonce,
                vf_error *err);

/* The whole masking of one party's vector: for each peer in peers (the
 * other participants; the party itself is skipped by name), derive the pair
 * seed from k and add its stream with the sign given by name order.  The
 * peers' keys must have passed vf_mask_peer_verify.  A missing run id or a
 * name listed twice fails before v is touched; a later failure (a peer key
 * X25519 refuses) leaves v partly masked: do not send it. */
int vf_mask_vector(uint64_t *v, size_t n, const vf_mask_key *k, const char *const *peer_names,
                   const uint8_t (*peer_pubs)[VF_MASK_PUB_LEN], int n_peers, const vf_mask_nonce *nonce, vf_error *err);

/* sum (n) += v (n) mod 2^64: what the aggregator does with each vector. */
void vf_masked_sum_add(uint64_t *sum, const uint64_t *v, size_t n);

#endif
