/* fuzz_buf: a growing byte buffer for building fuzz inputs and seeds, and the
 * HTTP/2 framing the socketless gRPC targets (aggregator, admin) write. */
#ifndef VF_FUZZ_BUF_H
#define VF_FUZZ_BUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf { uint8_t *p; size_t n, cap; } buf;

static inline void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

/* One HTTP/2 frame: 9-byte header, then the payload. */
static inline void frame(buf *b, uint8_t type, uint8_t flags, uint32_t sid, const uint8_t *payload, size_t n) {
    uint8_t h[9] = {(uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n, type, flags,
                    (uint8_t)(sid >> 24), (uint8_t)(sid >> 16), (uint8_t)(sid >> 8), (uint8_t)sid};
    put(b, h, 9);
    put(b, payload, n);
}

/* An HPACK literal header field without indexing; name and value < 127 bytes. */
static inline void hpack_literal(buf *b, const char *name, const char *value) {
    uint8_t z = 0, nl = (uint8_t)strlen(name), vl = (uint8_t)strlen(value);
    put(b, &z, 1);
    put(b, &nl, 1);
    put(b, name, nl);
    put(b, &vl, 1);
    put(b, value, vl);
}

#endif
