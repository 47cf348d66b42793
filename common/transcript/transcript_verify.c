/* transcript_verify: `vflclip transcript verify` — chain, signature, the
 * run's boundaries (run_start at seq 1, run_end last, the signed count that
 * of the last entry), and a party's own log of that run against the
 * transcript (see transcript.h).  Everything read is hostile input: numbers
 * are range-checked before conversion, counters are 64-bit, lines are
 * parsed strictly. */
#include "transcript/transcript.h"
#include "transcript/transcript_internal.h"
#include "pki/pki.h"
#include "pki/pki_issue.h"

#include <cJSON.h>
#include <ctype.h>
#include <mbedtls/base64.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Counters are 64-bit and sizes size_t: a hostile file may have any number
 * of lines, and an int line counter or array capacity would overflow (UB). */
typedef struct line_entry {
    uint64_t line, seq;
    int sent;                 /* party log: 1 sent, 0 received */
    int in_run;               /* party log: under a {"run"} line naming the transcript's run */
    char sender[64], receiver[64], kind[40], sha[65];
} line_entry;

typedef struct entries {
    line_entry *v;
    size_t n, cap;
} entries;

static int push(entries *e, const line_entry *x) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 256;
        if (cap > SIZE_MAX / sizeof *e->v) return -1;
        line_entry *v = realloc(e->v, cap * sizeof *v);
        if (!v) return -1;
        e->v = v;
        e->cap = cap;
    }
    e->v[e->n++] = *x;
    return 0;
}

#define str vf_transcript_str
#define LLU(x) ((unsigned long long)(x))

