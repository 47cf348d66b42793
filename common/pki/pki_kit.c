/* pki_kit: federation.ini, participant kits and their starter configs, and
 * handing a new revocation list to every kit (see pki_kit.h). */
#include "pki/pki_kit.h"

#include <dirent.h>
#include <ini.h>
#include <mbedtls/platform_util.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "util/fileio.h"

/* ---- federation.ini ------------------------------------------------------- */

static int federation_key(void *user, const char *section, const char *key, const char *value) {
    vf_pki_federation *fed = user;
    if (strcmp(section, "federation") != 0) return 1;
    if (strcmp(key, "aggregator_name") == 0) snprintf(fed->aggregator_name, sizeof fed->aggregator_name, "%s", value);
    else if (strcmp(key, "aggregator_host") == 0) snprintf(fed->aggregator_host, sizeof fed->aggregator_host, "%s", value);
    else if (strcmp(key, "aggregator_port") == 0) fed->aggregator_port = atoi(value);
    return 1;
}

int vf_pki_federation_load(const char *fed_dir, vf_pki_federation *fed, vf_error *err) {
    memset(fed, 0, sizeof *fed);
    char path[2200];
    snprintf(path, sizeof path, "%s/federation.ini", fed_dir);
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    int line = ini_parse(path, federation_key, fed);
    if (line < 0) return vf_fail(err, "%s: cannot be read", path);
    if (line > 0) return vf_fail(err, "%s: line %d is not valid INI", path, line);
    if (fed->aggregator_name[0] && (!vf_pki_name_ok(fed->aggregator_name) || fed->aggregator_host[0] == 0 ||
                                    fed->aggregator_port <= 0 || fed->aggregator_port > 65535))
        return vf_fail(err, "%s: aggregator_name/aggregator_host/aggregator_port are incomplete or invalid", path);
    return 0;
}

int vf_pki_federation_save(const char *fed_dir, const vf_pki_federation *fed, vf_error *err) {
    char path[2200], text[1024];
    snprintf(path, sizeof path, "%s/federation.ini", fed_dir);
    int n = snprintf(text, sizeof text,
                     "; Written by `vflclip provision`; read again when it adds participants, to\n"
                     "; fill in where their starter configs dial the aggregator.\n"
                     "[federation]\n"
                     "aggregator_name = %s\n"
                     "aggregator_host = %s\n"
                     "aggregator_port = %d\n",
                     fed->aggregator_name, fed->aggregator_host, fed->aggregator_port);
    return vf_write_atomic(path, text, (size_t)n, err);
}

/* ---- starter configs ------------------------------------------------------ */

typedef struct text_buf {
    char *p;
    size_t size, len;
    int overflow;
} text_buf;

__attribute__((format(printf, 2, 3))) static void put(text_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->size - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->size - b->len) b->overflow = 1;
    else b->len += (size_t)n;
}

int vf_pki_kit_config(const vf_pki_participant *p, const vf_pki_federation *fed, char *buf, size_t size, vf_error *err) {
    text_buf b = {buf, size, 0, 0};
    const char *role = vf_role_name(p->role);
    put(&b,
        "; vflclip %s \"%s\": starter configuration written by `vflclip provision`.\n"
        "; Relative paths are relative to the directory holding this file.  Keys\n"
        "; marked REQUIRED have no value yet: fill them in before starting.  Later\n"
        "; releases add keys of their own (see the daemon's documentation).\n"
        "; Role and name are not configured: they come from cert.pem.\n\n",
        role, p->name);
    put(&b,
        "[tls]\n"
        "cert = cert.pem\n"
        "key = key.pem\n"
        "ca = ca.crt\n"
        "; Revocation list of the federation; reloaded on SIGHUP and when the file\n"
        "; changes.  `vflclip cert revoke` refreshes it in the kits it can see;\n"
        "; copy DIR/ca/crl.pem here on machines it cannot.\n"
        "crl = crl.pem\n\n");
    if (p->role == VF_ROLE_AGGREGATOR) {
        put(&b,
            "[server]\n"
            "; address and port to listen on (0.0.0.0: every IPv4 interface, :: for IPv6)\n"
            "host = 0.0.0.0\n"
            "port = %d\n\n",
            fed->aggregator_port > 0 ? fed->aggregator_port : VF_PKI_DEFAULT_PORT);
    } else {
        put(&b,
            "[aggregator]\n"
            "; where to dial the aggregator, and the name its certificate must carry\n"
            "host = %s\n"
            "port = %d\n"
            "server_name = %s\n\n",
            fed->aggregator_host, fed->aggregator_port, fed->aggregator_name);
    }
    if (p->role == VF_ROLE_IMAGE_PARTY)
        put(&b,
            "[model]\n"
            "; REQUIRED: CLIP checkpoint directory (Hugging Face config.json + model.safetensors,\n"
            "; or OpenCLIP open_clip_config.json + open_clip_model.safetensors); the vision tower is used\n"
            "dir =\n\n"
            "[data]\n"
            "; REQUIRED: dermamnist*.npz, or an image folder with a labels CSV (image_id, dx)\n"
            "path =\n\n");
    if (p->role == VF_ROLE_KNOWLEDGE_PARTY)
        put(&b,
            "[model]\n"
            "; REQUIRED: CLIP checkpoint directory; the text tower and tokenizer are used\n"
            "dir =\n\n");
    if (p->role != VF_ROLE_ADMIN)
        put(&b,
            "[state]\n"
            "; checkpoints, caches and run state (created if missing)\n"
            "dir = state\n");
    if (b.overflow) return vf_fail(err, "starter config for %s '%s' does not fit in %zu bytes", role, p->name, size);
    return 0;
}

