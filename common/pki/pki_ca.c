/* pki_ca: the CA directory, staged directories and the revocation-list
 * update (see pki_ca.h). */
#include "pki/pki_ca.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <mbedtls/platform_util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pki/mbedtls_compat.h"
#include "pki/pki_crl.h"
#include "util/fileio.h"

int vf_pki_write_file(const char *path, const void *data, size_t len, int mode, vf_error *err) {
    vf_atomic_file f;
    if (vf_atomic_open(&f, path, err) != 0) return -1;
    /* Narrow the mode before a single byte is written. */
    if (fchmod(f.fd, (mode_t)mode) != 0) { vf_fail_errno(err, f.tmp); vf_atomic_abort(&f); return -1; }
    if (vf_atomic_write(&f, data, len, err) != 0) { vf_atomic_abort(&f); return -1; }
    return vf_atomic_commit(&f, err);
}

static int path_join(char *out, size_t size, const char *dir, const char *name, vf_error *err) {
    if ((size_t)snprintf(out, size, "%s/%s", dir, name) >= size) return vf_fail(err, "%s/%s: path too long", dir, name);
    return 0;
}

int vf_pki_stage_begin(vf_pki_staged_dir *d, const char *final_dir, vf_error *err) {
    if (strlen(final_dir) >= sizeof d->final) return vf_fail(err, "%s: path too long", final_dir);
    snprintf(d->final, sizeof d->final, "%s", final_dir);
    const char *slash = strrchr(final_dir, '/');
    int plen = slash ? (int)(slash - final_dir) : 0;
    const char *base = slash ? slash + 1 : final_dir;
    if (slash) snprintf(d->tmp, sizeof d->tmp, "%.*s/.%s.tmp.%d", plen, final_dir, base, (int)getpid());
    else snprintf(d->tmp, sizeof d->tmp, ".%s.tmp.%d", base, (int)getpid());
    struct stat st;
    if (stat(d->final, &st) == 0) return vf_fail(err, "%s: already exists", d->final);
    if (mkdir(d->tmp, 0700) != 0) return vf_fail_errno(err, d->tmp);
    return 0;
}

int vf_pki_stage_file(vf_pki_staged_dir *d, const char *name, const void *data, size_t len, int private_file, vf_error *err) {
    char path[2400];
    if (path_join(path, sizeof path, d->tmp, name, err) != 0) return -1;
    return vf_pki_write_file(path, data, len, private_file ? 0600 : 0644, err);
}

void vf_pki_stage_abort(vf_pki_staged_dir *d) {
    DIR *dir = opendir(d->tmp);
    if (dir) {
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char path[2400];
            if ((size_t)snprintf(path, sizeof path, "%s/%s", d->tmp, e->d_name) < sizeof path) unlink(path);
        }
        closedir(dir);
    }
    rmdir(d->tmp);
}

int vf_pki_stage_commit(vf_pki_staged_dir *d, vf_error *err) {
    /* rename() would replace an empty directory; refuse any existing one. */
    struct stat st;
    if (stat(d->final, &st) == 0) { vf_pki_stage_abort(d); return vf_fail(err, "%s: appeared while it was being written", d->final); }
    if (rename(d->tmp, d->final) != 0) { vf_fail_errno(err, d->final); vf_pki_stage_abort(d); return -1; }
    char parent[2048];
    snprintf(parent, sizeof parent, "%s", d->final);
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    int fd = open(slash ? parent : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) { fsync(fd); close(fd); }
    return 0;
}

