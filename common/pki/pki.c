/* pki: roles, a peer's identity from its certificate, and loading/checking
 * the revocation list (see pki.h). */
#include "pki/pki.h"

#include <errno.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "pki/mbedtls_compat.h"
#include "util/fileio.h"
#include "util/log.h"

static const char *const role_names[] = {
    [VF_ROLE_NONE] = "none",
    [VF_ROLE_AGGREGATOR] = "aggregator",
    [VF_ROLE_IMAGE_PARTY] = "image-party",
    [VF_ROLE_KNOWLEDGE_PARTY] = "knowledge-party",
    [VF_ROLE_ADMIN] = "admin",
};

const char *vf_role_name(vf_role r) {
    if ((int)r < 0 || (int)r >= (int)(sizeof role_names / sizeof role_names[0])) return "none";
    return role_names[r];
}

int vf_role_parse(const char *s, vf_role *r) {
    for (int i = VF_ROLE_AGGREGATOR; i <= VF_ROLE_ADMIN; i++)
        if (s && strcmp(s, role_names[i]) == 0) { *r = (vf_role)i; return 0; }
    return -1;
}

long long vf_pki_time_to_unix(const mbedtls_x509_time *t) {
    struct tm tm = {0};
    tm.tm_year = t->year - 1900;
    tm.tm_mon = t->mon - 1;
    tm.tm_mday = t->day;
    tm.tm_hour = t->hour;
    tm.tm_min = t->min;
    tm.tm_sec = t->sec;
    return (long long)timegm(&tm);
}

void vf_pki_serial_to_hex(const unsigned char *p, size_t len, char *out, size_t out_size) {
    while (len > 1 && p[0] == 0) { p++; len--; }
    size_t n = 0;
    if (out_size == 0) return;
    for (size_t i = 0; i < len && n + 2 < out_size; i++) n += (size_t)snprintf(out + n, out_size - n, "%02X", p[i]);
    if (len == 0 && out_size > 1) { out[0] = '0'; n = 1; }
    out[n] = 0;
}

/* Safe to put in a log line, a path and a config file. */
static int name_char_ok(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/* Finds the single attribute with this OID in the subject; 0 found, 1 absent,
 * -1 repeated. */
static int subject_attr(const mbedtls_x509_name *dn, const char *oid, size_t oid_len, const mbedtls_x509_buf **val) {
    int found = 0;
    for (const mbedtls_x509_name *n = dn; n; n = n->next) {
        if (n->oid.p == NULL || n->oid.len != oid_len || memcmp(n->oid.p, oid, oid_len) != 0) continue;
        if (found) return -1;
        *val = &n->val;
        found = 1;
    }
    return found ? 0 : 1;
}

static int get_attr(const mbedtls_x509_crt *crt, const char *oid, size_t oid_len, const char *label,
                    const mbedtls_x509_buf **val, vf_error *err) {
    int r = subject_attr(&crt->subject, oid, oid_len, val);
    if (r == 1) return vf_fail(err, "certificate subject has no %s (expected CN=<name>, OU=<role>, O=" VF_PKI_ORGANIZATION ")", label);
    if (r == -1) return vf_fail(err, "certificate subject has more than one %s", label);
    return 0;
}

int vf_pki_identity_from_crt(const mbedtls_x509_crt *crt, vf_peer_identity *id, vf_error *err) {
    if (!crt || crt->raw.p == NULL) return vf_fail(err, "no certificate");
    const mbedtls_x509_buf *cn = NULL, *ou = NULL, *o = NULL;
    if (get_attr(crt, MBEDTLS_OID_AT_CN, MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN), "CN", &cn, err) != 0) return -1;
    if (get_attr(crt, MBEDTLS_OID_AT_ORG_UNIT, MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_ORG_UNIT), "OU (role)", &ou, err) != 0) return -1;
    if (get_attr(crt, MBEDTLS_OID_AT_ORGANIZATION, MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_ORGANIZATION), "O", &o, err) != 0) return -1;

    size_t org_len = strlen(VF_PKI_ORGANIZATION);
    if (o->len != org_len || memcmp(o->p, VF_PKI_ORGANIZATION, org_len) != 0)
        return vf_fail(err, "certificate subject O is '%.*s', expected '" VF_PKI_ORGANIZATION "'",
                       (int)(o->len > 64 ? 64 : o->len), (const char *)o->p);

    char role_str[32];
    if (ou->len == 0 || ou->len >= sizeof role_str || memchr(ou->p, 0, ou->len))
        return vf_fail(err, "certificate subject OU (role) of %zu bytes is not a known role", ou->len);
    memcpy(role_str, ou->p, ou->len);
    role_str[ou->len] = 0;
    vf_role role;
    if (vf_role_parse(role_str, &role) != 0)
        return vf_fail(err, "certificate subject OU '%s' is not a known role (aggregator, image-party, knowledge-party, admin)", role_str);

    if (cn->len == 0) return vf_fail(err, "certificate subject CN is empty");
    if (cn->len >= sizeof id->name)
        return vf_fail(err, "certificate subject CN is %zu bytes long, the limit is %zu", cn->len, sizeof id->name - 1);
    for (size_t i = 0; i < cn->len; i++)
        if (!name_char_ok(cn->p[i]))
            return vf_fail(err, "certificate subject CN has byte 0x%02x at offset %zu; names use only [A-Za-z0-9._-]", cn->p[i], i);

    if (crt->serial.len == 0 || crt->serial.len > 31) return vf_fail(err, "certificate serial of %zu bytes is out of range", crt->serial.len);

    id->role = role;
    memcpy(id->name, cn->p, cn->len);
    id->name[cn->len] = 0;
    vf_pki_serial_to_hex(crt->serial.p, crt->serial.len, id->serial_hex, sizeof id->serial_hex);
    id->not_after_unix = vf_pki_time_to_unix(&crt->valid_to);
    return 0;
}

