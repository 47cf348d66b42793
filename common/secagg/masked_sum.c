/* masked_sum: fixed point in Z_2^64, the ChaCha20 mask streams and their
 * signed sum over a party's peers (see masked_sum.h). */
#include "secagg/masked_sum.h"

#include <math.h>
#include <mbedtls/chacha20.h>
#include <mbedtls/platform_util.h>
#include <string.h>

#include "util/sha256.h"

#define NONCE_LABEL "vflclip mask nonce v1"
#define FX_LIMIT 8388608.0 /* 2^(63 - VF_FX_FRAC_BITS) */
#define STREAM_BLOCK 4096  /* keystream bytes made at a time (on the stack) */

_Static_assert(VF_FX_FRAC_BITS == 40, "FX_LIMIT is 2^(63 - VF_FX_FRAC_BITS)");

static int fx_one(double x, size_t i, uint64_t *out, const char *what, vf_error *err) {
    if (!isfinite(x)) return vf_fail(err, "%s[%zu] = %g is not a finite number", what ? what : "value", i, x);
    if (!(fabs(x) < FX_LIMIT))
        return vf_fail(err, "%s[%zu] = %g is outside the fixed-point range (|x| < 2^%d)", what ? what : "value", i, x,
                       63 - VF_FX_FRAC_BITS);
    /* x * 2^40 is exact and below 2^63 in magnitude; llround rounds half away from zero. */
    long long q = llround(ldexp(x, VF_FX_FRAC_BITS));
    *out = (uint64_t)q;
    return 0;
}

int vf_fx_encode(const double *x, size_t n, uint64_t *out, const char *what, vf_error *err) {
    for (size_t i = 0; i < n; i++)
        if (fx_one(x[i], i, &out[i], what, err) != 0) return -1;
    return 0;
}

int vf_fx_encode_f(const float *x, size_t n, uint64_t *out, const char *what, vf_error *err) {
    for (size_t i = 0; i < n; i++)
        if (fx_one((double)x[i], i, &out[i], what, err) != 0) return -1;
    return 0;
}

