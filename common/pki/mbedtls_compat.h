/* mbedtls_compat: the mbedTLS calls whose form differs between 2.28 (Debian
 * 12) and 3.x (Debian 13 ships 3.6).  Everything else in the tree calls
 * mbedTLS directly; what differs goes through here, so this pair of files is
 * the only place that tests MBEDTLS_VERSION_NUMBER (SHA-256 has its own
 * wrapper, util/sha256.h).  3.x added random-generator arguments to key
 * parsing and pair checks, a signature buffer size to mbedtls_pk_sign,
 * dropped the _ret names, made the signature, CA and key-usage fields of
 * certificates and CRLs private, moved mbedtls_x509_write_names inside the
 * library, and replaced the version and curve settings of mbedtls_ssl_config.
 * tests/mbedtls36-check.sh builds and tests the tree against 3.6. */
#ifndef VF_PKI_MBEDTLS_COMPAT_H
#define VF_PKI_MBEDTLS_COMPAT_H

#include <mbedtls/asn1.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/bignum.h>
#include <stddef.h>
#include <stdint.h>

/* A private field by name (tests that build odd certificates by hand):
 * plain on 2.x, MBEDTLS_PRIVATE() on 3.x.  Library code uses the functions
 * below instead. */
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define VF_MBEDTLS_PRIV(field) MBEDTLS_PRIVATE(field)
#else
#define VF_MBEDTLS_PRIV(field) field
#endif

/* Once per process before keys, certificates or handshakes: 3.x's PSA
 * crypto core (psa_crypto_init; needed where the build enables
 * MBEDTLS_USE_PSA_CRYPTO or a TLS 1.3 negotiation happens).  Nothing on 2.x.
 * Returns 0 or an mbedTLS/PSA error. */
int vf_mbedtls_init(void);

/* SHA-1 of a buffer (key identifiers); 0 or an mbedTLS error. */
int vf_mbedtls_sha1(const unsigned char *in, size_t len, unsigned char out[20]);

/* Private keys without a password (PEM NUL-terminated with the NUL counted,
 * or DER); 0 or an mbedTLS error. */
int vf_mbedtls_pk_parse_key(mbedtls_pk_context *key, const unsigned char *buf, size_t len);
int vf_mbedtls_pk_parse_keyfile(mbedtls_pk_context *key, const char *path);
/* 0 when prv is the private half of pub. */
int vf_mbedtls_pk_check_pair(const mbedtls_pk_context *pub, const mbedtls_pk_context *prv);
/* Signs a hash (hash_len 0: the digest size of md) into sig[sig_size]. */
int vf_mbedtls_pk_sign(mbedtls_pk_context *key, mbedtls_md_type_t md, const unsigned char *hash, size_t hash_len,
                       unsigned char *sig, size_t sig_size, size_t *sig_len,
                       int (*f_rng)(void *, unsigned char *, size_t), void *p_rng);
/* The curve of an EC key; MBEDTLS_ECP_DP_NONE when the key is not EC. */
mbedtls_ecp_group_id vf_mbedtls_pk_ec_group(const mbedtls_pk_context *key);

/* Certificate fields that 3.x made private. */
int vf_mbedtls_crt_is_ca(const mbedtls_x509_crt *crt);                   /* basicConstraints cA */
int vf_mbedtls_crt_has_ext(const mbedtls_x509_crt *crt, int ext_type);  /* MBEDTLS_X509_EXT_* */
unsigned int vf_mbedtls_crt_key_usage(const mbedtls_x509_crt *crt);    /* MBEDTLS_X509_KU_* bits */

/* Does the signature of a certificate / of one CRL (not its chain) verify
 * under pk?  0 yes, VF_MBEDTLS_SIG_DIGEST when its digest is not supported,
 * VF_MBEDTLS_SIG_BAD when it does not verify. */
#define VF_MBEDTLS_SIG_DIGEST (-1)
#define VF_MBEDTLS_SIG_BAD (-2)
int vf_mbedtls_crt_signed_by(const mbedtls_x509_crt *crt, const mbedtls_pk_context *pk);
int vf_mbedtls_crl_signed_by(const mbedtls_x509_crl *crl, const mbedtls_pk_context *pk);

/* Writes a Name (SEQUENCE OF RDN, one attribute each, in list order) from
 * mbedtls_x509_string_to_names's list, backwards from *p as asn1write does;
 * the byte count or a negative mbedTLS error.  (2.28: mbedtls_x509_write_names;
 * 3.x keeps it internal, so the same encoding is written here.) */
int vf_mbedtls_write_names(unsigned char **p, unsigned char *start, const mbedtls_asn1_named_data *first);

/* A certificate being written gets the serial number given in hex (tests
 * that build odd certificates by hand): an mbedtls_mpi on 2.x, raw bytes on
 * 3.x (which deprecated the mpi form).  0 or an mbedTLS error. */
int vf_mbedtls_x509write_crt_set_serial_hex(mbedtls_x509write_cert *w, const char *hex);

/* TLS configuration: TLS 1.2 as both the lowest and the highest version. */
void vf_mbedtls_ssl_conf_tls12_only(mbedtls_ssl_config *conf);
/* The (EC)DHE groups allowed, in preference order, ending with
 * MBEDTLS_ECP_DP_NONE (at most 15).  conf keeps pointing into *store, which
 * must live as long as conf. */
typedef struct vf_mbedtls_groups {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    uint16_t ids[16];               /* IANA TLS group ids (mbedtls_ssl_conf_groups) */
#else
    mbedtls_ecp_group_id ids[16];   /* mbedtls_ssl_conf_curves */
#endif
} vf_mbedtls_groups;
int vf_mbedtls_ssl_conf_groups(mbedtls_ssl_config *conf, vf_mbedtls_groups *store, const mbedtls_ecp_group_id *curves);

#endif
