/* pki_issue: keys, the CA certificate and participant certificates (see
 * pki_issue.h).  The TBSCertificate is encoded here rather than with
 * mbedtls_x509write_crt (see pki_der.h for why); mbedTLS parses each new
 * certificate back before it is handed out. */
#include "pki/pki_issue.h"

#include <arpa/inet.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pki/mbedtls_compat.h"
#include "pki/pki_der.h"
#include "util/fileio.h"

int vf_pki_rng_init(vf_pki_rng *rng, vf_error *err) {
    static const char personal[] = "vflclip-pki";
    mbedtls_entropy_init(&rng->entropy);
    mbedtls_ctr_drbg_init(&rng->drbg);
    int ret = mbedtls_ctr_drbg_seed(&rng->drbg, mbedtls_entropy_func, &rng->entropy, (const unsigned char *)personal,
                                    sizeof personal - 1);
    if (ret != 0) return vf_der_fail(err, ret, "seeding the random generator");
    return 0;
}

void vf_pki_rng_free(vf_pki_rng *rng) {
    mbedtls_ctr_drbg_free(&rng->drbg);
    mbedtls_entropy_free(&rng->entropy);
}

int vf_pki_random(vf_pki_rng *rng, unsigned char *buf, size_t len, vf_error *err) {
    int ret = mbedtls_ctr_drbg_random(&rng->drbg, buf, len);
    return ret != 0 ? vf_der_fail(err, ret, "random generator") : 0;
}

int vf_pki_gen_key(mbedtls_pk_context *key, vf_pki_rng *rng, vf_error *err) {
    int ret = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0) ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), mbedtls_ctr_drbg_random, &rng->drbg);
    return ret != 0 ? vf_der_fail(err, ret, "generating an ECDSA P-256 key") : 0;
}

int vf_pki_key_pem(mbedtls_pk_context *key, char *buf, size_t size, vf_error *err) {
    int ret = mbedtls_pk_write_key_pem(key, (unsigned char *)buf, size);
    return ret != 0 ? vf_der_fail(err, ret, "writing the private key as PEM") : 0;
}

int vf_pki_load_key(const char *path, mbedtls_pk_context *key, vf_error *err) {
    char *data;
    size_t len;
    if (vf_read_file(path, &data, &len, err) != 0) return -1;
    /* mbedtls takes PEM only NUL-terminated (the NUL counted), DER exactly. */
    int pem = strstr(data, "-----BEGIN") != NULL;
    int ret = vf_mbedtls_pk_parse_key(key, (const unsigned char *)data, pem ? len + 1 : len);
    mbedtls_platform_zeroize(data, len);
    free(data);
    if (ret != 0) return vf_der_fail(err, ret, path);
    if (mbedtls_pk_get_type(key) != MBEDTLS_PK_ECKEY || vf_mbedtls_pk_ec_group(key) != MBEDTLS_ECP_DP_SECP256R1)
        return vf_fail(err, "%s: not an ECDSA P-256 key", path);
    return 0;
}

int vf_pki_load_crt(const char *path, mbedtls_x509_crt *crt, vf_error *err) {
    char *data;
    size_t len;
    if (vf_read_file(path, &data, &len, err) != 0) return -1;
    int pem = strstr(data, "-----BEGIN CERTIFICATE-----") != NULL;
    int ret = mbedtls_x509_crt_parse(crt, (const unsigned char *)data, pem ? len + 1 : len);
    free(data);
    if (ret > 0) return vf_fail(err, "%s: %d of the certificates in it do not parse", path, ret);
    if (ret != 0) return vf_der_fail(err, ret, path);
    return 0;
}

int vf_pki_name_ok(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 127) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

int vf_pki_subject_string(vf_role role, const char *name, char *out, size_t size, vf_error *err) {
    if (!vf_pki_name_ok(name))
        return vf_fail(err, "name '%s' is not 1..127 characters of [A-Za-z0-9._-]", name ? name : "");
    if (role == VF_ROLE_NONE) snprintf(out, size, "CN=%s, O=" VF_PKI_ORGANIZATION, name);
    else snprintf(out, size, "CN=%s, OU=%s, O=" VF_PKI_ORGANIZATION, name, vf_role_name(role));
    return 0;
}

/* BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL } */
static int der_basic_constraints(unsigned char **p, unsigned char *start, int is_ca) {
    size_t len = 0;
    if (is_ca) {
        VF_DER(mbedtls_asn1_write_int(p, start, 0)); /* pathlen 0: no intermediate CAs */
        VF_DER(mbedtls_asn1_write_bool(p, start, 1));
    }
    VF_DER(vf_der_sequence(p, start, len));
    return (int)len;
}

/* mbedTLS's MBEDTLS_X509_KU_* are the first byte of the named bit string. */
static int der_key_usage(unsigned char **p, unsigned char *start, int is_ca) {
    unsigned char bits = is_ca ? (MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN) : MBEDTLS_X509_KU_DIGITAL_SIGNATURE;
    return mbedtls_asn1_write_named_bitstring(p, start, &bits, 8);
}

static int der_ext_key_usage(unsigned char **p, unsigned char *start, vf_role role) {
    size_t len = 0;
    if (role == VF_ROLE_AGGREGATOR)
        VF_DER(mbedtls_asn1_write_oid(p, start, MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)));
    else
        VF_DER(mbedtls_asn1_write_oid(p, start, MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)));
    VF_DER(vf_der_sequence(p, start, len));
    return (int)len;
}

/* GeneralNames: dNSName [2] IA5String, iPAddress [7] OCTET STRING, both
 * implicitly tagged; written last-to-first so they come out in order. */
static int der_subject_alt_names(unsigned char **p, unsigned char *start, const vf_pki_subject *s) {
    size_t len = 0;
    for (int i = s->n_ips - 1; i >= 0; i--) {
        unsigned char addr[16];
        size_t alen = 16, before = len;
        if (inet_pton(AF_INET, s->ips[i], addr) == 1) alen = 4;
        else if (inet_pton(AF_INET6, s->ips[i], addr) != 1) return MBEDTLS_ERR_X509_BAD_INPUT_DATA;
        VF_DER(mbedtls_asn1_write_raw_buffer(p, start, addr, alen));
        VF_DER(vf_der_wrap(p, start, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS, len - before));
    }
    for (int i = s->n_dns - 1; i >= 0; i--) {
        size_t n = strlen(s->dns[i]), before = len;
        VF_DER(mbedtls_asn1_write_raw_buffer(p, start, (const unsigned char *)s->dns[i], n));
        VF_DER(vf_der_wrap(p, start, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME, len - before));
    }
    VF_DER(vf_der_sequence(p, start, len));
    return (int)len;
}

/* AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING } */
static int der_authority_key_id(unsigned char **p, unsigned char *start, const unsigned char id[20]) {
    size_t len = 0;
    VF_DER(mbedtls_asn1_write_raw_buffer(p, start, id, 20));
    VF_DER(vf_der_wrap(p, start, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 0, 20));
    VF_DER(vf_der_sequence(p, start, len));
    return (int)len;
}

/* What goes into one certificate, gathered before encoding. */
typedef struct tbs_input {
    const vf_pki_subject *s;
    int is_ca;
    const unsigned char *subject_der, *issuer_der;
    size_t subject_len, issuer_len;
    const unsigned char *spki;
    size_t spki_len;
    unsigned char serial[16], subject_key_id[20], issuer_key_id[20];
} tbs_input;

/* One extension: its value is encoded into scratch, then wrapped into *p. */
enum { EXT_BC, EXT_KU, EXT_SKI, EXT_AKI, EXT_EKU, EXT_SAN, EXT_COUNT };

static int der_one_extension(unsigned char **p, unsigned char *start, const tbs_input *in, int which) {
    unsigned char scratch[1024];
    unsigned char *q = scratch + sizeof scratch;
    int n;
    const char *oid;
    size_t oid_len;
    int critical = 0;
    switch (which) {
    case EXT_BC: n = der_basic_constraints(&q, scratch, in->is_ca); oid = MBEDTLS_OID_BASIC_CONSTRAINTS; oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_BASIC_CONSTRAINTS); critical = 1; break;
    case EXT_KU: n = der_key_usage(&q, scratch, in->is_ca); oid = MBEDTLS_OID_KEY_USAGE; oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_KEY_USAGE); critical = 1; break;
    case EXT_SKI: n = mbedtls_asn1_write_octet_string(&q, scratch, in->subject_key_id, 20); oid = MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER; oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER); break;
    case EXT_AKI: n = der_authority_key_id(&q, scratch, in->issuer_key_id); oid = MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER; oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER); break;
    case EXT_EKU: n = der_ext_key_usage(&q, scratch, in->s->role); oid = MBEDTLS_OID_EXTENDED_KEY_USAGE; oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE); break;
    default: n = der_subject_alt_names(&q, scratch, in->s); oid = MBEDTLS_OID_SUBJECT_ALT_NAME; oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME); break;
    }
    if (n < 0) return n;
    return vf_der_extension(p, start, oid, oid_len, critical, q, (size_t)n);
}