void vf_fx_decode(const uint64_t *in, size_t n, double *x) {
    for (size_t i = 0; i < n; i++) x[i] = ldexp((double)(int64_t)in[i], -VF_FX_FRAC_BITS);
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

int vf_mask_nonce_bytes(const vf_mask_nonce *nonce, uint8_t out[VF_MASK_NONCE_LEN], vf_error *err) {
    if (!nonce || !nonce->run_id) return vf_fail(err, "mask nonce: no run id");
    static const unsigned char zero = 0;
    unsigned char ints[16], digest[32];
    put_le(ints, nonce->purpose, 4);
    put_le(ints + 4, nonce->step, 8);
    put_le(ints + 12, nonce->attempt, 4);
    vf_sha256_ctx h;
    vf_sha256_begin(&h);
    vf_sha256_add(&h, NONCE_LABEL, sizeof NONCE_LABEL - 1);
    vf_sha256_add(&h, nonce->run_id, strlen(nonce->run_id));
    vf_sha256_add(&h, &zero, 1);
    vf_sha256_add(&h, ints, sizeof ints);
    vf_sha256_end(&h, digest);
    memcpy(out, digest, VF_MASK_NONCE_LEN);
    return 0;
}

/* The keystream from block `counter` on runs out at block 2^32. */
static int stream_fits(uint32_t counter, uint64_t len, vf_error *err) {
    uint64_t room = ((uint64_t)1 << 32) - counter;
    if (len > room * 64)
        return vf_fail(err, "mask stream: %llu bytes from block %u run past ChaCha20's 2^32 blocks", (unsigned long long)len,
                       counter);
    return 0;
}

int vf_mask_stream(const uint8_t key[32], const uint8_t nonce[VF_MASK_NONCE_LEN], uint32_t counter, uint8_t *out, size_t len,
                   vf_error *err) {
    if (stream_fits(counter, len, err) != 0) return -1;
    memset(out, 0, len);
    int ret = mbedtls_chacha20_crypt(key, nonce, counter, len, out, out);
    if (ret != 0) return vf_fail(err, "mask stream: ChaCha20 failed (-0x%04x)", (unsigned)-ret);
    return 0;
}

int vf_mask_add(uint64_t *v, size_t n, const uint8_t seed[VF_MASK_SEED_LEN], int sign, const vf_mask_nonce *nonce,
                vf_error *err) {
    if (sign != 1 && sign != -1) return vf_fail(err, "mask: sign %d is neither +1 nor -1", sign);
    uint8_t iv[VF_MASK_NONCE_LEN];
    if (vf_mask_nonce_bytes(nonce, iv, err) != 0) return -1;
    if ((uint64_t)n > ((uint64_t)1 << 35)) /* 2^32 blocks of 8 words */
        return vf_fail(err, "mask: %zu words are more than one ChaCha20 stream holds (2^35)", n);

    mbedtls_chacha20_context ctx;
    mbedtls_chacha20_init(&ctx);
    unsigned char buf[STREAM_BLOCK];
    int ret = mbedtls_chacha20_setkey(&ctx, seed);
    if (ret == 0) ret = mbedtls_chacha20_starts(&ctx, iv, 0);
    for (size_t done = 0; ret == 0 && done < n;) {
        size_t words = n - done < STREAM_BLOCK / 8 ? n - done : STREAM_BLOCK / 8;
        memset(buf, 0, words * 8);
        ret = mbedtls_chacha20_update(&ctx, words * 8, buf, buf);
        if (ret != 0) break;
        uint64_t *dst = v + done;
        for (size_t i = 0; i < words; i++) {
            const unsigned char *p = buf + 8 * i;
            uint64_t w = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
                         (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
            dst[i] = sign > 0 ? dst[i] + w : dst[i] - w;
        }
        done += words;
    }
    mbedtls_platform_zeroize(buf, sizeof buf);
    mbedtls_chacha20_free(&ctx);
    if (ret != 0) return vf_fail(err, "mask: ChaCha20 failed (-0x%04x)", (unsigned)-ret);
    return 0;
}

int vf_mask_vector(uint64_t *v, size_t n, const vf_mask_key *k, const char *const *peer_names,
                   const uint8_t (*peer_pubs)[VF_MASK_PUB_LEN], int n_peers, const vf_mask_nonce *nonce, vf_error *err) {
    uint8_t iv[VF_MASK_NONCE_LEN];
    if (n_peers < 0) return vf_fail(err, "mask: %d peers", n_peers);
    if (vf_mask_nonce_bytes(nonce, iv, err) != 0) return -1;
    /* Checked before v is touched: a peer listed twice would add its mask
     * twice and the masks would no longer cancel. */
    for (int j = 0; j < n_peers; j++) {
        if (!peer_names[j]) return vf_fail(err, "mask: peer %d has no name", j);
        for (int i = 0; i < j; i++)
            if (strcmp(peer_names[i], peer_names[j]) == 0) return vf_fail(err, "mask: peer '%s' is listed twice", peer_names[j]);
    }
    for (int j = 0; j < n_peers; j++) {
        int order = strcmp(k->name, peer_names[j]);
        if (order == 0) continue;
        uint8_t seed[VF_MASK_SEED_LEN];
        int rc = vf_mask_pair_seed(k, peer_names[j], peer_pubs[j], seed, err);
        if (rc == 0) rc = vf_mask_add(v, n, seed, order < 0 ? 1 : -1, nonce, err);
        mbedtls_platform_zeroize(seed, sizeof seed);
        if (rc != 0) return -1;
    }
    return 0;
}

void vf_masked_sum_add(uint64_t *sum, const uint64_t *v, size_t n) {
    for (size_t i = 0; i < n; i++) sum[i] += v[i];
}