int vf_pki_ca_create(const char *dir, int days, int crl_days, vf_pki_rng *rng, vf_error *err) {
    if (days <= 0 || crl_days <= 0) return vf_fail(err, "CA and revocation-list lifetimes must be positive");
    unsigned char id[4];
    if (vf_pki_random(rng, id, sizeof id, err) != 0) return -1;
    char name[32];
    snprintf(name, sizeof name, "vflclip-ca-%02x%02x%02x%02x", id[0], id[1], id[2], id[3]);
    long long now = (long long)time(NULL);
    vf_pki_subject s = {.role = VF_ROLE_NONE, .name = name, .not_before_unix = now - 300, .not_after_unix = now + (long long)days * 86400};

    vf_pki_ca ca;
    memset(&ca, 0, sizeof ca);
    mbedtls_x509_crt_init(&ca.crt);
    mbedtls_pk_init(&ca.key);
    char crt_pem[VF_PKI_PEM_MAX], key_pem[VF_PKI_PEM_MAX];
    char *crl_pem = NULL;
    vf_pki_staged_dir st;
    int staged = 0, rc = -1;
    if (vf_pki_gen_key(&ca.key, rng, err) != 0) goto out;
    if (vf_pki_issue_ca(&s, &ca.key, rng, crt_pem, sizeof crt_pem, err) != 0) goto out;
    if (vf_pki_key_pem(&ca.key, key_pem, sizeof key_pem, err) != 0) goto out;
    if (mbedtls_x509_crt_parse(&ca.crt, (const unsigned char *)crt_pem, strlen(crt_pem) + 1) != 0) {
        vf_fail(err, "the new CA certificate does not parse");
        goto out;
    }
    if (vf_pki_crl_pem(&ca.crt, &ca.key, NULL, 0, 1, now, now + (long long)crl_days * 86400, &rng->drbg, &crl_pem, err) != 0) goto out;
    if (vf_pki_stage_begin(&st, dir, err) != 0) goto out;
    staged = 1;
    if (vf_pki_stage_file(&st, VF_PKI_CA_KEY_FILE, key_pem, strlen(key_pem), 1, err) != 0) goto out;
    if (vf_pki_stage_file(&st, VF_PKI_CA_CRT_FILE, crt_pem, strlen(crt_pem), 0, err) != 0) goto out;
    if (vf_pki_stage_file(&st, VF_PKI_CRL_FILE, crl_pem, strlen(crl_pem), 0, err) != 0) goto out;
    staged = 0;
    rc = vf_pki_stage_commit(&st, err);
out:
    if (staged) vf_pki_stage_abort(&st);
    mbedtls_platform_zeroize(key_pem, sizeof key_pem);
    free(crl_pem);
    mbedtls_x509_crt_free(&ca.crt);
    mbedtls_pk_free(&ca.key);
    return rc;
}

int vf_pki_ca_open(vf_pki_ca *ca, const char *dir, vf_error *err) {
    memset(ca, 0, sizeof *ca);
    mbedtls_x509_crt_init(&ca->crt);
    mbedtls_pk_init(&ca->key);
    if (strlen(dir) + 16 >= sizeof ca->dir) return vf_fail(err, "%s: path too long", dir);
    snprintf(ca->dir, sizeof ca->dir, "%s", dir);
    char path[2200];
    snprintf(path, sizeof path, "%s/%s", dir, VF_PKI_CA_CRT_FILE);
    if (vf_pki_load_crt(path, &ca->crt, err) != 0) return -1;
    if (ca->crt.next != NULL) return vf_fail(err, "%s: holds more than one certificate", path);
    if (!vf_mbedtls_crt_is_ca(&ca->crt)) return vf_fail(err, "%s: is not a CA certificate", path);
    snprintf(path, sizeof path, "%s/%s", dir, VF_PKI_CA_KEY_FILE);
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077) != 0) return vf_fail(err, "%s: mode %03o lets others read the CA key; chmod 600 it", path, st.st_mode & 0777);
    if (vf_pki_load_key(path, &ca->key, err) != 0) return -1;
    if (vf_mbedtls_pk_check_pair(&ca->crt.pk, &ca->key) != 0) return vf_fail(err, "%s: does not match %s/%s", path, dir, VF_PKI_CA_CRT_FILE);
    return 0;
}

