/* pki_kit: the federation directory an operator provisions (docs/pki.md):
 *
 *   DIR/federation.ini          where parties dial the aggregator
 *   DIR/ca/                     ca.key (0600), ca.crt, crl.pem  (keep offline)
 *   DIR/<role>-<name>/          one kit per participant, copied to its machine:
 *       key.pem (0600), cert.pem, ca.crt, crl.pem, <role>.ini
 *
 * A kit is created whole or not at all (staged, see pki_ca.h) and never
 * replaced: provisioning the same participant again leaves its key alone. */
#ifndef VF_PKI_KIT_H
#define VF_PKI_KIT_H

#include "pki/pki.h"
#include "pki/pki_ca.h"
#include "pki/pki_issue.h"
#include "util/vf_error.h"

#define VF_PKI_DEFAULT_PORT 50051

/* DIR/federation.ini: the aggregator every starter config dials. */
typedef struct vf_pki_federation {
    char aggregator_name[128]; /* its certificate CN, the name clients verify */
    char aggregator_host[256]; /* what clients dial */
    int aggregator_port;
} vf_pki_federation;
/* A missing file leaves *fed empty (aggregator_name[0] == 0) and returns 0. */
int vf_pki_federation_load(const char *fed_dir, vf_pki_federation *fed, vf_error *err);
int vf_pki_federation_save(const char *fed_dir, const vf_pki_federation *fed, vf_error *err);

typedef struct vf_pki_participant {
    vf_role role;
    const char *name;
    const char *const *dns; /* aggregator only: host names and addresses for its SANs */
    int n_dns;
    const char *const *ips;
    int n_ips;
} vf_pki_participant;

/* "<fed_dir>/<role>-<name>" */
int vf_pki_kit_path(const char *fed_dir, vf_role role, const char *name, char *out, size_t size, vf_error *err);
/* Creates the participant's kit, its certificate valid for `days` and signed
 * by ca.  Returns 0 when created, 1 when the kit already exists (untouched),
 * -1 on error. */
int vf_pki_kit_create(const char *fed_dir, vf_pki_ca *ca, const vf_pki_participant *p, const vf_pki_federation *fed, int days,
                      vf_pki_rng *rng, vf_error *err);
/* The starter INI for a role, into buf. */
int vf_pki_kit_config(const vf_pki_participant *p, const vf_pki_federation *fed, char *buf, size_t size, vf_error *err);
/* Writes crl_pem as crl.pem into every kit under fed_dir; *n_kits counts them. */
int vf_pki_kits_refresh_crl(const char *fed_dir, const char *crl_pem, int *n_kits, vf_error *err);

#endif
