/* cmd_cert: `vflclip cert show|revoke|crl`: read a certificate or revocation
 * list, revoke a participant's certificate, re-sign the revocation list
 * (docs/pki.md). */
#include <math.h>
#include <mbedtls/oid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pki/mbedtls_compat.h"
#include "pki/pki.h"
#include "pki/pki_ca.h"
#include "pki/pki_crl.h"
#include "pki/pki_kit.h"
#include "util/fileio.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: vflclip cert show FILE...\n"
            "       vflclip cert revoke --ca DIR/ca (--cert FILE | --serial HEX) [--crl-days N]\n"
            "       vflclip cert crl --ca DIR/ca [--crl-days N]\n\n"
            "show    prints a certificate's subject, role, name, issuer, serial, validity,\n"
            "        days left, key usages and subjectAltNames (or a revocation list's entries)\n"
            "revoke  adds the certificate to the CA's revocation list, re-signs DIR/ca/crl.pem\n"
            "        and copies it into every kit under DIR\n"
            "crl     re-signs DIR/ca/crl.pem with a fresh next-update (do it before it lapses:\n"
            "        an expired list makes every handshake fail); also copied into the kits\n"
            "  --crl-days N   lifetime of the new list (default %d)\n",
            VF_PKI_CRL_DAYS);
}

static void print_time(const char *label, const mbedtls_x509_time *t) {
    printf("%-13s%04d-%02d-%02d %02d:%02d:%02d UTC\n", label, t->year, t->mon, t->day, t->hour, t->min, t->sec);
}

/* Whole days from now to t, rounded down (negative once t is past). */
static long long days_left(const mbedtls_x509_time *t) {
    return (long long)floor((double)(vf_pki_time_to_unix(t) - (long long)time(NULL)) / 86400.0);
}

static void print_key_usage(const mbedtls_x509_crt *crt) {
    static const struct { unsigned bit; const char *name; } ku[] = {
        {MBEDTLS_X509_KU_DIGITAL_SIGNATURE, "digitalSignature"}, {MBEDTLS_X509_KU_NON_REPUDIATION, "nonRepudiation"},
        {MBEDTLS_X509_KU_KEY_ENCIPHERMENT, "keyEncipherment"},   {MBEDTLS_X509_KU_DATA_ENCIPHERMENT, "dataEncipherment"},
        {MBEDTLS_X509_KU_KEY_AGREEMENT, "keyAgreement"},         {MBEDTLS_X509_KU_KEY_CERT_SIGN, "keyCertSign"},
        {MBEDTLS_X509_KU_CRL_SIGN, "cRLSign"},
    };
    if (vf_mbedtls_crt_has_ext(crt, MBEDTLS_X509_EXT_KEY_USAGE)) {
        printf("%-13s", "key usage:");
        const char *sep = "";
        for (size_t i = 0; i < sizeof ku / sizeof ku[0]; i++)
            if (vf_mbedtls_crt_key_usage(crt) & ku[i].bit) { printf("%s%s", sep, ku[i].name); sep = ", "; }
        printf("\n");
    }
    if (vf_mbedtls_crt_has_ext(crt, MBEDTLS_X509_EXT_EXTENDED_KEY_USAGE)) {
        printf("%-13s", "ext usage:");
        const char *sep = "";
        for (const mbedtls_x509_sequence *s = &crt->ext_key_usage; s && s->buf.p; s = s->next) {
            char oid[64];
            if (MBEDTLS_OID_CMP(MBEDTLS_OID_SERVER_AUTH, &s->buf) == 0) snprintf(oid, sizeof oid, "serverAuth");
            else if (MBEDTLS_OID_CMP(MBEDTLS_OID_CLIENT_AUTH, &s->buf) == 0) snprintf(oid, sizeof oid, "clientAuth");
            else mbedtls_oid_get_numeric_string(oid, sizeof oid, &s->buf);
            printf("%s%s", sep, oid);
            sep = ", ";
        }
        printf("\n");
    }
}

static void print_sans(const mbedtls_x509_crt *crt) {
    if (!vf_mbedtls_crt_has_ext(crt, MBEDTLS_X509_EXT_SUBJECT_ALT_NAME)) return;
    printf("%-13s", "alt names:");
    const char *sep = "";
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
        int type = s->buf.tag & MBEDTLS_ASN1_TAG_VALUE_MASK;
        if (type == MBEDTLS_X509_SAN_DNS_NAME) printf("%sDNS:%.*s", sep, (int)s->buf.len, (const char *)s->buf.p);
        else if (type == MBEDTLS_X509_SAN_IP_ADDRESS && s->buf.len == 4)
            printf("%sIP:%u.%u.%u.%u", sep, s->buf.p[0], s->buf.p[1], s->buf.p[2], s->buf.p[3]);
        else if (type == MBEDTLS_X509_SAN_IP_ADDRESS && s->buf.len == 16) {
            printf("%sIP:", sep);
            for (int i = 0; i < 16; i += 2) printf("%s%x", i ? ":" : "", (s->buf.p[i] << 8) | s->buf.p[i + 1]);
        } else printf("%s[type %d]", sep, type);
        sep = ", ";
    }
    printf("\n");
}

