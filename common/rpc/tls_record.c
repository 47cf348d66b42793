/* tls_record: the TLS 1.2 AES-GCM record layer (RFC 5246 + RFC 5288) for
 * application data, after mbedTLS has done the handshake.
 *
 * Why: mbedTLS 2.28 computes GHASH one 16-byte block at a time and moves
 * about 200 MB/s per core here (perf: 36% in mbedtls_aesni_gcm_mult), far
 * below the transport's 1 GB/s goal, while OpenSSL's libcrypto AES-GCM is
 * stitched AES-NI/PCLMUL/AVX code.  So mbedTLS keeps everything that decides
 * trust (handshake, certificate and CRL checks, cipher choice) and exports the
 * master secret; the keys are derived here with mbedTLS's own TLS PRF as RFC
 * 5246 6.3 says (key_block = PRF(master, "key expansion", server_random +
 * client_random) = client key, server key, client IV, server IV for AEAD
 * suites, which have no MAC keys), and records are sealed with libcrypto:
 *   nonce = implicit IV (4) || explicit nonce (8, = sequence number)
 *   AAD   = sequence number (8) || type (1) || version 3,3 (2) || length (2)
 *   record = type || 3,3 || length || explicit nonce || ciphertext || tag (16)
 * Sequence numbers continue from mbedTLS's counters after the Finished
 * messages.  When anything is unusual (no exported secret, a partly read
 * record inside mbedTLS) the connection simply stays on mbedTLS's records. */
#include "rpc/rpc_internal.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLAIN 16384
#define MAX_CIPHER (MAX_PLAIN + 256)
#define REC_HDR 5
#define EXPLICIT 8
#define TAG 16
#define H2_FRAME_HEADER 9

static _Thread_local vf_rpc_conn *handshaking_conn; /* whose handshake is running in this thread */

static int export_keys(void *unused, const unsigned char *ms, const unsigned char *kb, size_t maclen, size_t keylen,
                       size_t ivlen, const unsigned char client_random[32], const unsigned char server_random[32],
                       mbedtls_tls_prf_types prf) {
    vf_rpc_conn *c = handshaking_conn;
    if (!c) return 0;
    vf_tls_records *r = &c->rec;
    memcpy(r->master, ms, 48);
    memcpy(r->client_random, client_random, 32);
    memcpy(r->server_random, server_random, 32);
    r->prf = (int)prf;
    r->keylen = keylen;
    r->maclen = maclen;
    r->have_secret = 1;
    return 0;
}

void vf_tls_records_configure(mbedtls_ssl_config *conf) { mbedtls_ssl_conf_export_keys_ext_cb(conf, export_keys, NULL); }

void vf_tls_records_handshaking(vf_rpc_conn *c) { handshaking_conn = c; }

static uint64_t be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

int vf_tls_records_start(vf_rpc_conn *c) {
    vf_tls_records *r = &c->rec;
    handshaking_conn = NULL;
    if (!r->have_secret || r->maclen != 0 || (r->keylen != 16 && r->keylen != 32)) return 0;
    if (c->ssl.in_left != 0 || !c->ssl.in_ctr) return 0; /* mbedTLS holds part of a record: stay on it */
    unsigned char kb[2 * 32 + 2 * 4], randoms[64];
    memcpy(randoms, r->server_random, 32);
    memcpy(randoms + 32, r->client_random, 32);
    size_t need = 2 * r->keylen + 2 * 4;
    if (mbedtls_ssl_tls_prf((mbedtls_tls_prf_types)r->prf, r->master, 48, "key expansion", randoms, 64, kb, need) != 0)
        return 0;
    const unsigned char *ckey = kb, *skey = kb + r->keylen, *civ = kb + 2 * r->keylen, *siv = civ + 4;
    const EVP_CIPHER *cipher = r->keylen == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
    r->enc = EVP_CIPHER_CTX_new();
    r->dec = EVP_CIPHER_CTX_new();
    r->buf = malloc(REC_HDR + MAX_CIPHER);
    int ok = r->enc && r->dec && r->buf &&
             EVP_EncryptInit_ex(r->enc, cipher, NULL, c->is_server ? skey : ckey, NULL) == 1 &&
             EVP_DecryptInit_ex(r->dec, cipher, NULL, c->is_server ? ckey : skey, NULL) == 1;
    memcpy(r->enc_iv, c->is_server ? siv : civ, 4);
    memcpy(r->dec_iv, c->is_server ? civ : siv, 4);
    memset(kb, 0, sizeof kb);
    memset(r->master, 0, sizeof r->master);
    if (!ok) {
        vf_tls_records_free(c);
        return 0;
    }
    r->enc_seq = be64(c->ssl.cur_out_ctr);
    r->dec_seq = be64(c->ssl.in_ctr);
    r->active = 1;
    return 1;
}

