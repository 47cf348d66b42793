/* test_rpc_wire: the gRPC framing pieces of common/rpc that need no socket:
 * the length-prefixed message decoder fed at every split point and with
 * corrupt prefixes (oversized, compressed, truncated), grpc-timeout parsing
 * (the units and limits of gRPC's PROTOCOL-HTTP2.md), grpc-message
 * percent-encoding, and the server's HTTP/2 path driven without TLS through
 * the fuzzing entry (a malformed preface must end the connection cleanly). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rpc/rpc_internal.h"
#include "util/log.h"

typedef struct got {
    int n;
    size_t len[8];
    uint8_t first[8];
} got;

static void on_msg(void *ctx, const uint8_t *data, size_t len) {
    got *g = ctx;
    if (g->n < 8) {
        g->len[g->n] = len;
        g->first[g->n] = len ? data[0] : 0;
    }
    g->n++;
}

/* three messages of 0, 3 and 300 bytes in one stream of bytes */
static size_t make_stream(uint8_t *out) {
    size_t o = 0, sizes[3] = {0, 3, 300};
    for (int m = 0; m < 3; m++) {
        out[o++] = 0;
        out[o++] = 0;
        out[o++] = 0;
        out[o++] = (uint8_t)(sizes[m] >> 8);
        out[o++] = (uint8_t)sizes[m];
        for (size_t i = 0; i < sizes[m]; i++) out[o++] = (uint8_t)(m * 50 + 1);
    }
    return o;
}

