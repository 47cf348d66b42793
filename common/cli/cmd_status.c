/* cmd_status: `vflclip status` — what the aggregator says: its name and
 * certificate expiry, the current run (state, epoch, step, loss, best val
 * AUC) and every connected party (role, name, certificate serial and expiry,
 * model fingerprint, state), and the parties refused lately by name (revoked
 * certificate, cut at revocation) with the reason.  --json prints the same
 * as one JSON object. */
#include "cli/admin_client.h"
#include "cli/commands.h"
#include "proto/admin.pb-c.h"
#include "util/log.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void keep_status(const uint8_t *d, size_t n, void *ud) {
    *(Vflclip__V1__StatusReply **)ud = vflclip__v1__status_reply__unpack(NULL, n, d);
}

static void keep_parties(const uint8_t *d, size_t n, void *ud) {
    *(Vflclip__V1__ListPartiesReply **)ud = vflclip__v1__list_parties_reply__unpack(NULL, n, d);
}

/* s as a JSON string (quotes, backslashes and control characters escaped). */
static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static double days_left(int64_t t) { return (double)(t - (int64_t)time(NULL)) / 86400.0; }

static const char *role_name(int r) {
    static const char *const n[] = {"?", "aggregator", "image-party", "knowledge-party", "admin"};
    return r >= 0 && r <= 4 ? n[r] : "?";
}

int vf_cmd_status(int argc, char **argv) {
    vf_log_set_level(VF_WARN);   /* connection chatter is for the daemons' logs */
    const char *admin_path = NULL;
    int timeout_ms = 10000, json = 0;
    argc = vf_admin_take_options(argc, argv, &admin_path, &timeout_ms);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: vflclip status [--admin admin.ini] [--json] [--timeout-ms N]\n"
                   "The aggregator's state, the current run and the connected parties (Admin API, admin certificate).\n");
            return 0;
        } else { fprintf(stderr, "vflclip status: unknown option %s\n", argv[i]); return 2; }
    }
    vf_admin a;
    vf_error err;
    if (vf_admin_load(&a, admin_path, &err)) { fprintf(stderr, "vflclip status: %s\n", err.msg); return 2; }
    a.timeout_ms = timeout_ms;
    Vflclip__V1__StatusReply *s = NULL;
    Vflclip__V1__ListPartiesReply *p = NULL;
    Vflclip__V1__StatusRequest sq = VFLCLIP__V1__STATUS_REQUEST__INIT;
    Vflclip__V1__ListPartiesRequest pq = VFLCLIP__V1__LIST_PARTIES_REQUEST__INIT;
    if (vf_admin_call(&a, "/vflclip.v1.Admin/Status", &sq.base, keep_status, &s, &err) || !s ||
        vf_admin_call(&a, "/vflclip.v1.Admin/ListParties", &pq.base, keep_parties, &p, &err) || !p) {
        fprintf(stderr, "vflclip status: %s\n", err.msg);
        if (s) vflclip__v1__status_reply__free_unpacked(s, NULL);
        return 1;
    }
    if (json) {
        printf("{\"aggregator\":\"%s\",\"version\":\"%s\",\"cert_days_left\":%.1f,\"state\":\"%s\",\"run_id\":\"%s\","
               "\"step\":%llu,\"total_steps\":%llu,\"epoch\":%u,\"total_epochs\":%u,\"parties_connected\":%u,",
               s->aggregator_name, s->software_version, days_left(s->cert_not_after_unix), s->state, s->run_id,
               (unsigned long long)s->step, (unsigned long long)s->total_steps, s->epoch, s->total_epochs,
               s->parties_connected);
        if (isfinite(s->epsilon)) printf("\"epsilon\":%.6f,", s->epsilon);
        else printf("\"epsilon\":null,");
        printf("\"dp_delta\":%g,\"epsilon_budget\":%g,\"loss_at\":", s->dp_delta, s->epsilon_budget);
        json_str(s->loss_at);
        printf(",\"loss_at_note\":");
        json_str(s->loss_at_note);
        printf(",\"parties\":[");
        for (size_t i = 0; i < p->n_parties; i++) {
            const Vflclip__V1__PartyInfo *x = p->parties[i];
            printf("%s{\"role\":\"%s\",\"name\":\"%s\",\"cert_serial\":\"%s\",\"cert_days_left\":%.1f,\"fingerprint\":\"%s\","
                   "\"state\":\"%s\"}", i ? "," : "", role_name(x->role), x->name, x->cert_serial,
                   days_left(x->cert_not_after_unix), x->model_fingerprint, x->state);
        }
        printf("],\"refused\":[");
        for (size_t i = 0; i < s->n_refused; i++) {
            const Vflclip__V1__RefusedParty *x = s->refused[i];
            printf("%s{\"role\":", i ? "," : "");
            json_str(x->role);
            printf(",\"name\":");
            json_str(x->name);
            printf(",\"cert_serial\":");
            json_str(x->cert_serial);
            printf(",\"reason\":");
            json_str(x->reason);
            printf(",\"last_unix\":%lld,\"count\":%u}", (long long)x->last_unix, x->count);
        }
        printf("]}\n");
    } else {
        printf("aggregator  %s (%s), certificate expires in %.0f days\n", s->aggregator_name, s->software_version,
               days_left(s->cert_not_after_unix));
        if (s->run_id[0]) {
            printf("run         %s: %s", s->run_id, s->state);
            if (s->total_epochs) printf(", epoch %u/%u", s->epoch, s->total_epochs);
            printf(", step %llu/%llu", (unsigned long long)s->step, (unsigned long long)s->total_steps);
            if (s->step && isfinite(s->last_loss)) printf(", loss %.4f", s->last_loss);
            if (isfinite(s->best_val_auc)) printf(", best val AUC %.4f", s->best_val_auc);
            printf("\n");
            if (isfinite(s->epsilon)) {
                printf("privacy     epsilon %.4f at delta %g spent on dL/dT", s->epsilon, s->dp_delta);
                if (s->epsilon_budget > 0) printf(" (budget %g)", s->epsilon_budget);
                printf("\n");
            }
            if (s->loss_at[0]) printf("loss at     %s: %s\n", s->loss_at, s->loss_at_note);
            if (s->message[0]) printf("            %s\n", s->message);
        } else {
            printf("run         none yet\n");
        }
        printf("parties     %u connected\n", s->parties_connected);
        printf("  %-16s %-24s %-12s %-10s %-16s %s\n", "ROLE", "NAME", "STATE", "CERT DAYS", "MODEL", "CERT SERIAL");
        for (size_t i = 0; i < p->n_parties; i++) {
            const Vflclip__V1__PartyInfo *x = p->parties[i];
            printf("  %-16s %-24s %-12s %-10.0f %-16.16s %s\n", role_name(x->role), x->name, x->state,
                   days_left(x->cert_not_after_unix), x->model_fingerprint, x->cert_serial);
        }
        if (s->n_refused) {
            printf("refused     %zu parties lately (newest first)\n", s->n_refused);
            for (size_t i = 0; i < s->n_refused; i++) {
                const Vflclip__V1__RefusedParty *x = s->refused[i];
                char when[32];
                time_t t = (time_t)x->last_unix;
                struct tm tm;
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
                printf("  %-16s %-24s %s (serial %s, %u time%s, last %s)\n", x->role, x->name, x->reason,
                       x->cert_serial, x->count, x->count == 1 ? "" : "s", when);
            }
        }
    }
    vflclip__v1__status_reply__free_unpacked(s, NULL);
    vflclip__v1__list_parties_reply__free_unpacked(p, NULL);
    return 0;
}