/* ---- kits ------------------------------------------------------------------ */

int vf_pki_kit_path(const char *fed_dir, vf_role role, const char *name, char *out, size_t size, vf_error *err) {
    if (role == VF_ROLE_NONE) return vf_fail(err, "participant '%s' has no role", name);
    if (!vf_pki_name_ok(name)) return vf_fail(err, "name '%s' is not 1..127 characters of [A-Za-z0-9._-]", name);
    if ((size_t)snprintf(out, size, "%s/%s-%s", fed_dir, vf_role_name(role), name) >= size)
        return vf_fail(err, "%s: path too long", fed_dir);
    return 0;
}

int vf_pki_kit_create(const char *fed_dir, vf_pki_ca *ca, const vf_pki_participant *p, const vf_pki_federation *fed, int days,
                      vf_pki_rng *rng, vf_error *err) {
    char dir[2048], ca_path[2200];
    if (vf_pki_kit_path(fed_dir, p->role, p->name, dir, sizeof dir, err) != 0) return -1;
    struct stat st;
    if (stat(dir, &st) == 0) return 1;
    if (days <= 0) return vf_fail(err, "certificate lifetime must be positive");

    char key_pem[VF_PKI_PEM_MAX], crt_pem[VF_PKI_PEM_MAX], config[8192];
    char *ca_crt = NULL, *crl = NULL;
    size_t ca_crt_len = 0, crl_len = 0;
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    vf_pki_staged_dir sd;
    int staged = 0, rc = -1;
    long long now = (long long)time(NULL);
    vf_pki_subject s = {.role = p->role, .name = p->name, .dns = p->dns, .n_dns = p->n_dns, .ips = p->ips, .n_ips = p->n_ips,
                        .not_before_unix = now - 300, .not_after_unix = now + (long long)days * 86400};
    /* A leaf outliving its CA would fail verification early; cap it. */
    long long ca_end = vf_pki_time_to_unix(&ca->crt.valid_to);
    if (s.not_after_unix > ca_end) s.not_after_unix = ca_end;

    snprintf(ca_path, sizeof ca_path, "%s/%s", ca->dir, VF_PKI_CA_CRT_FILE);
    if (vf_read_file(ca_path, &ca_crt, &ca_crt_len, err) != 0) goto out;
    snprintf(ca_path, sizeof ca_path, "%s/%s", ca->dir, VF_PKI_CRL_FILE);
    if (vf_read_file(ca_path, &crl, &crl_len, err) != 0) goto out;
    if (vf_pki_kit_config(p, fed, config, sizeof config, err) != 0) goto out;
    if (vf_pki_gen_key(&key, rng, err) != 0) goto out;
    if (vf_pki_issue_leaf(&s, &key, &ca->crt, &ca->key, rng, crt_pem, sizeof crt_pem, err) != 0) goto out;
    if (vf_pki_key_pem(&key, key_pem, sizeof key_pem, err) != 0) goto out;

    char config_name[64];
    snprintf(config_name, sizeof config_name, "%s.ini", vf_role_name(p->role));
    if (vf_pki_stage_begin(&sd, dir, err) != 0) goto out;
    staged = 1;
    if (vf_pki_stage_file(&sd, "key.pem", key_pem, strlen(key_pem), 1, err) != 0) goto out;
    if (vf_pki_stage_file(&sd, "cert.pem", crt_pem, strlen(crt_pem), 0, err) != 0) goto out;
    if (vf_pki_stage_file(&sd, "ca.crt", ca_crt, ca_crt_len, 0, err) != 0) goto out;
    if (vf_pki_stage_file(&sd, VF_PKI_CRL_FILE, crl, crl_len, 0, err) != 0) goto out;
    if (vf_pki_stage_file(&sd, config_name, config, strlen(config), 0, err) != 0) goto out;
    staged = 0;
    rc = vf_pki_stage_commit(&sd, err);
out:
    if (staged) vf_pki_stage_abort(&sd);
    if (rc != 0) vf_error_prefix(err, "%s", dir);
    mbedtls_platform_zeroize(key_pem, sizeof key_pem);
    mbedtls_pk_free(&key);
    free(ca_crt);
    free(crl);
    return rc;
}

int vf_pki_kits_refresh_crl(const char *fed_dir, const char *crl_pem, int *n_kits, vf_error *err) {
    *n_kits = 0;
    DIR *d = opendir(fed_dir);
    if (!d) return vf_fail_errno(err, fed_dir);
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "ca") == 0) continue;
        char cert[2400], crl[2400];
        if ((size_t)snprintf(cert, sizeof cert, "%s/%s/cert.pem", fed_dir, e->d_name) >= sizeof cert) continue;
        snprintf(crl, sizeof crl, "%s/%s/%s", fed_dir, e->d_name, VF_PKI_CRL_FILE);
        struct stat st;
        if (stat(cert, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (vf_write_atomic(crl, crl_pem, strlen(crl_pem), err) != 0) { rc = -1; break; }
        (*n_kits)++;
    }
    closedir(d);
    return rc;
}