static void test_decoder_every_split(void **state) {
    uint8_t s[400];
    size_t n = make_stream(s);
    for (size_t cut = 0; cut <= n; cut++) {
        vf_grpc_decoder d = {.max_len = 1000};
        got g = {0};
        char e[128];
        size_t used;
        assert_int_equal(vf_grpc_decoder_feed(&d, s, cut, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
        assert_int_equal(used, cut);
        assert_int_equal(vf_grpc_decoder_feed(&d, s + cut, n - cut, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
        assert_int_equal(g.n, 3);
        assert_int_equal(g.len[0], 0);
        assert_int_equal(g.len[1], 3);
        assert_int_equal(g.first[1], 51);
        assert_int_equal(g.len[2], 300);
        assert_int_equal(g.first[2], 101);
        assert_false(vf_grpc_decoder_partial(&d));
        vf_grpc_decoder_free(&d);
    }
}

static void stop_after_first(void *ctx, const uint8_t *data, size_t len) {
    int *stop = ctx;
    *stop = 1;
}

static void test_decoder_stops_when_paused(void **state) {
    uint8_t s[400];
    size_t n = make_stream(s), used;
    vf_grpc_decoder d = {.max_len = 1000};
    int stop = 0;
    char e[128];
    assert_int_equal(vf_grpc_decoder_feed(&d, s, n, stop_after_first, &stop, &stop, &used, e, sizeof e), VF_GRPC_OK);
    assert_int_equal(used, 5); /* only the empty first message was taken */
    vf_grpc_decoder_free(&d);
}

static void test_decoder_rejects_corrupt_prefixes(void **state) {
    char e[128];
    size_t used;
    got g = {0};
    /* announces 2^32-1 bytes with a 1000-byte limit: refused at the prefix, nothing buffered */
    const uint8_t big[] = {0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3};
    vf_grpc_decoder d = {.max_len = 1000};
    assert_int_equal(vf_grpc_decoder_feed(&d, big, sizeof big, on_msg, &g, NULL, &used, e, sizeof e),
                     VF_GRPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e, "larger than max"));
    assert_int_equal(d.buf_cap, 0);
    vf_grpc_decoder_free(&d);
    /* compressed flag without negotiated compression */
    const uint8_t comp[] = {1, 0, 0, 0, 1, 'x'};
    vf_grpc_decoder d2 = {.max_len = 1000};
    assert_int_equal(vf_grpc_decoder_feed(&d2, comp, sizeof comp, on_msg, &g, NULL, &used, e, sizeof e),
                     VF_GRPC_INTERNAL);
    vf_grpc_decoder_free(&d2);
    /* truncated: the prefix promises 10 bytes, 4 arrive */
    const uint8_t trunc[] = {0, 0, 0, 0, 10, 1, 2, 3, 4};
    vf_grpc_decoder d3 = {.max_len = 1000};
    assert_int_equal(vf_grpc_decoder_feed(&d3, trunc, sizeof trunc, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
    assert_true(vf_grpc_decoder_partial(&d3));
    assert_int_equal(g.n, 0);
    vf_grpc_decoder_free(&d3);
}

/* Two decoders share a pool of 300000 bytes: each partial message is charged
 * its whole reassembly buffer; one that would pass the pool is refused with
 * RESOURCE_EXHAUSTED before anything is allocated; a large buffer is given
 * back once its message is delivered, and freeing a decoder returns the rest. */
static void test_decoder_pool_bounds_partial_messages(void **state) {
    vf_grpc_pool pool = {.used = 0, .max = 300000};
    vf_grpc_decoder a = {.max_len = 1 << 20, .pool = &pool}, b = {.max_len = 1 << 20, .pool = &pool};
    uint8_t hdr[5] = {0, 0, 0x02, 0x00, 0x00}; /* 131072 bytes announced */
    uint8_t body[1000];
    memset(body, 7, sizeof body);
    got g = {0};
    size_t used;
    char e[256];
    assert_int_equal(vf_grpc_decoder_feed(&a, hdr, 5, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
    assert_int_equal(vf_grpc_decoder_feed(&a, body, sizeof body, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
    assert_int_equal(pool.used, 131072);
    assert_true(vf_grpc_decoder_partial(&a));
    assert_int_equal(vf_grpc_decoder_feed(&b, hdr, 5, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
    assert_int_equal(vf_grpc_decoder_feed(&b, body, sizeof body, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
    assert_int_equal(pool.used, 2 * 131072);
    /* a third such message does not fit */
    vf_grpc_decoder c = {.max_len = 1 << 20, .pool = &pool};
    uint8_t both[5 + 1000];
    memcpy(both, hdr, 5);
    memcpy(both + 5, body, sizeof body);
    assert_int_equal(vf_grpc_decoder_feed(&c, both, sizeof both, on_msg, &g, NULL, &used, e, sizeof e),
                     VF_GRPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e, "receive buffers full"));
    assert_null(c.buf);
    assert_int_equal(pool.used, 2 * 131072);
    /* a's message completes: delivered, its 128 KiB buffer given back */
    uint8_t *rest = malloc(131072 - 1000);
    memset(rest, 7, 131072 - 1000);
    assert_int_equal(vf_grpc_decoder_feed(&a, rest, 131072 - 1000, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
    free(rest);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.len[0], 131072);
    assert_false(vf_grpc_decoder_partial(&a));
    assert_null(a.buf);
    assert_int_equal(pool.used, 131072);
    /* small messages keep their buffer (no allocation per message) and stay charged */
    uint8_t small[5 + 100] = {0, 0, 0, 0, 100};
    assert_int_equal(vf_grpc_decoder_feed(&a, small, 60, on_msg, &g, NULL, &used, e, sizeof e), VF_GRPC_OK);
    assert_int_equal(vf_grpc_decoder_feed(&a, small + 60, sizeof small - 60, on_msg, &g, NULL, &used, e, sizeof e),
                     VF_GRPC_OK);
    assert_int_equal(g.n, 2);
    assert_non_null(a.buf);
    assert_int_equal(pool.used, 131072 + 4096);
    vf_grpc_decoder_free(&a);
    vf_grpc_decoder_free(&b);
    vf_grpc_decoder_free(&c);
    assert_int_equal(pool.used, 0);
}

static void test_grpc_timeout(void **state) {
    /* PROTOCOL-HTTP2.md: TimeoutValue = 1*8 DIGIT, TimeoutUnit = H M S m u n */
    struct { const char *v; long long ms; } ok[] = {
        {"1H", 3600000}, {"2M", 120000}, {"3S", 3000}, {"250m", 250}, {"1500u", 2}, {"1n", 1},
        {"0m", 0},       {"99999999m", 99999999},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(vf_grpc_timeout_parse(ok[i].v, strlen(ok[i].v)), ok[i].ms);
    const char *bad[] = {"", "m", "5", "123456789m", "1x", "-1m", "1 m", "1.5S"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(vf_grpc_timeout_parse(bad[i], strlen(bad[i])), -1);
    char buf[32];
    long long samples[] = {0, 1, 999, 123456, 99999999, 100000000, 86400000LL * 400};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        vf_grpc_timeout_format(samples[i], buf, sizeof buf);
        long long back = vf_grpc_timeout_parse(buf, strlen(buf));
        assert_true(back >= samples[i] && strlen(buf) <= 9); /* never shorter than asked, always valid */
    }
}

static void test_grpc_message_encoding(void **state) {
    char enc[256], dec[256];
    /* PROTOCOL-HTTP2.md: percent-encode bytes outside 0x20..0x7E, and '%' */
    vf_grpc_message_encode("a%b \xc3\xa9\n", enc, sizeof enc);
    assert_string_equal(enc, "a%25b %C3%A9%0A");
    vf_grpc_message_decode(enc, strlen(enc), dec, sizeof dec);
    assert_string_equal(dec, "a%b \xc3\xa9\n");
    /* malformed escapes are kept as they are */
    vf_grpc_message_decode("100%", 4, dec, sizeof dec);
    assert_string_equal(dec, "100%");
    vf_grpc_message_decode("%zz%4", 5, dec, sizeof dec);
    assert_string_equal(dec, "%zz%4");
    /* never writes past the buffer */
    char small[8];
    vf_grpc_message_encode("\xff\xff\xff\xff\xff", small, sizeof small);
    assert_true(strlen(small) < sizeof small);
}

static void test_server_h2_without_tls(void **state) {
    static const vf_rpc_method m[] = {{"/x.Y/Z", VF_ROLES_ALL, NULL, NULL, NULL, NULL, NULL, NULL}};
    vf_log_set_level(VF_ERROR + 1);
    vf_rpc_server *s = vf_rpc_fuzz_server_new(m, 1, 1000);
    assert_non_null(s);
    vf_rpc_conn *c = vf_rpc_fuzz_conn_new(s, VF_ROLE_IMAGE_PARTY);
    assert_non_null(c);
    vf_rpc_fuzz_feed(c, (const uint8_t *)"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27); /* not HTTP/2 */
    assert_int_equal(c->state, CONN_CLOSED);
    assert_non_null(strstr(c->close_reason, "HTTP/2"));
    vf_rpc_fuzz_conn_free(c);
    vf_rpc_fuzz_server_free(s);
    vf_log_set_level(VF_INFO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decoder_every_split),
        cmocka_unit_test(test_decoder_stops_when_paused),
        cmocka_unit_test(test_decoder_rejects_corrupt_prefixes),
        cmocka_unit_test(test_decoder_pool_bounds_partial_messages),
        cmocka_unit_test(test_grpc_timeout),
        cmocka_unit_test(test_grpc_message_encoding),
        cmocka_unit_test(test_server_h2_without_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
