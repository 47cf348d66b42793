/* grpc_wire: the gRPC-over-HTTP/2 encodings that need no connection: status
 * names, the length-prefixed message decoder, grpc-timeout and grpc-message
 * percent-encoding.  Pure functions; the fuzz target drives the decoder. */
#include "rpc/rpc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *vf_grpc_status_name(int s) {
    static const char *names[] = {"OK",
                                  "CANCELLED",
                                  "UNKNOWN",
                                  "INVALID_ARGUMENT",
                                  "DEADLINE_EXCEEDED",
                                  "NOT_FOUND",
                                  "ALREADY_EXISTS",
                                  "PERMISSION_DENIED",
                                  "RESOURCE_EXHAUSTED",
                                  "FAILED_PRECONDITION",
                                  "ABORTED",
                                  "OUT_OF_RANGE",
                                  "UNIMPLEMENTED",
                                  "INTERNAL",
                                  "UNAVAILABLE",
                                  "DATA_LOSS",
                                  "UNAUTHENTICATED"};
    return s >= 0 && s <= 16 ? names[s] : "UNKNOWN_CODE";
}

/* A buffer for a message of `need` bytes; grows it only when a message is
 * larger than the one kept (no allocation per message for messages up to
 * VF_GRPC_KEEP_BUF).  Charges the growth to the pool, refusing what would pass
 * its max. */
static int decoder_reserve(vf_grpc_decoder *d, size_t need, char *errbuf, size_t errsize) {
    if (need <= d->buf_cap) return VF_GRPC_OK;
    size_t cap = d->buf_cap ? d->buf_cap : 4096;
    while (cap < need) cap *= 2;
    if (cap > d->max_len && need <= d->max_len) cap = d->max_len;
    if (d->pool && d->pool->used - d->buf_cap + cap > d->pool->max) {
        snprintf(errbuf, errsize,
                 "receive buffers full: a %zu-byte message would take the partly received messages of all calls to "
                 "%zu bytes (limit %zu)",
                 need, d->pool->used - d->buf_cap + cap, d->pool->max);
        return VF_GRPC_RESOURCE_EXHAUSTED;
    }
    uint8_t *p = realloc(d->buf, cap);
    if (!p) {
        snprintf(errbuf, errsize, "out of memory for a %zu-byte message", need);
        return VF_GRPC_INTERNAL;
    }
    if (d->pool) d->pool->used = d->pool->used - d->buf_cap + cap;
    d->buf = p;
    d->buf_cap = cap;
    return VF_GRPC_OK;
}

static void decoder_release(vf_grpc_decoder *d) {
    if (d->pool) d->pool->used -= d->buf_cap;
    free(d->buf);
    d->buf = NULL;
    d->buf_cap = 0;
}

int vf_grpc_decoder_feed(vf_grpc_decoder *d, const uint8_t *data, size_t len, vf_grpc_on_msg on_msg, void *ctx,
                         const int *stop_flag, size_t *used, char *errbuf, size_t errsize) {
    const uint8_t *start = data;
    *used = 0;
    while (len > 0) {
        if (d->hdr_have < 5) {
            size_t take = 5 - (size_t)d->hdr_have;
            if (take > len) take = len;
            memcpy(d->hdr + d->hdr_have, data, take);
            d->hdr_have += (int)take;
            data += take;
            len -= take;
            if (d->hdr_have < 5) break;
            if (d->hdr[0] != 0) {
                snprintf(errbuf, errsize, "received a compressed message (flag %u) but no compression was negotiated",
                         d->hdr[0]);
                return VF_GRPC_INTERNAL;
            }
            d->msg_len = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 | (uint32_t)d->hdr[3] << 8 | d->hdr[4];
            if (d->msg_len > d->max_len) {
                snprintf(errbuf, errsize, "received message larger than max (%u vs. %zu)", d->msg_len, d->max_len);
                return VF_GRPC_RESOURCE_EXHAUSTED;
            }
            d->buf_have = 0;
        }
        size_t want = d->msg_len - d->buf_have;
        if (d->buf_have == 0 && len >= want) {
            /* whole message in this chunk: deliver in place */
            d->hdr_have = 0;
            on_msg(ctx, data, want);
            data += want;
            len -= want;
        } else {
            size_t take = want < len ? want : len;
            int rc = decoder_reserve(d, d->msg_len, errbuf, errsize);
            if (rc != VF_GRPC_OK) return rc;
            memcpy(d->buf + d->buf_have, data, take);
            d->buf_have += take;
            data += take;
            len -= take;
            if (d->buf_have < d->msg_len) break;
            d->hdr_have = 0;
            d->buf_have = 0;
            on_msg(ctx, d->buf, d->msg_len);
            /* a large buffer is not kept: an idle stream must not pin it */
            if (d->buf_cap > VF_GRPC_KEEP_BUF) decoder_release(d);
        }
        if (stop_flag && *stop_flag) break;
    }
    *used = (size_t)(data - start);
    return VF_GRPC_OK;
}

int vf_grpc_decoder_partial(const vf_grpc_decoder *d) { return d->hdr_have > 0; }

void vf_grpc_decoder_free(vf_grpc_decoder *d) {
    decoder_release(d);
    d->buf_have = 0;
    d->hdr_have = 0;
}

long long vf_grpc_timeout_parse(const char *v, size_t len) {
    /* TimeoutValue is 1..8 ASCII digits, then one unit letter. */
    if (len < 2 || len > 9) return -1;
    long long n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        n = n * 10 + (v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H': return n * 3600000LL;
    case 'M': return n * 60000LL;
    case 'S': return n * 1000LL;
    case 'm': return n;
    case 'u': return (n + 999) / 1000;
    case 'n': return (n + 999999) / 1000000;
    default: return -1;
    }
}

void vf_grpc_timeout_format(long long ms, char *out, size_t size) {
    if (ms < 0) ms = 0;
    if (ms < 100000000LL)
        snprintf(out, size, "%lldm", ms);
    else if (ms / 1000 < 100000000LL)
        snprintf(out, size, "%lldS", (ms + 999) / 1000);
    else
        snprintf(out, size, "%lldH", (ms / 3600000LL) < 99999999LL ? ms / 3600000LL + 1 : 99999999LL);
}

void vf_grpc_message_encode(const char *in, char *out, size_t size) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < size; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (size) out[o < size ? o : size - 1] = 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void vf_grpc_message_decode(const char *in, size_t len, char *out, size_t size) {
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < size; i++) {
        int h, l;
        if (in[i] == '%' && i + 2 < len && (h = hexval(in[i + 1])) >= 0 && (l = hexval(in[i + 2])) >= 0) {
            out[o++] = (char)(h << 4 | l);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    if (size) out[o] = 0;
}