void vf_tls_records_free(vf_rpc_conn *c) {
    vf_tls_records *r = &c->rec;
    if (r->enc) EVP_CIPHER_CTX_free(r->enc);
    if (r->dec) EVP_CIPHER_CTX_free(r->dec);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

static void make_nonce_aad(const uint8_t iv[4], uint64_t seq, const uint8_t explicit_nonce[8], uint8_t type,
                           size_t plain_len, uint8_t nonce[12], uint8_t aad[13]) {
    memcpy(nonce, iv, 4);
    memcpy(nonce + 4, explicit_nonce, 8);
    put_be64(aad, seq);
    aad[8] = type;
    aad[9] = 3;
    aad[10] = 3;
    aad[11] = (uint8_t)(plain_len >> 8);
    aad[12] = (uint8_t)plain_len;
}

int vf_tls_records_write(vf_rpc_conn *c, uint8_t type, const uint8_t *p, size_t n) {
    vf_tls_records *r = &c->rec;
    while (n > 0 || type != 23) {
        size_t len = n < MAX_PLAIN ? n : MAX_PLAIN;
        uint8_t *out = vf_rpc_buf_extend(&c->out_fill, REC_HDR + EXPLICIT + len + TAG);
        if (!out) return -1;
        uint8_t nonce[12], aad[13];
        size_t clen = EXPLICIT + len + TAG;
        out[0] = type;
        out[1] = 3;
        out[2] = 3;
        out[3] = (uint8_t)(clen >> 8);
        out[4] = (uint8_t)clen;
        put_be64(out + REC_HDR, r->enc_seq);
        make_nonce_aad(r->enc_iv, r->enc_seq, out + REC_HDR, type, len, nonce, aad);
        int ol;
        uint8_t *ct = out + REC_HDR + EXPLICIT;
        if (EVP_EncryptInit_ex(r->enc, NULL, NULL, NULL, nonce) != 1 ||
            EVP_EncryptUpdate(r->enc, NULL, &ol, aad, 13) != 1 || EVP_EncryptUpdate(r->enc, ct, &ol, p, (int)len) != 1 ||
            EVP_EncryptFinal_ex(r->enc, ct + len, &ol) != 1 ||
            EVP_CIPHER_CTX_ctrl(r->enc, EVP_CTRL_GCM_GET_TAG, TAG, ct + len) != 1)
            return -1;
        r->enc_seq++;
        p += len;
        n -= len;
        if (type != 23) break;
    }
    return 0;
}

int vf_tls_records_write2(vf_rpc_conn *c, const uint8_t *head, size_t head_len, const uint8_t *p, size_t n) {
    vf_tls_records *r = &c->rec;
    size_t len = head_len + n;
    if (len > MAX_PLAIN) return -1;
    uint8_t *out = vf_rpc_buf_extend(&c->out_fill, REC_HDR + EXPLICIT + len + TAG);
    if (!out) return -1;
    uint8_t nonce[12], aad[13];
    size_t clen = EXPLICIT + len + TAG;
    out[0] = 23;
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)(clen >> 8);
    out[4] = (uint8_t)clen;
    put_be64(out + REC_HDR, r->enc_seq);
    make_nonce_aad(r->enc_iv, r->enc_seq, out + REC_HDR, 23, len, nonce, aad);
    int ol;
    uint8_t *ct = out + REC_HDR + EXPLICIT;
    if (EVP_EncryptInit_ex(r->enc, NULL, NULL, NULL, nonce) != 1 || EVP_EncryptUpdate(r->enc, NULL, &ol, aad, 13) != 1 ||
        EVP_EncryptUpdate(r->enc, ct, &ol, head, (int)head_len) != 1 ||
        (n && EVP_EncryptUpdate(r->enc, ct + head_len, &ol, p, (int)n) != 1) ||
        EVP_EncryptFinal_ex(r->enc, ct + len, &ol) != 1 ||
        EVP_CIPHER_CTX_ctrl(r->enc, EVP_CTRL_GCM_GET_TAG, TAG, ct + len) != 1)
        return -1;
    r->enc_seq++;
    return 0;
}

/* Decrypts one complete record.  An application-data record that is exactly
 * one HTTP/2 DATA frame continuing a message is decrypted in two pieces: the
 * 9-byte frame header into out, then the payload straight into the message's
 * reassembly buffer (vf_rpc_call_place_data), which saves copying every
 * streamed byte once more.  GCM authenticates the whole record either way
 * before anything is handed on. */