static int copy(char *dst, size_t size, const char *src) {
    if (!src || strlen(src) >= size) return -1;
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

static int unhex(const char *hex, unsigned char *out, size_t max, size_t *len) {
    size_t n = hex ? strlen(hex) : 1;
    if (n % 2 || n / 2 > max) return -1;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)hex[i])) return -1;
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
static int check_signature(const char *path, unsigned long long line, cJSON *o, const char *run_id, uint64_t entries_n, const char *head,
                           const char *ca_path, const char *cert_path, vf_transcript_report *rep, vf_error *err) {
    uint64_t n;
    const char *h = str(o, "head"), *sig_hex = str(o, "signature"), *b64 = str(o, "cert"), *run = str(o, "run");
    if (vf_transcript_num(o, "entries", &n) || !h || !sig_hex || !b64 || !run)
        return vf_fail(err, "%s line %llu: the end line lacks entries/head/signature/cert", path, line);
    if (strcmp(run, run_id) || n != entries_n || strcmp(h, head))
        return vf_fail(err, "%s line %llu: the end line signs run %s, %llu entries, head %.16s but the last entry is seq %llu of "
                       "run %s with head %.16s (lines were removed or added)", path, line, run, LLU(n), h, LLU(entries_n),
                       run_id, head);
    unsigned char der[8192], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE], hash[32];
    size_t der_len, sig_len;
    if (mbedtls_base64_decode(der, sizeof der, &der_len, (const unsigned char *)b64, strlen(b64)))
        return vf_fail(err, "%s line %llu: the certificate is not base64", path, line);
    if (unhex(sig_hex, sig, sizeof sig, &sig_len)) return vf_fail(err, "%s line %llu: the signature is not hex", path, line);
    mbedtls_x509_crt crt, other;
    mbedtls_x509_crt_init(&crt);
    mbedtls_x509_crt_init(&other);
    int rc = -1, ret;
    vf_peer_identity id;
    if ((ret = mbedtls_x509_crt_parse_der(&crt, der, der_len))) {
        vf_fail(err, "%s line %llu: the certificate does not parse (mbedtls -0x%04x)", path, line, -ret);
        goto out;
    }
    if (vf_pki_identity_from_crt(&crt, &id, err)) { vf_error_prefix(err, "%s line %llu", path, line); goto out; }
    if (id.role != VF_ROLE_AGGREGATOR) {
        vf_fail(err, "%s line %llu: signed by %s '%s', not by an aggregator", path, line, vf_role_name(id.role), id.name);
        goto out;
    }
    if (ca_path) {
        uint32_t flags = 0;
        if (vf_pki_load_crt(ca_path, &other, err)) goto out;
        if (mbedtls_x509_crt_verify(&crt, &other, NULL, NULL, &flags, NULL, NULL)) {
            char why[256];
            mbedtls_x509_crt_verify_info(why, sizeof why, "", flags);
            for (char *c = why; *c; c++) if (*c == '\n') *c = ' ';
            vf_fail(err, "%s line %llu: the signer's certificate (aggregator '%s', serial %s) is not valid under %s: %s", path,
                    line, id.name, id.serial_hex, ca_path, why);
            goto out;
        }
        mbedtls_x509_crt_free(&other);
        mbedtls_x509_crt_init(&other);
    }
    if (cert_path) {
        if (vf_pki_load_crt(cert_path, &other, err)) goto out;
        if (other.raw.len != crt.raw.len || memcmp(other.raw.p, crt.raw.p, crt.raw.len)) {
            vf_fail(err, "%s line %llu: signed with aggregator '%s' serial %s, not with the certificate %s", path, line, id.name,
                    id.serial_hex, cert_path);
            goto out;
        }
    }
    vf_transcript_signed_hash(run_id, entries_n, head, hash);
    if ((ret = mbedtls_pk_verify(&crt.pk, MBEDTLS_MD_SHA256, hash, 0, sig, sig_len))) {
        vf_fail(err, "%s line %llu: the signature does not verify with aggregator '%s' serial %s (mbedtls -0x%04x)", path, line,
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

/* ---- a party's log against the transcript --------------------------------------- */
static int find_sha(const entries *l, size_t from, const char *sha) {
    for (size_t j = from; j < l->n; j++)
        if (!strcmp(l->v[j].sha, sha)) return (int)(j < (size_t)INT32_MAX ? j : INT32_MAX);
    return -1;
}

/* One direction: the transcript's messages t must be the party's messages
 * of the run l from the first on.  After the transcript's last one, the
 * party may have received only a Shutdown (sent after the signature) and
 * may have sent anything (in flight when the run ended): *extra counts those. */
static int match_direction(const char *tpath, const char *lpath, const char *run, const char *dir, const entries *t,
                           const entries *l, int received, uint64_t *extra, vf_error *err) {
    size_t i = 0;
    while (i < t->n && i < l->n && !strcmp(t->v[i].sha, l->v[i].sha)) i++;
    if (i < t->n) {
        const line_entry *te = &t->v[i];
        int j = i == 0 ? find_sha(l, 1, te->sha) : -1;
        if (j > 0)
            return vf_fail(err, "%s line %llu: the party %s %s (%.16s) in run %s before the transcript's first message %s it "
                           "(seq %llu, %s line %llu): the transcript lacks the start of the run", lpath, LLU(l->v[0].line),
                           dir, l->v[0].kind, l->v[0].sha, run, received ? "to" : "from", LLU(te->seq), tpath, LLU(te->line));
        if (i < l->n)
            return vf_fail(err, "%s line %llu: %s message seq %llu %.16s (%s) disagrees with the party log %s line %llu (%.16s, %s)",
                           tpath, LLU(te->line), dir, LLU(te->seq), te->sha, te->kind, lpath, LLU(l->v[i].line), l->v[i].sha,
                           l->v[i].kind);
        return vf_fail(err, "%s line %llu: %s message seq %llu %.16s (%s) is not in the party log %s (run %s)", tpath,
                       LLU(te->line), dir, LLU(te->seq), te->sha, te->kind, lpath, run);
    }
    *extra = 0;
    for (size_t k = i; k < l->n; k++) {
        if (received && strcmp(l->v[k].kind, "shutdown"))
            return vf_fail(err, "%s line %llu: the party received %s (%.16s) in run %s after the transcript's last message to it "
                           "(%s): the transcript was cut at the end", lpath, LLU(l->v[k].line), l->v[k].kind, l->v[k].sha,
                           run, t->n ? "see its last lines" : "it has none");
        (*extra)++;
    }
    return 0;
}

static int check_party_log(const char *tpath, const char *lpath, const entries *all, vf_transcript_report *rep, vf_error *err) {
    FILE *f = fopen(lpath, "r");
    if (!f) return vf_fail_errno(err, lpath);
    entries sent = {0}, recv = {0}, t_sent = {0}, t_recv = {0};
    char serial[64] = "", runs[256] = "", *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t lineno = 0, extra_recv = 0;
    int rc = -1, in_run = 0, seen_run = 0;
    line_entry last = {0};
    while ((len = getline(&buf, &cap, f)) > 0) {
        lineno++;
        const char *why = NULL;
        cJSON *o = vf_transcript_parse_line(buf, (size_t)len, &why);
        if (!o) { vf_fail(err, "%s line %llu: %s", lpath, LLU(lineno), why); goto out; }
        if (lineno == 1) {
            int bad = copy(serial, sizeof serial, str(o, "serial"));
            snprintf(rep->party_name, sizeof rep->party_name, "%s", str(o, "party") ? str(o, "party") : "?");
            cJSON_Delete(o);
            if (bad) { vf_fail(err, "%s line 1: no party serial", lpath); goto out; }
            continue;
        }
        const char *run = str(o, "run");
        if (run && !cJSON_GetObjectItemCaseSensitive(o, "dir")) {
            in_run = !strcmp(run, rep->run_id);
            seen_run |= in_run;
            if (!in_run && !strstr(runs, run) && strlen(runs) + strlen(run) + 3 < sizeof runs)
                snprintf(runs + strlen(runs), sizeof runs - strlen(runs), "%s'%s'", runs[0] ? ", " : "", run);
            cJSON_Delete(o);
            /* A Hello opens the connection whose Welcome names the run: it belongs to that run. */
            if (last.line == lineno - 1 && last.sent && !strcmp(last.kind, "hello")) {
                entries *from = &sent;
                if (last.in_run && !in_run && from->n) from->n--;
                else if (!last.in_run && in_run) {
                    last.in_run = 1;
                    if (push(&sent, &last)) { vf_fail(err, "out of memory"); goto out; }
                }
            }
            continue;
        }
        line_entry e = {.line = lineno, .in_run = in_run};
        const char *dir = str(o, "dir");
        int bad = !dir || (strcmp(dir, "sent") && strcmp(dir, "received")) || copy(e.sha, sizeof e.sha, str(o, "sha256")) ||
                  copy(e.kind, sizeof e.kind, str(o, "kind"));
        e.sent = dir && !strcmp(dir, "sent");
        cJSON_Delete(o);
        if (bad) { vf_fail(err, "%s line %llu: lacks dir/sha256/kind", lpath, LLU(lineno)); goto out; }
        last = e;
        if (in_run && push(e.sent ? &sent : &recv, &e)) { vf_fail(err, "out of memory"); goto out; }
    }
    if (!seen_run) {
        vf_fail(err, "%s: names no message of run %s (%s%s): the log of another run or another federation", lpath, rep->run_id,
                runs[0] ? "it names run " : "it names no run", runs);
        goto out;
    }
    for (size_t i = 0; i < all->n; i++) {
        if (!strcmp(all->v[i].sender, serial) && push(&t_sent, &all->v[i])) { vf_fail(err, "out of memory"); goto out; }
        if (!strcmp(all->v[i].receiver, serial) && push(&t_recv, &all->v[i])) { vf_fail(err, "out of memory"); goto out; }
    }
    if (t_sent.n + t_recv.n == 0) { vf_fail(err, "%s: no message of party serial %s is in %s", lpath, serial, tpath); goto out; }
    if (match_direction(tpath, lpath, rep->run_id, "received", &t_recv, &recv, 1, &extra_recv, err) ||
        match_direction(tpath, lpath, rep->run_id, "sent", &t_sent, &sent, 0, &rep->party_unrecorded_sent, err))
        goto out;
    rep->party_sent = t_sent.n;
    rep->party_received = t_recv.n;
    uint64_t first = UINT64_MAX, lastseq = 0;
    if (t_sent.n) { first = t_sent.v[0].seq; lastseq = t_sent.v[t_sent.n - 1].seq; }
    if (t_recv.n) {
        if (t_recv.v[0].seq < first) first = t_recv.v[0].seq;
        if (t_recv.v[t_recv.n - 1].seq > lastseq) lastseq = t_recv.v[t_recv.n - 1].seq;
    }
    rep->party_first_seq = first;
    rep->party_last_seq = lastseq;
    rc = 0;
out:
    free(buf);
    fclose(f);
    free(sent.v); free(recv.v); free(t_sent.v); free(t_recv.v);
    return rc;
}

/* ---- the run's boundaries ----------------------------------------------------------- */
static int own_record(const char *kind) {
    return !strcmp(kind, VF_TRANSCRIPT_RUN_START) || !strcmp(kind, VF_TRANSCRIPT_RUN_RESUME) ||
           !strcmp(kind, VF_TRANSCRIPT_RUN_END) || !strcmp(kind, VF_TRANSCRIPT_OPERATOR_DECISION);
}

/* Seq 1 is the run's start, the last entry its end, and the aggregator's own
 * records come from the certificate that signed: a transcript cut at either
 * end, renumbered and re-signed, is refused here. */
static int check_boundaries(const char *path, const entries *all, vf_transcript_report *rep, vf_error *err) {
    if (all->n == 0) return vf_fail(err, "%s: no entries between the header and the signed end", path);
    const line_entry *first = &all->v[0], *last = &all->v[all->n - 1];
    if (!strcmp(first->kind, VF_TRANSCRIPT_OPERATOR_DECISION))
        return vf_fail(err, "%s line %llu: seq 1 records an operator decision (sha256 %.16s) to go on without the transcript's "
                       "beginning: it does not cover the start of run %s", path, LLU(first->line), first->sha, rep->run_id);
    if (strcmp(first->kind, VF_TRANSCRIPT_RUN_START))
        return vf_fail(err, "%s line %llu: the transcript does not start with the run's start record (seq 1 is %s from %s): "
                       "its beginning is missing", path, LLU(first->line), first->kind, first->sender);
    if (strcmp(last->kind, VF_TRANSCRIPT_RUN_END))
        return vf_fail(err, "%s line %llu: the last entry (seq %llu, %s) is not the run's end record: the transcript was cut "
                       "at the end", path, LLU(last->line), LLU(last->seq), last->kind);
    for (size_t i = 0; i < all->n; i++) {
        const line_entry *e = &all->v[i];
        if (!own_record(e->kind)) continue;
        if (strcasecmp(e->sender, rep->signer_serial) || strcmp(e->receiver, "-"))
            return vf_fail(err, "%s line %llu: a %s record from %s to %s, not from the signing aggregator (serial %s)", path,
                           LLU(e->line), e->kind, e->sender, e->receiver, rep->signer_serial);
        if ((!strcmp(e->kind, VF_TRANSCRIPT_RUN_START) && e != first) || (!strcmp(e->kind, VF_TRANSCRIPT_RUN_END) && e != last))
            return vf_fail(err, "%s line %llu: a %s record at seq %llu of %llu: two runs in one transcript?", path, LLU(e->line),
                           e->kind, LLU(e->seq), LLU(last->seq));
        if (!strcmp(e->kind, VF_TRANSCRIPT_RUN_RESUME)) rep->resumes++;
        if (!strcmp(e->kind, VF_TRANSCRIPT_OPERATOR_DECISION) && rep->decisions++ == 0) rep->first_decision_seq = e->seq;
    }
    return 0;
}

int vf_transcript_verify(const char *path, const char *ca_path, const char *cert_path, const char *party_log,
                         vf_transcript_report *rep, vf_error *err) {
    memset(rep, 0, sizeof *rep);
    if (!ca_path && !cert_path) return vf_fail(err, "give the federation CA (--ca) or the aggregator certificate (--cert)");
    FILE *f = fopen(path, "r");
    if (!f) return vf_fail_errno(err, path);
    entries all = {0};
    unsigned char head[32];
    char head_hex[65] = "", *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t lineno = 0;
    int rc = -1, ended = 0;
    while ((len = getline(&buf, &cap, f)) > 0) {
        lineno++;
        if (ended) { vf_fail(err, "%s line %llu: a line after the signed end", path, LLU(lineno)); goto out; }
        const char *why = NULL;
        cJSON *o = vf_transcript_parse_line(buf, (size_t)len, &why);
        if (!o) { vf_fail(err, "%s line %llu: %s", path, LLU(lineno), why); goto out; }
        if (lineno == 1) {
            int bad = copy(rep->run_id, sizeof rep->run_id, str(o, "run")) || !str(o, "transcript");
            cJSON_Delete(o);
            if (bad) { vf_fail(err, "%s line 1: not a vflclip transcript header", path); goto out; }
            vf_transcript_genesis(rep->run_id, head);
            continue;
        }
        if (cJSON_GetObjectItemCaseSensitive(o, "end")) {
            vf_sha256_hex(head, head_hex);
            int bad = check_signature(path, LLU(lineno), o, rep->run_id, rep->entries, head_hex, ca_path, cert_path, rep, err);
            cJSON_Delete(o);
            if (bad) goto out;
            ended = 1;
            continue;
        }
        uint64_t seq, task, step;
        line_entry e = {.line = lineno};
        const char *loss = str(o, "loss"), *chain = str(o, "chain");
        /* Every field is bounded (loss as the writer's 31 characters), so the
         * chain text is never cut short and always says what the line says. */
        int bad = vf_transcript_num(o, "seq", &seq) || vf_transcript_num(o, "task", &task) ||
                  vf_transcript_num(o, "step", &step) || !loss || strlen(loss) > 31 || !chain ||
                  copy(e.sender, sizeof e.sender, str(o, "sender")) || copy(e.receiver, sizeof e.receiver, str(o, "receiver")) ||
                  copy(e.kind, sizeof e.kind, str(o, "kind")) || copy(e.sha, sizeof e.sha, str(o, "sha256"));
        if (bad) {
            cJSON_Delete(o);
            vf_fail(err, "%s line %llu: a field is missing or malformed (seq, task and step are whole numbers up to 2^53)", path,
                    LLU(lineno));
            goto out;
        }
        if (seq != rep->entries + 1) {
            cJSON_Delete(o);
            vf_fail(err, "%s line %llu: entry %llu where %llu was due (an entry was dropped or moved)", path, LLU(lineno),
                    LLU(seq), LLU(rep->entries + 1));
            goto out;
        }
        e.seq = seq;
        vf_transcript_chain_step(head, seq, e.sender, e.receiver, task, e.kind, step, e.sha, loss);
        vf_sha256_hex(head, head_hex);
        int same = !strcmp(head_hex, chain);
        cJSON_Delete(o);
        if (!same) {
            vf_fail(err, "%s line %llu: the hash chain breaks here (this line or its chain value was changed)", path, LLU(lineno));
            goto out;
        }
        rep->entries++;
        if (push(&all, &e)) { vf_fail(err, "out of memory"); goto out; }
    }
    if (lineno == 0) { vf_fail(err, "%s: empty", path); goto out; }
    if (!ended) { vf_fail(err, "%s: no signed end line (the run has not ended, or the end was cut off)", path); goto out; }
    if (check_boundaries(path, &all, rep, err)) goto out;
    snprintf(rep->head, sizeof rep->head, "%s", head_hex);
    if (party_log && check_party_log(path, party_log, &all, rep, err)) goto out;
    rc = 0;
out:
    free(buf);
    free(all.v);
    fclose(f);
    return rc;
}
