/* sha256: the one SHA-256 of the project (fingerprints, checksums of state
 * files, transcript digests), over mbedTLS.  mbedTLS 2.28 (Debian 12) names
 * its functions mbedtls_sha256_*_ret, 3.x drops the suffix: this wrapper is
 * the only place that knows. */
#ifndef VF_UTIL_SHA256_H
#define VF_UTIL_SHA256_H

#include <stddef.h>

#include <mbedtls/sha256.h>

typedef struct vf_sha256_ctx {
    mbedtls_sha256_context ctx;
} vf_sha256_ctx;

void vf_sha256_begin(vf_sha256_ctx *h);
void vf_sha256_add(vf_sha256_ctx *h, const void *data, size_t len);
/* Writes the digest and frees the context. */
void vf_sha256_end(vf_sha256_ctx *h, unsigned char out[32]);
void vf_sha256(const void *data, size_t len, unsigned char out[32]);
/* 64 lowercase hex digits and a NUL. */
void vf_sha256_to_hex(const unsigned char digest[32], char hex[65]);

#endif