static int open_record(vf_rpc_conn *c, const uint8_t *rec, size_t clen, uint8_t *out, size_t *outlen,
                       uint8_t **body, size_t *body_len, char *e, size_t esize) {
    vf_tls_records *r = &c->rec;
    uint8_t type = rec[0];
    size_t plen = clen - EXPLICIT - TAG;
    uint8_t nonce[12], aad[13];
    make_nonce_aad(r->dec_iv, r->dec_seq, rec + REC_HDR, type, plen, nonce, aad);
    const uint8_t *ct = rec + REC_HDR + EXPLICIT;
    size_t head = plen;
    uint8_t *dst = out;
    int ol;
    *body = NULL;
    if (EVP_DecryptInit_ex(r->dec, NULL, NULL, NULL, nonce) != 1 || EVP_DecryptUpdate(r->dec, NULL, &ol, aad, 13) != 1)
        goto fail;
    if (type == 23 && plen > H2_FRAME_HEADER) {
        if (EVP_DecryptUpdate(r->dec, out, &ol, ct, H2_FRAME_HEADER) != 1) goto fail;
        head = H2_FRAME_HEADER;
        dst = out + head;
        if ((*body = vf_rpc_call_place_data(c, out, plen - head))) dst = *body;
        if (EVP_DecryptUpdate(r->dec, dst, &ol, ct + head, (int)(plen - head)) != 1) goto fail;
    } else if (EVP_DecryptUpdate(r->dec, out, &ol, ct, (int)plen) != 1) {
        goto fail;
    }
    if (EVP_CIPHER_CTX_ctrl(r->dec, EVP_CTRL_GCM_SET_TAG, TAG, (void *)(ct + plen)) != 1 ||
        EVP_DecryptFinal_ex(r->dec, dst, &ol) != 1)
        goto fail;
    r->dec_seq++;
    *outlen = *body ? head : plen;
    *body_len = *body ? plen - head : 0;
    if (type == 23) return 1;
    if (type == 21 && plen == 2) {
        if (out[1] == 0) return 2; /* close_notify */
        snprintf(e, esize, "the peer sent TLS alert %u (level %u)", out[1], out[0]);
        return -1;
    }
    snprintf(e, esize, type == 22 ? "the peer started a TLS renegotiation (not supported)"
                                  : "unexpected TLS record type %u after the handshake", type);
    return -1;
fail:
    *body = NULL;
    snprintf(e, esize, "TLS record %llu failed authentication (bad_record_mac)", (unsigned long long)r->dec_seq);
    return -1;
}

int vf_tls_records_read(vf_rpc_conn *c, uint8_t *out, size_t *outlen, uint8_t **body, size_t *body_len, char *e,
                        size_t esize) {
    vf_tls_records *r = &c->rec;
    for (;;) {
        const uint8_t *rec;
        if (r->have < REC_HDR) {
            /* fast path: a whole record in the read buffer needs no copy */
            if (r->have == 0 && c->in_len >= REC_HDR) {
                size_t clen = (size_t)c->in[3] << 8 | c->in[4];
                if (c->in_len >= REC_HDR + clen && clen >= EXPLICIT + TAG && clen <= MAX_CIPHER &&
                    c->in[1] == 3 && c->in[2] == 3) {
                    rec = c->in;
                    c->in += REC_HDR + clen;
                    c->in_len -= REC_HDR + clen;
                    return open_record(c, rec, clen, out, outlen, body, body_len, e, esize);
                }
            }
            size_t take = REC_HDR - r->have;
            if (take > c->in_len) take = c->in_len;
            memcpy(r->buf + r->have, c->in, take);
            r->have += take;
            c->in += take;
            c->in_len -= take;
            if (r->have < REC_HDR) return 0;
            if (r->buf[1] != 3 || r->buf[2] != 3) {
                snprintf(e, esize, "bad TLS record version %u.%u", r->buf[1], r->buf[2]);
                return -1;
            }
        }
        size_t clen = (size_t)r->buf[3] << 8 | r->buf[4];
        if (clen < EXPLICIT + TAG || clen > MAX_CIPHER) {
            snprintf(e, esize, "bad TLS record length %zu (record_overflow)", clen);
            return -1;
        }
        size_t take = REC_HDR + clen - r->have;
        if (take > c->in_len) take = c->in_len;
        memcpy(r->buf + r->have, c->in, take);
        r->have += take;
        c->in += take;
        c->in_len -= take;
        if (r->have < REC_HDR + clen) return 0;
        r->have = 0;
        return open_record(c, r->buf, clen, out, outlen, body, body_len, e, esize);
    }
}
