/* tls: the mbedTLS side of the transport.  One configuration per server (or
 * per client connection): TLS 1.2 only, ECDHE-ECDSA with AES-GCM only, ALPN
 * "h2", peer certificate required and verified against the federation CA and
 * its revocation list.  The CRL can be swapped at run time (SIGHUP, file
 * change); mbedTLS only reads conf->ca_crl while verifying a handshake, which
 * happens synchronously inside one event-loop callback, so a swap between
 * callbacks is safe. */
#include "rpc/rpc_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int vf_tls_ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    0,
};
static const mbedtls_ecp_group_id vf_tls_curves[] = {
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};
static const char *vf_tls_alpn[] = {"h2", NULL};

static int tls_fail(vf_error *err, int ret, const char *fmt, const char *path) {
    char e[200];
    mbedtls_strerror(ret, e, sizeof e);
    return vf_fail(err, fmt, path, e);
}

int vf_rpc_tls_init(vf_rpc_tls *t, const vf_rpc_tls_files *files, int is_server, vf_error *err) {
    memset(t, 0, sizeof *t);
    t->is_server = is_server;
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_entropy_init(&t->entropy);
    mbedtls_ctr_drbg_init(&t->drbg);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_x509_crt_init(&t->own);
    mbedtls_pk_init(&t->key);
    int ret;
    if (!files->ca_file || !files->cert_file || !files->key_file)
        return vf_fail(err, "TLS: the CA certificate, own certificate and key files are all required");
    if ((ret = vf_mbedtls_init()) != 0) return tls_fail(err, ret, "%s: crypto initialisation failed: %s", "TLS");
    if ((ret = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy, (const unsigned char *)"vflclip-rpc",
                                     11)) != 0)
        return tls_fail(err, ret, "%s: seeding the random generator failed: %s", "TLS");
    if ((ret = mbedtls_x509_crt_parse_file(&t->ca, files->ca_file)) != 0)
        return tls_fail(err, ret, "%s: cannot load the CA certificate: %s", files->ca_file);
    if ((ret = mbedtls_x509_crt_parse_file(&t->own, files->cert_file)) != 0)
        return tls_fail(err, ret, "%s: cannot load the certificate: %s", files->cert_file);
    if ((ret = vf_mbedtls_pk_parse_keyfile(&t->key, files->key_file)) != 0)
        return tls_fail(err, ret, "%s: cannot load the private key: %s", files->key_file);
    if (!mbedtls_pk_can_do(&t->key, MBEDTLS_PK_ECDSA))
        return vf_fail(err, "%s: the private key is not an ECDSA key (the federation uses ECDSA P-256)",
                       files->key_file);
    if (vf_mbedtls_pk_check_pair(&t->own.pk, &t->key) != 0)
        return vf_fail(err, "%s: the private key does not match the certificate %s", files->key_file,
                       files->cert_file);
    if ((ret = mbedtls_ssl_config_defaults(&t->conf, is_server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                           MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
        return tls_fail(err, ret, "%s: configuration failed: %s", "TLS");
    mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
    vf_mbedtls_ssl_conf_tls12_only(&t->conf);
    mbedtls_ssl_conf_ciphersuites(&t->conf, vf_tls_ciphersuites);
    if ((ret = vf_mbedtls_ssl_conf_groups(&t->conf, &t->groups, vf_tls_curves)) != 0)
        return tls_fail(err, ret, "%s: key exchange group configuration failed: %s", "TLS");
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_renegotiation(&t->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    if ((ret = mbedtls_ssl_conf_alpn_protocols(&t->conf, vf_tls_alpn)) != 0)
        return tls_fail(err, ret, "%s: ALPN configuration failed: %s", "TLS");
    if ((ret = mbedtls_ssl_conf_own_cert(&t->conf, &t->own, &t->key)) != 0)
        return tls_fail(err, ret, "%s: cannot use the certificate: %s", files->cert_file);
    snprintf(t->crl_path, sizeof t->crl_path, "%s", files->crl_file ? files->crl_file : "");
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    int changed;
    /* a missing file is not fatal here (it may appear later); a bad one is */
    if (vf_rpc_tls_reload_crl(t, 1, &changed, err) < 0 && t->crl_stat.st_ino != 0) return -1;
    return 0;
}

static int crl_unusable(vf_rpc_tls *t, vf_error *err) {
    t->crl_unusable = 1;
    snprintf(t->crl_problem, sizeof t->crl_problem, "%s", err->msg);
    return -1;
}

/* The file is looked at (stat) on every call; it is read again only when
 * forced or when it changed (mtime, size, inode), so a bad file is not
 * re-parsed at every connection.  Whatever goes wrong, conf keeps pointing at
 * the last good list: a deleted file must not un-revoke anyone. */
int vf_rpc_tls_reload_crl(vf_rpc_tls *t, int force, int *changed, vf_error *err) {
    *changed = 0;
    if (!t->crl_path[0]) return 0; /* no list configured */
    struct stat st;
    memset(&st, 0, sizeof st);
    int stat_errno = stat(t->crl_path, &st) != 0 ? errno : 0;
    if (stat_errno) memset(&st, 0, sizeof st);
    if (!force && st.st_mtim.tv_sec == t->crl_stat.st_mtim.tv_sec && st.st_mtim.tv_nsec == t->crl_stat.st_mtim.tv_nsec &&
        st.st_size == t->crl_stat.st_size && st.st_ino == t->crl_stat.st_ino)
        return 0;
    t->crl_stat = st;
    if (stat_errno) {
        vf_fail(err, "%s: %s", t->crl_path,
                stat_errno == ENOENT ? "the revocation list file is missing" : strerror(stat_errno));
        return crl_unusable(t, err);
    }
    mbedtls_x509_crl *crl = malloc(sizeof *crl);
    if (!crl) {
        vf_fail(err, "%s: out of memory", t->crl_path);
        return crl_unusable(t, err);
    }
    int bad = vf_pki_load_crl(t->crl_path, crl, err) < 0;
    if (!bad && crl->version == 0) /* vf_pki_load_crl's "no file": it went between stat and open */
        bad = vf_fail(err, "%s: the revocation list file is missing", t->crl_path);
    if (!bad) bad = vf_pki_check_crl(crl, &t->ca, t->crl_path, err) < 0;
    if (bad) {
        mbedtls_x509_crl_free(crl);
        free(crl);
        return crl_unusable(t, err);
    }
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, crl);
    if (t->crl) {
        mbedtls_x509_crl_free(t->crl);
        free(t->crl);
    }
    t->crl = crl;
    t->crl_loaded = 1;
    t->crl_unusable = 0;
    t->crl_problem[0] = 0;
    *changed = 1;
    return 0;
}

void vf_rpc_tls_free(vf_rpc_tls *t) {
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->entropy);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_x509_crt_free(&t->own);
    mbedtls_pk_free(&t->key);
    if (t->crl) {
        mbedtls_x509_crl_free(t->crl);
        free(t->crl);
        t->crl = NULL;
    }
}

void vf_rpc_tls_describe(int ret, const mbedtls_ssl_context *ssl, char *out, size_t size) {
    char e[160];
    mbedtls_strerror(ret, e, sizeof e);
    uint32_t flags = ssl ? mbedtls_ssl_get_verify_result(ssl) : 0;
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != (uint32_t)-1) {
        char v[256];
        int n = mbedtls_x509_crt_verify_info(v, sizeof v, "", flags);
        if (n > 0) {
            /* one line: the info is newline-separated */
            for (char *p = v; *p; p++)
                if (*p == '\n') *p = (p[1] ? ';' : 0);
        }
        snprintf(out, size, "%s (%s)", e, n > 0 ? v : "?");
    } else if (ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE && ssl && ssl->VF_MBEDTLS_PRIV(in_msg)) {
        /* the peer's reason, by its RFC 5246 name (the party link acts on the
         * certificate ones: party_link.c) */
        static const struct { unsigned char code; const char *name; } alerts[] = {
            {40, "handshake_failure"}, {42, "bad_certificate"}, {43, "unsupported_certificate"},
            {44, "certificate_revoked"}, {45, "certificate_expired"}, {46, "certificate_unknown"},
            {47, "illegal_parameter"}, {48, "unknown_ca"}, {49, "access_denied"}, {50, "decode_error"},
            {51, "decrypt_error"}, {70, "protocol_version"}, {71, "insufficient_security"}, {80, "internal_error"},
            {110, "unsupported_extension"}, {112, "unrecognized_name"}, {120, "no_application_protocol"}};
        unsigned char code = ssl->VF_MBEDTLS_PRIV(in_msg)[1];
        const char *name = "unknown";
        for (size_t i = 0; i < sizeof alerts / sizeof alerts[0]; i++)
            if (alerts[i].code == code) name = alerts[i].name;
        snprintf(out, size, "%s (alert %u: %s)", e, code, name);
    } else {
        snprintf(out, size, "%s", e);
    }
}