/* TBSCertificate, RFC 5280 4.1. */
static int der_tbs_certificate(unsigned char **p, unsigned char *start, const tbs_input *in) {
    size_t len = 0, ext_len = 0;
    int has_ext[EXT_COUNT] = {1, 1, 1, 1, !in->is_ca, !in->is_ca && in->s->n_dns + in->s->n_ips > 0};
    for (int e = EXT_COUNT - 1; e >= 0; e--) {
        if (!has_ext[e]) continue;
        int r = der_one_extension(p, start, in, e);
        if (r < 0) return r;
        ext_len += (size_t)r;
    }
    len = ext_len;
    VF_DER(vf_der_sequence(p, start, ext_len));
    VF_DER(vf_der_wrap(p, start, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 3, len));
    VF_DER(mbedtls_asn1_write_raw_buffer(p, start, in->spki, in->spki_len));
    VF_DER(mbedtls_asn1_write_raw_buffer(p, start, in->subject_der, in->subject_len));
    size_t before = len;
    VF_DER(vf_der_time(p, start, in->s->not_after_unix));
    VF_DER(vf_der_time(p, start, in->s->not_before_unix));
    VF_DER(vf_der_sequence(p, start, len - before));
    VF_DER(mbedtls_asn1_write_raw_buffer(p, start, in->issuer_der, in->issuer_len));
    VF_DER(vf_der_ecdsa_sha256(p, start));
    VF_DER(mbedtls_asn1_write_raw_buffer(p, start, in->serial, sizeof in->serial));
    VF_DER(vf_der_wrap(p, start, MBEDTLS_ASN1_INTEGER, sizeof in->serial));
    before = len;
    VF_DER(mbedtls_asn1_write_int(p, start, 2)); /* v3 */
    VF_DER(vf_der_wrap(p, start, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 0, len - before));
    VF_DER(vf_der_sequence(p, start, len));
    return (int)len;
}

static int check_subject(const vf_pki_subject *s, vf_error *err) {
    for (int i = 0; i < s->n_dns; i++)
        if (!vf_pki_name_ok(s->dns[i]) || strchr(s->dns[i], '_'))
            return vf_fail(err, "host name '%s' is not 1..127 characters of [A-Za-z0-9.-]", s->dns[i]);
    for (int i = 0; i < s->n_ips; i++) {
        unsigned char addr[16];
        if (inet_pton(AF_INET, s->ips[i], addr) != 1 && inet_pton(AF_INET6, s->ips[i], addr) != 1)
            return vf_fail(err, "'%s' is not an IPv4 or IPv6 address", s->ips[i]);
    }
    if (s->n_dns + s->n_ips > 32) return vf_fail(err, "more than 32 subject alternative names");
    if (s->not_after_unix <= s->not_before_unix) return vf_fail(err, "certificate for '%s' would expire before it starts", s->name);
    return 0;
}

/* Encodes a Name from "CN=..., OU=..., O=..." into buf; *out points into buf. */
static int name_der(const char *text, unsigned char *buf, size_t size, const unsigned char **out, size_t *out_len, vf_error *err) {
    mbedtls_asn1_named_data *names = NULL;
    int ret = mbedtls_x509_string_to_names(&names, text);
    unsigned char *p = buf + size;
    if (ret == 0) ret = vf_mbedtls_write_names(&p, buf, names);
    mbedtls_asn1_free_named_data_list(&names);
    if (ret < 0) return vf_der_fail(err, ret, text);
    if (p == buf + size) return vf_fail(err, "%s: empty name", text);
    *out = p;
    *out_len = (size_t)(buf + size - p);
    return 0;
}

