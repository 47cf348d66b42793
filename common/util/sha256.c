/* sha256: SHA-256 over mbedTLS 2.28 or 3.x (see sha256.h). */
#include "util/sha256.h"

#include <mbedtls/version.h>
#include <stdio.h>

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define SHA256_STARTS mbedtls_sha256_starts
#define SHA256_UPDATE mbedtls_sha256_update
#define SHA256_FINISH mbedtls_sha256_finish
#else
#define SHA256_STARTS mbedtls_sha256_starts_ret
#define SHA256_UPDATE mbedtls_sha256_update_ret
#define SHA256_FINISH mbedtls_sha256_finish_ret
#endif

void vf_sha256_begin(vf_sha256_ctx *h) {
    mbedtls_sha256_init(&h->ctx);
    SHA256_STARTS(&h->ctx, 0);
}

void vf_sha256_add(vf_sha256_ctx *h, const void *data, size_t len) {
    if (len) SHA256_UPDATE(&h->ctx, data, len);
}

void vf_sha256_end(vf_sha256_ctx *h, unsigned char out[32]) {
    SHA256_FINISH(&h->ctx, out);
    mbedtls_sha256_free(&h->ctx);
}

void vf_sha256(const void *data, size_t len, unsigned char out[32]) {
    vf_sha256_ctx h;
    vf_sha256_begin(&h);
    vf_sha256_add(&h, data, len);
    vf_sha256_end(&h, out);
}

void vf_sha256_to_hex(const unsigned char digest[32], char hex[65]) {
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}