int vf_rpc_host_is_ip(const char *host) {
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* mbedTLS 2.28 keeps only dNSName SANs, so iPAddress entries are read here
 * from the raw extensions (the same on 3.x, which parses them too). */
static int crt_has_ip_san(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t iplen) {
    unsigned char *p = crt->v3_ext.p, *end = p + crt->v3_ext.len;
    size_t len;
    if (!p || mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) return 0;
    end = p + len;
    while (p < end) {
        size_t ext_len;
        if (mbedtls_asn1_get_tag(&p, end, &ext_len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) return 0;
        unsigned char *ext_end = p + ext_len, *q = p;
        p = ext_end;
        size_t oid_len;
        if (mbedtls_asn1_get_tag(&q, ext_end, &oid_len, MBEDTLS_ASN1_OID) != 0) return 0;
        int is_san = oid_len == MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME) &&
                     memcmp(q, MBEDTLS_OID_SUBJECT_ALT_NAME, oid_len) == 0;
        q += oid_len;
        if (!is_san) continue;
        int critical;
        mbedtls_asn1_get_bool(&q, ext_end, &critical); /* optional */
        size_t oct_len, seq_len;
        if (mbedtls_asn1_get_tag(&q, ext_end, &oct_len, MBEDTLS_ASN1_OCTET_STRING) != 0) return 0;
        if (mbedtls_asn1_get_tag(&q, ext_end, &seq_len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
            return 0;
        unsigned char *names_end = q + seq_len;
        if (names_end > ext_end) return 0;
        while (q < names_end) {
            unsigned char tag = *q++;
            size_t nlen;
            if (mbedtls_asn1_get_len(&q, names_end, &nlen) != 0) return 0;
            if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && nlen == iplen && memcmp(q, ip, iplen) == 0) return 1;
            q += nlen;
        }
    }
    return 0;
}

int vf_rpc_tls_crt_names_host(const mbedtls_x509_crt *crt, const char *host) {
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1) return crt_has_ip_san(crt, a, 4);
    if (inet_pton(AF_INET6, host, a) == 1) return crt_has_ip_san(crt, a, 16);
    /* DNS names are checked by mbedTLS during the handshake (ssl_set_hostname) */
    return 1;
}
