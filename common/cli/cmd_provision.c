/* cmd_provision: `vflclip provision`, which creates the federation's private
 * CA and one kit per participant, or adds participants to an existing
 * federation directory with the same CA (docs/pki.md). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pki/pki_ca.h"
#include "pki/pki_kit.h"
#include "util/fileio.h"

#define MAX_PARTICIPANTS 256
#define MAX_AGG_NAMES 32

static void usage(FILE *out) {
    fprintf(out,
            "usage: vflclip provision --out DIR [--aggregator HOST[,HOST|IP...]] [--image-party NAME...]\n"
            "                         [--knowledge-party NAME...] [--admin NAME...] [--port N]\n"
            "                         [--days N] [--ca-days N] [--crl-days N]\n\n"
            "Creates DIR/ca (a private ECDSA P-256 CA) on the first run and one kit per\n"
            "participant in DIR/<role>-<name>/ (key.pem, cert.pem, ca.crt, crl.pem, <role>.ini).\n"
            "Running it again on DIR adds the participants it does not have yet, signed by\n"
            "the same CA; existing kits are left as they are.\n\n"
            "  --aggregator HOST[,HOST|IP...]  the aggregator: its first host name is its\n"
            "                     certificate name and what parties dial; every host name\n"
            "                     and IP address becomes a subjectAltName\n"
            "  --image-party NAME...  --knowledge-party NAME...  --admin NAME...\n"
            "                     participants; names are [A-Za-z0-9._-], up to 127 bytes\n"
            "  --port N           aggregator port for the starter configs, kept in\n"
            "                     DIR/federation.ini on the first run (default %d)\n"
            "  --days N           participant certificate lifetime (default %d)\n"
            "  --ca-days N        CA lifetime on the first run (default %d)\n"
            "  --crl-days N       revocation list lifetime on the first run (default %d)\n",
            VF_PKI_DEFAULT_PORT, VF_PKI_LEAF_DAYS, VF_PKI_CA_DAYS, VF_PKI_CRL_DAYS);
}

typedef struct provision_args {
    const char *out;
    char *aggregator; /* the comma list, split in place */
    vf_pki_participant parts[MAX_PARTICIPANTS];
    int n_parts;
    const char *agg_dns[MAX_AGG_NAMES], *agg_ips[MAX_AGG_NAMES];
    int n_dns, n_ips;
    int port, days, ca_days, crl_days;
} provision_args;