void vf_pki_ca_close(vf_pki_ca *ca) {
    mbedtls_x509_crt_free(&ca->crt);
    mbedtls_pk_free(&ca->key);
}

int vf_pki_ca_issued(const vf_pki_ca *ca, const mbedtls_x509_crt *crt, vf_error *err) {
    if (crt->issuer_raw.len != ca->crt.subject_raw.len || memcmp(crt->issuer_raw.p, ca->crt.subject_raw.p, crt->issuer_raw.len) != 0)
        return vf_fail(err, "certificate was issued by a different CA");
    int sig = vf_mbedtls_crt_signed_by(crt, &ca->crt.pk);
    if (sig == VF_MBEDTLS_SIG_DIGEST) return vf_fail(err, "certificate uses an unsupported digest");
    if (sig != 0) return vf_fail(err, "certificate's signature does not verify under this CA");
    return 0;
}

int vf_pki_ca_update_crl(vf_pki_ca *ca, const unsigned char *serial, size_t serial_len, int crl_days, vf_pki_rng *rng,
                         int *added, char **pem, vf_error *err) {
    if (added) *added = 0;
    if (pem) *pem = NULL;
    if (crl_days <= 0) return vf_fail(err, "revocation-list lifetime must be positive");
    if (serial && (serial_len == 0 || serial_len > sizeof ((vf_pki_revoked *)0)->serial)) return vf_fail(err, "serial of %zu bytes", serial_len);
    char path[2200];
    snprintf(path, sizeof path, "%s/%s", ca->dir, VF_PKI_CRL_FILE);
    mbedtls_x509_crl old;
    vf_pki_revoked *entries = NULL;
    int n = 0, rc = -1;
    unsigned long long number = 0;
    char *out = NULL;
    if (vf_pki_load_crl(path, &old, err) != 0) goto done;
    if (old.version != 0) {
        /* Expired is fine here (re-signing is how it is renewed); a foreign signature is not. */
        for (const mbedtls_x509_crl *c = &old; c && c->version; c = c->next)
            if (c->issuer_raw.len != ca->crt.subject_raw.len || memcmp(c->issuer_raw.p, ca->crt.subject_raw.p, c->issuer_raw.len) != 0) {
                vf_fail(err, "%s: was issued by a different CA", path);
                goto done;
            }
        if (old.next != NULL) { vf_fail(err, "%s: holds more than one list", path); goto done; }
        mbedtls_x509_crl check = old;
        check.next_update.year = 0; /* vf_pki_check_crl without the expiry test */
        if (vf_pki_check_crl(&check, &ca->crt, path, err) != 0) goto done;
        if (vf_pki_crl_entries(&old, &entries, &n, &number, err) != 0) { vf_error_prefix(err, "%s", path); goto done; }
    }
    long long now = (long long)time(NULL);
    if (serial) {
        int present = 0;
        for (int i = 0; i < n; i++)
            if (entries[i].serial_len == serial_len && memcmp(entries[i].serial, serial, serial_len) == 0) present = 1;
        if (!present) {
            vf_pki_revoked *grown = realloc(entries, (size_t)(n + 1) * sizeof *grown);
            if (!grown) { vf_fail(err, "out of memory"); goto done; }
            entries = grown;
            memcpy(entries[n].serial, serial, serial_len);
            entries[n].serial_len = serial_len;
            entries[n].revoked_unix = now;
            n++;
            if (added) *added = 1;
        }
    }
    if (vf_pki_crl_pem(&ca->crt, &ca->key, entries, n, number + 1, now, now + (long long)crl_days * 86400, &rng->drbg, &out, err) != 0)
        goto done;
    if (vf_pki_write_file(path, out, strlen(out), 0644, err) != 0) goto done;
    if (pem) { *pem = out; out = NULL; }
    rc = 0;
done:
    mbedtls_x509_crl_free(&old);
    free(entries);
    free(out);
    return rc;
}
