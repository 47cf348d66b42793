/* transcript_verify: `vflclip transcript verify` — chain, signature, and a
 * party's own log against the transcript (see transcript.h). */
#include "transcript/transcript.h"
#include "transcript/transcript_internal.h"
#include "pki/pki.h"
#include "pki/pki_issue.h"

#include <cJSON.h>
#include <mbedtls/base64.h>
#include <stdlib.h>
#include <string.h>

typedef struct line_entry {
    int line;
    char sender[64], receiver[64], kind[40], sha[65];
} line_entry;

typedef struct entries {
    line_entry *v;
    int n, cap;
} entries;

static int push(entries *e, const line_entry *x) {
    if (e->n == e->cap) {
        int cap = e->cap ? 2 * e->cap : 256;
        line_entry *v = realloc(e->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        e->v = v;
        e->cap = cap;
    }
    e->v[e->n++] = *x;
    return 0;
}

static const char *str(cJSON *o, const char *key) {
    cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int num(cJSON *o, const char *key, unsigned long long *out) {
    cJSON *v = cJSON_GetObjectItem(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0) return -1;
    *out = (unsigned long long)v->valuedouble;
    return 0;
}

static int copy(char *dst, size_t size, const char *src) {
    if (!src || strlen(src) >= size) return -1;
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

static int unhex(const char *hex, unsigned char *out, size_t max, size_t *len) {
    size_t n = hex ? strlen(hex) : 1;
    if (n % 2 || n / 2 > max) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    *len = n / 2;
    return 0;
}

/* The end line: the certificate is an aggregator's (chained to ca_path, equal
 * to cert_path) and its key signed the head. */
static int check_signature(const char *path, int line, cJSON *o, const char *run_id, uint64_t entries_n, const char *head,
                           const char *ca_path, const char *cert_path, vf_transcript_report *rep, vf_error *err) {
    unsigned long long n;
    const char *h = str(o, "head"), *sig_hex = str(o, "signature"), *b64 = str(o, "cert"), *run = str(o, "run");
    if (num(o, "entries", &n) || !h || !sig_hex || !b64 || !run)
        return vf_fail(err, "%s line %d: the end line lacks entries/head/signature/cert", path, line);
    if (strcmp(run, run_id) || n != entries_n || strcmp(h, head))
        return vf_fail(err, "%s line %d: the end line says run %s, %llu entries, head %.16s but the chain gives %s, %llu, %.16s",
                       path, line, run, n, h, run_id, (unsigned long long)entries_n, head);
    unsigned char der[8192], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE], hash[32];
    size_t der_len, sig_len;
    if (mbedtls_base64_decode(der, sizeof der, &der_len, (const unsigned char *)b64, strlen(b64)))
        return vf_fail(err, "%s line %d: the certificate is not base64", path, line);
    if (unhex(sig_hex, sig, sizeof sig, &sig_len)) return vf_fail(err, "%s line %d: the signature is not hex", path, line);
    mbedtls_x509_crt crt, other;
    mbedtls_x509_crt_init(&crt);
    mbedtls_x509_crt_init(&other);
    int rc = -1, ret;
    vf_peer_identity id;
    if ((ret = mbedtls_x509_crt_parse_der(&crt, der, der_len))) {
        vf_fail(err, "%s line %d: the certificate does not parse (mbedtls -0x%04x)", path, line, -ret);
        goto out;
    }
    if (vf_pki_identity_from_crt(&crt, &id, err)) { vf_error_prefix(err, "%s line %d", path, line); goto out; }
    if (id.role != VF_ROLE_AGGREGATOR) {
        vf_fail(err, "%s line %d: signed by %s '%s', not by an aggregator", path, line, vf_role_name(id.role), id.name);
        goto out;
    }
    if (ca_path) {
        uint32_t flags = 0;
        if (vf_pki_load_crt(ca_path, &other, err)) goto out;
        if (mbedtls_x509_crt_verify(&crt, &other, NULL, NULL, &flags, NULL, NULL)) {
            char why[256];
            mbedtls_x509_crt_verify_info(why, sizeof why, "", flags);
            for (char *c = why; *c; c++) if (*c == '\n') *c = ' ';
            vf_fail(err, "%s line %d: the signer's certificate (aggregator '%s', serial %s) is not valid under %s: %s", path,
                    line, id.name, id.serial_hex, ca_path, why);
            goto out;
        }
        mbedtls_x509_crt_free(&other);
        mbedtls_x509_crt_init(&other);
    }
    if (cert_path) {
        if (vf_pki_load_crt(cert_path, &other, err)) goto out;
        if (other.raw.len != crt.raw.len || memcmp(other.raw.p, crt.raw.p, crt.raw.len)) {
            vf_fail(err, "%s line %d: signed with aggregator '%s' serial %s, not with the certificate %s", path, line, id.name,
                    id.serial_hex, cert_path);
            goto out;
        }
    }
    vf_transcript_signed_hash(run_id, entries_n, head, hash);
    if ((ret = mbedtls_pk_verify(&crt.pk, MBEDTLS_MD_SHA256, hash, 0, sig, sig_len))) {
        vf_fail(err, "%s line %d: the signature does not verify with aggregator '%s' serial %s (mbedtls -0x%04x)", path, line,
                id.name, id.serial_hex, -ret);
        goto out;
    }
    snprintf(rep->signer_name, sizeof rep->signer_name, "%s", id.name);
    snprintf(rep->signer_serial, sizeof rep->signer_serial, "%s", id.serial_hex);
    rc = 0;
out:
    mbedtls_x509_crt_free(&crt);
    mbedtls_x509_crt_free(&other);
    return rc;
}

/* In one direction, the transcript's messages must be one contiguous run of the party's log. */
static int match_direction(const char *tpath, const char *lpath, const char *dir, const entries *t, const entries *l,
                           vf_error *err) {
    if (t->n == 0) return 0;
    int best = -1, best_len = -1;
    for (int start = 0; start < l->n; start++) {
        if (strcmp(l->v[start].sha, t->v[0].sha)) continue;
        int k = 0;
        while (k < t->n && start + k < l->n && !strcmp(l->v[start + k].sha, t->v[k].sha)) k++;
        if (k == t->n) return 0;
        if (k > best_len) { best_len = k; best = start; }
    }
    if (best < 0)
        return vf_fail(err, "%s line %d: %s message %s (%s) is not in the party log %s", tpath, t->v[0].line, dir,
                       t->v[0].sha, t->v[0].kind, lpath);
    const line_entry *te = &t->v[best_len];
    if (best + best_len < l->n)
        return vf_fail(err, "%s line %d: %s message %.16s (%s) disagrees with the party log %s line %d (%.16s, %s)", tpath,
                       te->line, dir, te->sha, te->kind, lpath, l->v[best + best_len].line, l->v[best + best_len].sha,
                       l->v[best + best_len].kind);
    return vf_fail(err, "%s line %d: %s message %.16s (%s) is missing from the party log %s", tpath, te->line, dir, te->sha,
                   te->kind, lpath);
}

static int check_party_log(const char *tpath, const char *lpath, const entries *all, vf_transcript_report *rep, vf_error *err) {
    FILE *f = fopen(lpath, "r");
    if (!f) return vf_fail_errno(err, lpath);
    entries sent = {0}, recv = {0}, t_sent = {0}, t_recv = {0};
    char serial[64] = "", *buf = NULL;
    size_t cap = 0;
    int lineno = 0, rc = -1;
    while (getline(&buf, &cap, f) > 0) {
        lineno++;
        cJSON *o = cJSON_Parse(buf);
        if (!o) { vf_fail(err, "%s line %d: not JSON", lpath, lineno); goto out; }
        if (lineno == 1) {
            int bad = copy(serial, sizeof serial, str(o, "serial"));
            cJSON_Delete(o);
            if (bad) { vf_fail(err, "%s line 1: no party serial", lpath); goto out; }
            continue;
        }
        line_entry e = {.line = lineno};
        const char *dir = str(o, "dir");
        int bad = !dir || copy(e.sha, sizeof e.sha, str(o, "sha256")) || copy(e.kind, sizeof e.kind, str(o, "kind"));
        int is_sent = dir && !strcmp(dir, "sent");
        cJSON_Delete(o);
        if (bad) { vf_fail(err, "%s line %d: lacks dir/sha256/kind", lpath, lineno); goto out; }
        if (push(is_sent ? &sent : &recv, &e)) { vf_fail(err, "out of memory"); goto out; }
    }
    for (int i = 0; i < all->n; i++) {
        if (!strcmp(all->v[i].sender, serial) && push(&t_sent, &all->v[i])) { vf_fail(err, "out of memory"); goto out; }
        if (!strcmp(all->v[i].receiver, serial) && push(&t_recv, &all->v[i])) { vf_fail(err, "out of memory"); goto out; }
    }
    if (t_sent.n + t_recv.n == 0) { vf_fail(err, "%s: no message of party serial %s is in %s", lpath, serial, tpath); goto out; }
    if (match_direction(tpath, lpath, "sent", &t_sent, &sent, err) ||
        match_direction(tpath, lpath, "received", &t_recv, &recv, err))
        goto out;
    rep->party_sent = t_sent.n;
    rep->party_received = t_recv.n;
    rc = 0;
out:
    free(buf);
    fclose(f);
    free(sent.v); free(recv.v); free(t_sent.v); free(t_recv.v);
    return rc;
}

int vf_transcript_verify(const char *path, const char *ca_path, const char *cert_path, const char *party_log,
                         vf_transcript_report *rep, vf_error *err) {
    memset(rep, 0, sizeof *rep);
    if (!ca_path && !cert_path) return vf_fail(err, "give the federation CA (--ca) or the aggregator certificate (--cert)");
    FILE *f = fopen(path, "r");
    if (!f) return vf_fail_errno(err, path);
    entries all = {0};
    unsigned char head[32];
    char head_hex[65], *buf = NULL;
    size_t cap = 0;
    int lineno = 0, rc = -1, ended = 0;
    while (getline(&buf, &cap, f) > 0) {
        lineno++;
        if (ended) { vf_fail(err, "%s line %d: a line after the signed end", path, lineno); goto out; }
        cJSON *o = cJSON_Parse(buf);
        if (!o) { vf_fail(err, "%s line %d: not JSON", path, lineno); goto out; }
        if (lineno == 1) {
            int bad = copy(rep->run_id, sizeof rep->run_id, str(o, "run")) || !str(o, "transcript");
            cJSON_Delete(o);
            if (bad) { vf_fail(err, "%s line 1: not a vflclip transcript header", path); goto out; }
            vf_transcript_genesis(rep->run_id, head);
            continue;
        }
        if (cJSON_GetObjectItem(o, "end")) {
            vf_sha256_hex(head, head_hex);
            int bad = check_signature(path, lineno, o, rep->run_id, rep->entries, head_hex, ca_path, cert_path, rep, err);
            cJSON_Delete(o);
            if (bad) goto out;
            ended = 1;
            continue;
        }
        unsigned long long seq, task, step;
        line_entry e = {.line = lineno};
        const char *loss = str(o, "loss"), *chain = str(o, "chain");
        int bad = num(o, "seq", &seq) || num(o, "task", &task) || num(o, "step", &step) || !loss || !chain ||
                  copy(e.sender, sizeof e.sender, str(o, "sender")) || copy(e.receiver, sizeof e.receiver, str(o, "receiver")) ||
                  copy(e.kind, sizeof e.kind, str(o, "kind")) || copy(e.sha, sizeof e.sha, str(o, "sha256"));
        if (bad) { cJSON_Delete(o); vf_fail(err, "%s line %d: a field is missing or malformed", path, lineno); goto out; }
        if (seq != rep->entries + 1) {
            cJSON_Delete(o);
            vf_fail(err, "%s line %d: entry %llu where %llu was due (an entry was dropped or moved)", path, lineno, seq,
                    (unsigned long long)rep->entries + 1);
            goto out;
        }
        vf_transcript_chain_step(head, seq, e.sender, e.receiver, task, e.kind, step, e.sha, loss);
        vf_sha256_hex(head, head_hex);
        int same = !strcmp(head_hex, chain);
        cJSON_Delete(o);
        if (!same) {
            vf_fail(err, "%s line %d: the hash chain breaks here (this line or its chain value was changed)", path, lineno);
            goto out;
        }
        rep->entries++;
        if (push(&all, &e)) { vf_fail(err, "out of memory"); goto out; }
    }
    if (lineno == 0) { vf_fail(err, "%s: empty", path); goto out; }
    if (!ended) { vf_fail(err, "%s: no signed end line (the run has not ended, or the end was cut off)", path); goto out; }
    snprintf(rep->head, sizeof rep->head, "%s", head_hex);
    if (party_log && check_party_log(path, party_log, &all, rep, err)) goto out;
    rc = 0;
out:
    free(buf);
    free(all.v);
    fclose(f);
    return rc;
}