static int parse_int(const char *flag, const char *value, int lo, int hi, int *out) {
    char *end;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || *end || v < lo || v > hi) {
        fprintf(stderr, "vflclip provision: %s needs a number in %d..%d, got '%s'\n", flag, lo, hi, value ? value : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int add_participant(provision_args *a, vf_role role, const char *name) {
    if (!vf_pki_name_ok(name)) {
        fprintf(stderr, "vflclip provision: %s name '%s' is not 1..127 characters of [A-Za-z0-9._-]\n", vf_role_name(role), name);
        return -1;
    }
    for (int i = 0; i < a->n_parts; i++)
        if (a->parts[i].role == role && strcmp(a->parts[i].name, name) == 0) {
            fprintf(stderr, "vflclip provision: %s '%s' is named twice\n", vf_role_name(role), name);
            return -1;
        }
    if (a->n_parts == MAX_PARTICIPANTS) {
        fprintf(stderr, "vflclip provision: more than %d participants in one run\n", MAX_PARTICIPANTS);
        return -1;
    }
    a->parts[a->n_parts++] = (vf_pki_participant){.role = role, .name = name};
    return 0;
}

/* "agg.example,agg,10.0.0.5": host names to agg_dns, addresses to agg_ips;
 * the first entry must be a host name, as it becomes the certificate name. */
static int split_aggregator(provision_args *a) {
    for (char *tok = strtok(a->aggregator, ","); tok; tok = strtok(NULL, ",")) {
        unsigned char addr[16];
        int is_ip = inet_pton(AF_INET, tok, addr) == 1 || inet_pton(AF_INET6, tok, addr) == 1;
        if (a->n_dns + a->n_ips == MAX_AGG_NAMES) {
            fprintf(stderr, "vflclip provision: --aggregator lists more than %d names\n", MAX_AGG_NAMES);
            return -1;
        }
        if (is_ip) a->agg_ips[a->n_ips++] = tok;
        else if (!vf_pki_name_ok(tok) || strchr(tok, '_')) {
            fprintf(stderr, "vflclip provision: --aggregator entry '%s' is neither a host name ([A-Za-z0-9.-]) nor an IP address\n", tok);
            return -1;
        } else a->agg_dns[a->n_dns++] = tok;
        if (a->n_dns == 0) {
            fprintf(stderr, "vflclip provision: --aggregator must start with a host name (its certificate name, e.g. "
                            "localhost or agg.example.org); put IP addresses after it\n");
            return -1;
        }
    }
    if (a->n_dns == 0) {
        fprintf(stderr, "vflclip provision: --aggregator needs a host name\n");
        return -1;
    }
    return add_participant(a, VF_ROLE_AGGREGATOR, a->agg_dns[0]);
}

/* 0 ok, 1 --help, -1 usage error */
static int parse_args(int argc, char **argv, provision_args *a) {
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        vf_role role = VF_ROLE_NONE;
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) return 1;
        if (strcmp(f, "--image-party") == 0) role = VF_ROLE_IMAGE_PARTY;
        else if (strcmp(f, "--knowledge-party") == 0) role = VF_ROLE_KNOWLEDGE_PARTY;
        else if (strcmp(f, "--admin") == 0) role = VF_ROLE_ADMIN;
        if (role != VF_ROLE_NONE) {
            int n = 0;
            while (i + 1 < argc && argv[i + 1][0] != '-') {
                if (add_participant(a, role, argv[++i]) != 0) return -1;
                n++;
            }
            if (n == 0) { fprintf(stderr, "vflclip provision: %s needs at least one NAME\n", f); return -1; }
            continue;
        }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip provision: %s needs a value\n", f); return -1; }
        const char *v = argv[++i];
        if (strcmp(f, "--out") == 0) a->out = v;
        else if (strcmp(f, "--aggregator") == 0) {
            if (a->aggregator) { fprintf(stderr, "vflclip provision: one --aggregator per run\n"); return -1; }
            a->aggregator = strdup(v);
            if (!a->aggregator || split_aggregator(a) != 0) return -1;
        } else if (strcmp(f, "--port") == 0) { if (parse_int(f, v, 1, 65535, &a->port)) return -1; }
        else if (strcmp(f, "--days") == 0) { if (parse_int(f, v, 1, 36500, &a->days)) return -1; }
        else if (strcmp(f, "--ca-days") == 0) { if (parse_int(f, v, 1, 36500, &a->ca_days)) return -1; }
        else if (strcmp(f, "--crl-days") == 0) { if (parse_int(f, v, 1, 36500, &a->crl_days)) return -1; }
        else { fprintf(stderr, "vflclip provision: unknown option '%s'\n", f); return -1; }
    }
    if (!a->out) { fprintf(stderr, "vflclip provision: --out DIR is required\n"); return -1; }
    return 0;
}

static void print_created(const char *dir, const char *pem_path) {
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    vf_error err;
    vf_peer_identity id;
    if (vf_pki_load_crt(pem_path, &crt, &err) == 0 && vf_pki_identity_from_crt(&crt, &id, &err) == 0)
        printf("created %s  (%s '%s', serial %s, expires %04d-%02d-%02d)\n", dir, vf_role_name(id.role), id.name, id.serial_hex,
               crt.valid_to.year, crt.valid_to.mon, crt.valid_to.day);
    else printf("created %s\n", dir);
    mbedtls_x509_crt_free(&crt);
}

