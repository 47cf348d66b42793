/* pki_ca: the federation's CA directory (DIR/ca/): ca.key (mode 0600),
 * ca.crt and crl.pem.  Creating it, opening it, and re-signing the
 * revocation list (optionally with one more revoked serial).
 *
 * Directories that must appear whole (the CA, each participant kit) are
 * staged: written into "<parent>/.<name>.tmp.<pid>" and renamed into place,
 * so an interrupted run leaves either nothing or the complete directory, and
 * rename() refuses to replace a directory that already has files. */
#ifndef VF_PKI_CA_H
#define VF_PKI_CA_H

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "pki/pki_issue.h"
#include "util/vf_error.h"

#define VF_PKI_CA_CRT_FILE "ca.crt"
#define VF_PKI_CA_KEY_FILE "ca.key"
#define VF_PKI_CRL_FILE "crl.pem"
#define VF_PKI_CA_DAYS 3650
#define VF_PKI_LEAF_DAYS 825
#define VF_PKI_CRL_DAYS 365

typedef struct vf_pki_ca {
    char dir[2048];
    mbedtls_x509_crt crt;
    mbedtls_pk_context key;
} vf_pki_ca;

/* Creates dir (which must not exist yet) with a fresh CA "vflclip-ca-<8 hex>"
 * valid for `days`, and an empty revocation list valid for crl_days. */
int vf_pki_ca_create(const char *dir, int days, int crl_days, vf_pki_rng *rng, vf_error *err);
/* Loads ca.crt and ca.key, checks the key matches and the certificate is a CA. */
int vf_pki_ca_open(vf_pki_ca *ca, const char *dir, vf_error *err);
void vf_pki_ca_close(vf_pki_ca *ca);
/* 0 when crt's signature verifies under this CA's key and its issuer is the CA. */
int vf_pki_ca_issued(const vf_pki_ca *ca, const mbedtls_x509_crt *crt, vf_error *err);
/* Re-signs dir/crl.pem (this-update now, next-update now + crl_days, cRLNumber
 * + 1), keeping its entries and adding `serial` (DER INTEGER content) when it
 * is non-NULL; *added says whether it was new.  Written atomically; a copy of
 * the new PEM is returned in *pem (malloc'ed) when pem is non-NULL. */
int vf_pki_ca_update_crl(vf_pki_ca *ca, const unsigned char *serial, size_t serial_len, int crl_days, vf_pki_rng *rng,
                         int *added, char **pem, vf_error *err);

/* Staged directories (see the top of this file). */
typedef struct vf_pki_staged_dir {
    char final[2048], tmp[2100];
} vf_pki_staged_dir;
int vf_pki_stage_begin(vf_pki_staged_dir *d, const char *final_dir, vf_error *err);
/* Writes one file into the staged directory; private ones get mode 0600. */
int vf_pki_stage_file(vf_pki_staged_dir *d, const char *name, const void *data, size_t len, int private_file, vf_error *err);
/* Renames it into place; fails (and cleans up) if final_dir appeared meanwhile. */
int vf_pki_stage_commit(vf_pki_staged_dir *d, vf_error *err);
void vf_pki_stage_abort(vf_pki_staged_dir *d);

/* Atomic write of a file with an explicit mode (0600 for keys). */
int vf_pki_write_file(const char *path, const void *data, size_t len, int mode, vf_error *err);

#endif