/* Encodes, signs and PEM-writes one certificate.  issuer_der NULL: self-signed. */
static int issue(const vf_pki_subject *s, mbedtls_pk_context *subject_key, const unsigned char *issuer_der, size_t issuer_len,
                 mbedtls_pk_context *issuer_key, vf_pki_rng *rng, char *pem, size_t pem_size, vf_error *err) {
    if (check_subject(s, err) != 0) return -1;
    tbs_input in = {.s = s, .is_ca = issuer_der == NULL};
    char subject[256];
    unsigned char subject_buf[512], spki_buf[256];
    if (vf_pki_subject_string(s->role, s->name, subject, sizeof subject, err) != 0) return -1;
    if (name_der(subject, subject_buf, sizeof subject_buf, &in.subject_der, &in.subject_len, err) != 0) return -1;
    in.issuer_der = issuer_der ? issuer_der : in.subject_der;
    in.issuer_len = issuer_der ? issuer_len : in.subject_len;

    int n = mbedtls_pk_write_pubkey_der(subject_key, spki_buf, sizeof spki_buf); /* written at the end of spki_buf */
    if (n < 0) return vf_der_fail(err, n, "encoding the public key");
    in.spki = spki_buf + sizeof spki_buf - n;
    in.spki_len = (size_t)n;
    if (vf_der_key_id(subject_key, in.subject_key_id, err) != 0 || vf_der_key_id(issuer_key, in.issuer_key_id, err) != 0) return -1;

    /* 16 random bytes, positive, top byte never zero: a fixed-length 126-bit serial. */
    if (vf_pki_random(rng, in.serial, sizeof in.serial, err) != 0) return -1;
    in.serial[0] = (unsigned char)((in.serial[0] & 0x7f) | 0x40);

    unsigned char tbs_buf[4096];
    unsigned char *p = tbs_buf + sizeof tbs_buf;
    n = der_tbs_certificate(&p, tbs_buf, &in);
    if (n < 0) return vf_der_fail(err, n, "encoding the certificate");
    return vf_der_sign_to_pem(p, (size_t)n, issuer_key, &rng->drbg, "CERTIFICATE", pem, pem_size, err);
}

int vf_pki_issue_ca(const vf_pki_subject *s, mbedtls_pk_context *ca_key, vf_pki_rng *rng, char *pem, size_t pem_size,
                    vf_error *err) {
    if (s->role != VF_ROLE_NONE) return vf_fail(err, "a CA certificate carries no participant role");
    return issue(s, ca_key, NULL, 0, ca_key, rng, pem, pem_size, err);
}

/* Reads the certificate just made back through the parser the TLS layer uses,
 * so a certificate it would misread is never handed out. */
static int check_issued(const char *pem, const vf_pki_subject *s, const mbedtls_x509_crt *ca_crt, vf_error *err) {
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int rc = 0, ret = mbedtls_x509_crt_parse(&crt, (const unsigned char *)pem, strlen(pem) + 1);
    vf_peer_identity id;
    if (ret != 0) rc = vf_der_fail(err, ret, "re-reading the new certificate");
    else if (crt.issuer_raw.len != ca_crt->subject_raw.len || memcmp(crt.issuer_raw.p, ca_crt->subject_raw.p, crt.issuer_raw.len) != 0)
        rc = vf_fail(err, "new certificate's issuer does not match the CA subject byte for byte");
    else if (vf_pki_identity_from_crt(&crt, &id, err) != 0) rc = vf_error_prefix(err, "new certificate");
    else if (id.role != s->role || strcmp(id.name, s->name) != 0)
        rc = vf_fail(err, "new certificate reads back as %s '%s'", vf_role_name(id.role), id.name);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

int vf_pki_issue_leaf(const vf_pki_subject *s, mbedtls_pk_context *subject_key, const mbedtls_x509_crt *ca_crt,
                      mbedtls_pk_context *ca_key, vf_pki_rng *rng, char *pem, size_t pem_size, vf_error *err) {
    if (s->role == VF_ROLE_NONE) return vf_fail(err, "a participant certificate needs a role");
    if (issue(s, subject_key, ca_crt->subject_raw.p, ca_crt->subject_raw.len, ca_key, rng, pem, pem_size, err) != 0) return -1;
    return check_issued(pem, s, ca_crt, err);
}