static int provision(provision_args *a) {
    vf_error err = {{0}};
    char ca_dir[2048];
    if ((size_t)snprintf(ca_dir, sizeof ca_dir, "%s/ca", a->out) >= sizeof ca_dir) { fprintf(stderr, "vflclip provision: %s: path too long\n", a->out); return 1; }

    vf_pki_federation fed;
    if (vf_pki_federation_load(a->out, &fed, &err) != 0) { fprintf(stderr, "vflclip provision: %s\n", err.msg); return 1; }
    int fed_changed = 0;
    if (a->aggregator && !fed.aggregator_name[0]) {
        snprintf(fed.aggregator_name, sizeof fed.aggregator_name, "%s", a->agg_dns[0]);
        snprintf(fed.aggregator_host, sizeof fed.aggregator_host, "%s", a->agg_dns[0]);
        fed.aggregator_port = a->port;
        fed_changed = 1;
    } else if (a->aggregator && strcmp(fed.aggregator_name, a->agg_dns[0]) != 0) {
        printf("note: the federation's starter configs keep dialling aggregator '%s' (%s/federation.ini)\n", fed.aggregator_name, a->out);
    }
    int needs_fed = 0;
    for (int i = 0; i < a->n_parts; i++) needs_fed |= a->parts[i].role != VF_ROLE_AGGREGATOR;
    if (needs_fed && !fed.aggregator_name[0]) {
        fprintf(stderr, "vflclip provision: %s has no aggregator yet; name it with --aggregator HOST[,IP...] so the parties' "
                        "configs know where to dial\n", a->out);
        return 1;
    }

    if (vf_mkdirs(a->out, 0755, &err) != 0) { fprintf(stderr, "vflclip provision: %s\n", err.msg); return 1; }
    vf_pki_rng rng;
    if (vf_pki_rng_init(&rng, &err) != 0) { fprintf(stderr, "vflclip provision: %s\n", err.msg); vf_pki_rng_free(&rng); return 1; }
    int rc = 1;
    vf_pki_ca ca;
    int ca_open = 0;
    struct stat st;
    if (stat(ca_dir, &st) != 0) {
        if (vf_pki_ca_create(ca_dir, a->ca_days, a->crl_days, &rng, &err) != 0) goto out;
        if (vf_pki_ca_open(&ca, ca_dir, &err) != 0) { vf_pki_ca_close(&ca); goto out; }
        char name[256];
        mbedtls_x509_dn_gets(name, sizeof name, &ca.crt.subject);
        printf("created %s  (new CA %s, expires %04d-%02d-%02d; keep ca.key offline)\n", ca_dir, name, ca.crt.valid_to.year,
               ca.crt.valid_to.mon, ca.crt.valid_to.day);
    } else {
        if (vf_pki_ca_open(&ca, ca_dir, &err) != 0) { vf_pki_ca_close(&ca); goto out; }
        printf("using the existing CA in %s\n", ca_dir);
    }
    ca_open = 1;
    if (fed_changed && vf_pki_federation_save(a->out, &fed, &err) != 0) goto out;

    for (int i = 0; i < a->n_parts; i++) {
        vf_pki_participant *p = &a->parts[i];
        if (p->role == VF_ROLE_AGGREGATOR) { p->dns = a->agg_dns; p->n_dns = a->n_dns; p->ips = a->agg_ips; p->n_ips = a->n_ips; }
        char dir[2048], cert[2200];
        if (vf_pki_kit_path(a->out, p->role, p->name, dir, sizeof dir, &err) != 0) goto out;
        int r = vf_pki_kit_create(a->out, &ca, p, &fed, a->days, &rng, &err);
        if (r < 0) goto out;
        if (r == 1) { printf("kept    %s  (exists; its key and certificate are not replaced)\n", dir); continue; }
        snprintf(cert, sizeof cert, "%s/cert.pem", dir);
        print_created(dir, cert);
    }
    rc = 0;
out:
    if (rc != 0) fprintf(stderr, "vflclip provision: %s\n", err.msg);
    if (ca_open) vf_pki_ca_close(&ca);
    vf_pki_rng_free(&rng);
    return rc;
}

int vf_cmd_provision(int argc, char **argv) {
    static provision_args a;
    memset(&a, 0, sizeof a);
    a.port = VF_PKI_DEFAULT_PORT;
    a.days = VF_PKI_LEAF_DAYS;
    a.ca_days = VF_PKI_CA_DAYS;
    a.crl_days = VF_PKI_CRL_DAYS;
    int r = parse_args(argc, argv, &a);
    static char out_dir[2048];
    if (r == 0) {
        /* "fed/" and "fed" are the same federation; keep printed paths tidy. */
        snprintf(out_dir, sizeof out_dir, "%s", a.out);
        for (size_t n = strlen(out_dir); n > 1 && out_dir[n - 1] == '/'; n--) out_dir[n - 1] = 0;
        a.out = out_dir;
    }
    if (r != 0) {
        if (r > 0) usage(stdout);
        else fprintf(stderr, "run 'vflclip provision --help' for the options\n");
        free(a.aggregator);
        return r > 0 ? 0 : 2;
    }
    int rc = provision(&a);
    free(a.aggregator);
    return rc;
}