static void show_crt(const char *path, const mbedtls_x509_crt *crt) {
    char dn[512], serial[64];
    printf("%-13s%s\n", "file:", path);
    mbedtls_x509_dn_gets(dn, sizeof dn, &crt->subject);
    printf("%-13s%s\n", "subject:", dn);
    vf_peer_identity id;
    vf_error err;
    if (vf_pki_identity_from_crt(crt, &id, &err) == 0) {
        printf("%-13s%s\n", "role:", vf_role_name(id.role));
        printf("%-13s%s\n", "name:", id.name);
    } else if (vf_mbedtls_crt_is_ca(crt)) {
        printf("%-13s%s\n", "role:", "none (the federation CA)");
    } else {
        printf("%-13snone (%s)\n", "role:", err.msg);
    }
    mbedtls_x509_dn_gets(dn, sizeof dn, &crt->issuer);
    printf("%-13s%s\n", "issuer:", dn);
    vf_pki_serial_to_hex(crt->serial.p, crt->serial.len, serial, sizeof serial);
    printf("%-13s%s\n", "serial:", serial);
    print_time("not before:", &crt->valid_from);
    print_time("not after:", &crt->valid_to);
    long long left = days_left(&crt->valid_to);
    printf("%-13s%lld%s\n", "days left:", left, left < 0 ? " (expired)" : "");
    printf("%-13s%s\n", "ca:", vf_mbedtls_crt_is_ca(crt) ? "yes" : "no");
    print_key_usage(crt);
    print_sans(crt);
}

static void show_crl(const char *path, const mbedtls_x509_crl *crl) {
    char dn[512], serial[80];
    printf("%-13s%s\n", "file:", path);
    printf("%-13s%s\n", "type:", "revocation list");
    mbedtls_x509_dn_gets(dn, sizeof dn, &crl->issuer);
    printf("%-13s%s\n", "issuer:", dn);
    print_time("this update:", &crl->this_update);
    if (crl->next_update.year) {
        print_time("next update:", &crl->next_update);
        long long left = days_left(&crl->next_update);
        printf("%-13s%lld%s\n", "days left:", left, left < 0 ? " (expired: every handshake fails until re-signed)" : "");
    }
    vf_pki_revoked *e;
    int n;
    unsigned long long number;
    vf_error err;
    if (vf_pki_crl_entries(crl, &e, &n, &number, &err) != 0) { printf("%-13s%s\n", "entries:", err.msg); return; }
    printf("%-13s%llu\n", "crl number:", number);
    printf("%-13s%d\n", "revoked:", n);
    for (int i = 0; i < n; i++) {
        vf_pki_serial_to_hex(e[i].serial, e[i].serial_len, serial, sizeof serial);
        time_t t = (time_t)e[i].revoked_unix;
        struct tm tm;
        gmtime_r(&t, &tm);
        printf("  serial %s  revoked %04d-%02d-%02d %02d:%02d:%02d UTC\n", serial, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
               tm.tm_hour, tm.tm_min, tm.tm_sec);
    }
    free(e);
}

static int show_file(const char *path) {
    char *data;
    size_t len;
    vf_error err;
    if (vf_read_file(path, &data, &len, &err) != 0) { fprintf(stderr, "vflclip cert show: %s\n", err.msg); return 1; }
    int rc = 0;
    if (strstr(data, "-----BEGIN X509 CRL-----")) {
        mbedtls_x509_crl crl;
        if (vf_pki_load_crl(path, &crl, &err) != 0) { fprintf(stderr, "vflclip cert show: %s\n", err.msg); rc = 1; }
        else for (const mbedtls_x509_crl *c = &crl; c && c->version; c = c->next) show_crl(path, c);
        mbedtls_x509_crl_free(&crl);
    } else {
        mbedtls_x509_crt crt;
        mbedtls_x509_crt_init(&crt);
        if (vf_pki_load_crt(path, &crt, &err) == 0) {
            for (const mbedtls_x509_crt *c = &crt; c && c->raw.p; c = c->next) {
                if (c != &crt) printf("\n");
                show_crt(path, c);
            }
        } else {
            /* Not a certificate: maybe a DER revocation list. */
            mbedtls_x509_crl crl;
            mbedtls_x509_crl_init(&crl);
            if (len > 0 && mbedtls_x509_crl_parse_der(&crl, (const unsigned char *)data, len) == 0) show_crl(path, &crl);
            else {
                const char *why = err.msg;
                size_t pl = strlen(path);
                if (strncmp(why, path, pl) == 0 && why[pl] == ':') why += pl + 2;
                fprintf(stderr, "vflclip cert show: %s: neither a certificate nor a revocation list (%s)\n", path, why);
                rc = 1;
            }
            mbedtls_x509_crl_free(&crl);
        }
        mbedtls_x509_crt_free(&crt);
    }
    free(data);
    return rc;
}