static void warn_if_expiring(const mbedtls_x509_crl *crl, const char *path) {
    for (const mbedtls_x509_crl *c = crl; c && c->version != 0; c = c->next) {
        if (c->next_update.year == 0) continue;
        long long next = vf_pki_time_to_unix(&c->next_update), left = next - (long long)time(NULL);
        if (left < 0)
            vf_log(VF_WARN, "event=crl_expired path=%s next_update_unix=%lld msg=\"every peer is rejected until the list is re-signed: vflclip cert crl --ca DIR/ca\"",
                   path, next);
        else if (left < 7 * 86400)
            vf_log(VF_WARN, "event=crl_expiring path=%s seconds_left=%lld msg=\"re-sign it: vflclip cert crl --ca DIR/ca\"", path, left);
    }
}

int vf_pki_load_crl(const char *path, mbedtls_x509_crl *crl, vf_error *err) {
    mbedtls_x509_crl_init(crl);
    if (path == NULL || path[0] == 0) return 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        return vf_fail_errno(err, path);
    }
    char *data;
    size_t len;
    if (vf_read_file(path, &data, &len, err) != 0) return -1;
    if (len == 0) { free(data); return vf_fail(err, "%s: empty file, not a revocation list", path); }
    /* mbedtls takes PEM only NUL-terminated (the NUL counted), DER exactly. */
    int pem = strstr(data, "-----BEGIN X509 CRL-----") != NULL;
    int ret = mbedtls_x509_crl_parse(crl, (const unsigned char *)data, pem ? len + 1 : len);
    free(data);
    if (ret != 0) {
        char msg[200];
        mbedtls_strerror(ret, msg, sizeof msg);
        mbedtls_x509_crl_free(crl);
        mbedtls_x509_crl_init(crl);
        return vf_fail(err, "%s: not a valid %s revocation list (%s)", path, pem ? "PEM" : "DER", msg);
    }
    warn_if_expiring(crl, path);
    return 0;
}

int vf_pki_check_crl(const mbedtls_x509_crl *crl, const mbedtls_x509_crt *ca, const char *path, vf_error *err) {
    if (!path) path = "revocation list";
    for (const mbedtls_x509_crl *c = crl; c && c->version != 0; c = c->next) {
        if (c->issuer_raw.len != ca->subject_raw.len || memcmp(c->issuer_raw.p, ca->subject_raw.p, c->issuer_raw.len) != 0)
            return vf_fail(err, "%s: issued by a different CA than the federation's", path);
        int sig = vf_mbedtls_crl_signed_by(c, &ca->pk);
        if (sig == VF_MBEDTLS_SIG_DIGEST) return vf_fail(err, "%s: unsupported signature digest", path);
        if (sig != 0) return vf_fail(err, "%s: signature does not verify against the federation CA", path);
        if (c->next_update.year != 0 && mbedtls_x509_time_is_past(&c->next_update))
            return vf_fail(err, "%s: expired on %04d-%02d-%02d %02d:%02d:%02d UTC; re-sign it with `vflclip cert crl --ca DIR/ca`", path,
                           c->next_update.year, c->next_update.mon, c->next_update.day, c->next_update.hour,
                           c->next_update.min, c->next_update.sec);
    }
    return 0;
}