/* The federation directory is the CA directory's parent. */
static void parent_dir(const char *ca_dir, char *out, size_t size) {
    snprintf(out, size, "%s", ca_dir);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = 0;
    char *slash = strrchr(out, '/');
    if (!slash) snprintf(out, size, ".");
    else if (slash == out) out[1] = 0;
    else *slash = 0;
}

static int update_crl(int argc, char **argv, int revoke) {
    const char *cmd = revoke ? "vflclip cert revoke" : "vflclip cert crl";
    const char *ca_dir = NULL, *cert_path = NULL, *serial_hex = NULL;
    int crl_days = VF_PKI_CRL_DAYS;
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) { usage(stdout); return 0; }
        if (i + 1 >= argc) { fprintf(stderr, "%s: %s needs a value\n", cmd, f); return 2; }
        const char *v = argv[++i];
        if (strcmp(f, "--ca") == 0) ca_dir = v;
        else if (revoke && strcmp(f, "--cert") == 0) cert_path = v;
        else if (revoke && strcmp(f, "--serial") == 0) serial_hex = v;
        else if (strcmp(f, "--crl-days") == 0) {
            char *end;
            long d = strtol(v, &end, 10);
            if (*end || d < 1 || d > 36500) { fprintf(stderr, "%s: --crl-days needs a number in 1..36500, got '%s'\n", cmd, v); return 2; }
            crl_days = (int)d;
        } else { fprintf(stderr, "%s: unknown option '%s'\n", cmd, f); usage(stderr); return 2; }
    }
    if (!ca_dir) { fprintf(stderr, "%s: --ca DIR/ca is required\n", cmd); return 2; }
    if (revoke && !!cert_path == !!serial_hex) { fprintf(stderr, "%s: give exactly one of --cert FILE and --serial HEX\n", cmd); return 2; }

    vf_error err = {{0}};
    vf_pki_ca ca;
    vf_pki_rng rng;
    int rng_ok = 0, rc = 1;
    unsigned char serial[32];
    size_t serial_len = 0;
    char *pem = NULL;
    if (vf_pki_ca_open(&ca, ca_dir, &err) != 0) goto out;
    if (cert_path) {
        mbedtls_x509_crt crt;
        mbedtls_x509_crt_init(&crt);
        int ok = vf_pki_load_crt(cert_path, &crt, &err) == 0;
        if (ok && crt.serial.len > sizeof serial) ok = 0, vf_fail(&err, "%s: serial of %zu bytes", cert_path, crt.serial.len);
        if (ok && vf_pki_ca_issued(&ca, &crt, &err) != 0) ok = 0, vf_error_prefix(&err, "%s", cert_path);
        if (ok) { memcpy(serial, crt.serial.p, crt.serial.len); serial_len = crt.serial.len; }
        mbedtls_x509_crt_free(&crt);
        if (!ok) goto out;
    } else if (serial_hex && vf_pki_serial_from_hex(serial_hex, serial, sizeof serial, &serial_len, &err) != 0) goto out;
    if (vf_pki_rng_init(&rng, &err) != 0) { vf_pki_rng_free(&rng); goto out; }
    rng_ok = 1;
    int added = 0;
    if (vf_pki_ca_update_crl(&ca, revoke ? serial : NULL, serial_len, crl_days, &rng, &added, &pem, &err) != 0) goto out;
    char hex[80], fed_dir[2048];
    if (revoke) {
        vf_pki_serial_to_hex(serial, serial_len, hex, sizeof hex);
        printf("%s serial %s in %s/%s\n", added ? "revoked" : "already revoked:", hex, ca_dir, VF_PKI_CRL_FILE);
    } else {
        printf("re-signed %s/%s (valid %d days)\n", ca_dir, VF_PKI_CRL_FILE, crl_days);
    }
    parent_dir(ca_dir, fed_dir, sizeof fed_dir);
    int n_kits = 0;
    if (vf_pki_kits_refresh_crl(fed_dir, pem, &n_kits, &err) != 0) goto out;
    printf("copied it to %d kit%s under %s; on other machines copy it to each kit's crl.pem (daemons reload it on SIGHUP or change)\n",
           n_kits, n_kits == 1 ? "" : "s", fed_dir);
    rc = 0;
out:
    if (rc != 0) fprintf(stderr, "%s: %s\n", cmd, err.msg);
    free(pem);
    if (rng_ok) vf_pki_rng_free(&rng);
    vf_pki_ca_close(&ca);
    return rc;
}

int vf_cmd_cert(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "show") == 0) {
        if (argc < 3) { usage(stderr); return 2; }
        int rc = 0;
        for (int i = 2; i < argc; i++) {
            if (i > 2) printf("\n");
            rc |= show_file(argv[i]);
        }
        return rc;
    }
    if (strcmp(argv[1], "revoke") == 0) return update_crl(argc, argv, 1);
    if (strcmp(argv[1], "crl") == 0) return update_crl(argc, argv, 0);
    fprintf(stderr, "vflclip cert: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
