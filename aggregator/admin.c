/* admin: the Admin service on the aggregator, callable only with an admin
 * certificate: Status, ListParties, StartRun, AbortRun, WatchRun (a stream
 * of RunEvents until the run ends), GetResults (a run directory's files),
 * and the run history: ListRuns, ShowRun (every run kept in
 * <state>/runs/<id>, read from its files) and ContinueRun.  Start, abort,
 * continue and results fetches are written to the audit log with the
 * certificate that asked. */
#include "agg.h"
#include "daemon/audit.h"
#include "formats/sealed_json.h"
#include "util/fileio.h"
#include "util/log.h"

#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#define MAX_WATCHERS 32
static vf_rpc_call *g_watchers[MAX_WATCHERS];

static void reply(vf_rpc_call *call, const ProtobufCMessage *m) {
    vf_error err;
    if (vf_rpc_call_send_pb(call, m, &err) || vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err))
        vf_log(VF_WARN, "event=admin_reply_failed method=%s error=\"%s\"", vf_rpc_call_path(call), err.msg);
}

static void fail(vf_rpc_call *call, int status, const char *msg) {
    vf_error err;
    vf_rpc_call_finish(call, status, msg, &err);
}

/* ---- parties refused by name (Status.refused) -------------------------------------- */
/* The latest refusals of named certificates (revoked, cut at revocation, a
 * call refused), one row per certificate, the oldest row dropped when full.
 * Fed by main.c's on_refused; shown by `vflclip status`. */
#define AGG_REFUSED_MAX 8
static struct {
    char role[32], name[128], serial[64], reason[256];
    int64_t last_unix;
    uint32_t count;
} g_refused[AGG_REFUSED_MAX];
static int g_n_refused;

void agg_admin_note_refusal(const char *role, const char *name, const char *serial, const char *reason) {
    if (!name || !name[0]) return;
    int i = 0;
    while (i < g_n_refused && !(strcmp(g_refused[i].name, name) == 0 && strcmp(g_refused[i].serial, serial) == 0 &&
                                strcmp(g_refused[i].role, role) == 0))
        i++;
    uint32_t count = 1;
    if (i < g_n_refused) count = g_refused[i].count + 1;
    else if (g_n_refused < AGG_REFUSED_MAX) g_n_refused++;
    else i = AGG_REFUSED_MAX - 1;     /* full: the oldest row makes room */
    /* newest first: shift rows 0..i-1 down by one, then fill row 0 */
    memmove(&g_refused[1], &g_refused[0], (size_t)i * sizeof g_refused[0]);
    snprintf(g_refused[0].role, sizeof g_refused[0].role, "%s", role);
    snprintf(g_refused[0].name, sizeof g_refused[0].name, "%s", name);
    snprintf(g_refused[0].serial, sizeof g_refused[0].serial, "%s", serial);
    snprintf(g_refused[0].reason, sizeof g_refused[0].reason, "%s", reason);
    g_refused[0].last_unix = (int64_t)time(NULL);
    g_refused[0].count = count;
}

/* ---- Status / ListParties ------------------------------------------------------ */
/* The 1-based epoch in progress, as status and watch show it: the last one
 * between its end and the finishing phase, not one past it. */
static int epoch_shown(const agg_run *r) {
    int e = r->sess.epoch + (r->state == RUN_TRAINING);
    return e > r->cfg.epochs ? r->cfg.epochs : e;
}

static void on_status(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    const agg_run *r = &g_agg.run;
    Vflclip__V1__StatusReply s = VFLCLIP__V1__STATUS_REPLY__INIT;
    char state[64];
    snprintf(state, sizeof state, "%s%s", agg_run_state_name(r->state), r->paused ? "-paused" : "");
    s.state = state;
    s.run_id = (char *)r->id;
    s.step = (uint64_t)r->sess.global_step;
    s.total_steps = (uint64_t)r->sess.total_steps;
    s.last_loss = r->sess.last_loss;
    s.parties_connected = (uint32_t)agg_parties_connected();
    s.started_unix = r->started_unix;
    s.aggregator_name = g_agg.name;
    s.software_version = AGG_VERSION;
    s.epoch = (uint32_t)epoch_shown(r);
    s.total_epochs = (uint32_t)r->cfg.epochs;
    s.best_val_auc = r->sess.best_auc;
    s.message = (char *)r->message;
    s.cert_not_after_unix = g_agg.me.not_after_unix;
    s.epsilon = r->state == RUN_IDLE ? NAN : agg_run_epsilon();
    if (isinf(s.epsilon)) s.epsilon = NAN;
    s.dp_delta = r->cfg.privacy.delta;
    s.epsilon_budget = r->cfg.privacy.epsilon_budget;
    s.loss_at = r->state == RUN_IDLE ? "" : r->cfg.loss_at_parties ? "image-parties" : "aggregator";
    int participants = r->sum.min_participants;
    if (r->cfg.loss_at_parties && participants == 0) participants = r->n_img ? r->n_img : agg_parties_connected();
    s.loss_at_note = r->state == RUN_IDLE ? "" : (char *)vf_loss_at_note(r->cfg.loss_at_parties, participants);
    Vflclip__V1__RefusedParty rp[AGG_REFUSED_MAX], *rpp[AGG_REFUSED_MAX];
    for (int i = 0; i < g_n_refused; i++) {
        vflclip__v1__refused_party__init(&rp[i]);
        rp[i].role = g_refused[i].role;
        rp[i].name = g_refused[i].name;
        rp[i].cert_serial = g_refused[i].serial;
        rp[i].reason = g_refused[i].reason;
        rp[i].last_unix = g_refused[i].last_unix;
        rp[i].count = g_refused[i].count;
        rpp[i] = &rp[i];
    }
    s.n_refused = (size_t)g_n_refused;
    s.refused = rpp;
    reply(call, &s.base);
}

static void on_list_parties(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    Vflclip__V1__PartyInfo infos[AGG_MAX_PARTIES], *ptrs[AGG_MAX_PARTIES];
    int n = 0;
    for (int i = 0; i < AGG_MAX_PARTIES; i++) {
        agg_party *p = &g_agg.parties[i];
        if (!p->used || !p->hello_ok) continue;
        Vflclip__V1__PartyInfo *x = &infos[n];
        vflclip__v1__party_info__init(x);
        x->role = (Vflclip__V1__Role)p->id.role;
        x->name = p->id.name;
        x->cert_serial = p->id.serial_hex;
        x->model_fingerprint = p->fingerprint;
        x->connected_unix = p->connected_unix;
        x->state = p->state;
        x->cert_not_after_unix = p->id.not_after_unix;
        ptrs[n++] = x;
    }
    Vflclip__V1__ListPartiesReply rep = VFLCLIP__V1__LIST_PARTIES_REPLY__INIT;
    rep.n_parties = (size_t)n;
    rep.parties = ptrs;
    reply(call, &rep.base);
}

/* ---- StartRun / AbortRun --------------------------------------------------------- */
static void on_start_run(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    Vflclip__V1__StartRunRequest *q = vflclip__v1__start_run_request__unpack(NULL, len, data);
    if (!q) return fail(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode StartRunRequest");
    char *text = NULL;
    vf_error err;
    if (q->config[0]) text = strdup(q->config);
    else if (g_agg.default_config[0] && vf_read_file(g_agg.default_config, &text, &len, &err)) {
        vflclip__v1__start_run_request__free_unpacked(q, NULL);
        return fail(call, VF_GRPC_FAILED_PRECONDITION, err.msg);
    }
    if (!text) text = strdup("");
    char id[64];
    int status;
    const vf_peer_identity *who = vf_rpc_call_peer(call);
    if (agg_run_start(text, q->run_id, who, id, sizeof id, &status, &err)) {
        char details[1200], quoted[1100];
        snprintf(details, sizeof details, "refused=\"%s\"", vf_log_quote(quoted, sizeof quoted, err.msg));
        vf_error aerr;
        vf_audit(g_agg.audit_path, "run_start_refused", who, details, &aerr);
        vf_log(VF_WARN, "event=run_refused peer=%s reason=\"%s\"", who->name, quoted);
        fail(call, status, err.msg);
    } else {
        Vflclip__V1__StartRunReply rep = VFLCLIP__V1__START_RUN_REPLY__INIT;
        rep.run_id = id;
        reply(call, &rep.base);
    }
    free(text);
    vflclip__v1__start_run_request__free_unpacked(q, NULL);
}

static void on_abort_run(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    Vflclip__V1__AbortRunRequest *q = vflclip__v1__abort_run_request__unpack(NULL, len, data);
    if (!q) return fail(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode AbortRunRequest");
    vf_error err;
    if (q->run_id[0] && strcmp(q->run_id, g_agg.run.id)) {
        char msg[256];
        snprintf(msg, sizeof msg, "run '%s' is not the current run ('%s')", q->run_id, g_agg.run.id);
        fail(call, VF_GRPC_NOT_FOUND, msg);
    } else if (agg_run_abort(q->reason, vf_rpc_call_peer(call), &err)) {
        fail(call, VF_GRPC_FAILED_PRECONDITION, err.msg);
    } else {
        Vflclip__V1__AbortRunReply rep = VFLCLIP__V1__ABORT_RUN_REPLY__INIT;
        rep.state = (char *)agg_run_state_name(g_agg.run.state);
        reply(call, &rep.base);
    }
    vflclip__v1__abort_run_request__free_unpacked(q, NULL);
}

/* ---- WatchRun --------------------------------------------------------------------- */
static void send_event(vf_rpc_call *call, const char *kind, const char *message) {
    const agg_run *r = &g_agg.run;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    Vflclip__V1__RunEvent e = VFLCLIP__V1__RUN_EVENT__INIT;
    char state[64];
    snprintf(state, sizeof state, "%s%s", agg_run_state_name(r->state), r->paused ? "-paused" : "");
    e.time_unix_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    e.run_id = (char *)r->id;
    e.kind = (char *)kind;
    e.state = state;
    e.step = (uint64_t)r->sess.global_step;
    e.loss = r->sess.last_loss;
    e.message = (char *)(message ? message : r->message);
    Vflclip__V1__Metric m[12], *mp[12];
    int n = 0;
    const char *names[9] = {"epoch", "total_epochs", "total_steps", "val_auc", "val_acc", "train_loss", "best_val_auc",
                            "test_auc", "epsilon"};
    double vals[9] = {epoch_shown(r), r->cfg.epochs, (double)r->sess.total_steps,
                      r->session_ready && r->sess.log.n ? r->sess.log.val_auc[r->sess.log.n - 1] : NAN,
                      r->session_ready && r->sess.log.n ? r->sess.log.val_acc[r->sess.log.n - 1] : NAN,
                      r->session_ready && r->sess.log.n ? r->sess.log.train_loss[r->sess.log.n - 1] : NAN, r->sess.best_auc,
                      r->state == RUN_DONE && r->n[2] ? r->sess.m_test.auc : NAN, r->session_ready ? agg_run_epsilon() : NAN};
    for (int i = 0; i < 9; i++) {
        if (!isfinite(vals[i])) continue;
        vflclip__v1__metric__init(&m[n]);
        m[n].name = (char *)names[i];
        m[n].value = vals[i];
        mp[n] = &m[n];
        n++;
    }
    if (r->state == RUN_DONE && r->n[2]) {
        vflclip__v1__metric__init(&m[n]);
        m[n].name = "test_acc";
        m[n].value = r->sess.m_test.acc;
        mp[n] = &m[n];
        n++;
    }
    e.n_metrics = (size_t)n;
    e.metrics = mp;
    vf_error err;
    vf_rpc_call_send_pb(call, &e.base, &err);
}

void agg_admin_event(const char *kind, const char *message) {
    for (int i = 0; i < MAX_WATCHERS; i++)
        if (g_watchers[i]) send_event(g_watchers[i], kind, message);
}

void agg_admin_run_over(void) {
    vf_error err;
    for (int i = 0; i < MAX_WATCHERS; i++) {
        vf_rpc_call *c = g_watchers[i];
        if (!c) continue;
        g_watchers[i] = NULL;
        vf_rpc_call_set_user(c, NULL);
        send_event(c, "done", NULL);
        vf_rpc_call_finish(c, VF_GRPC_OK, NULL, &err);
    }
}

static void on_watch(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    if (vf_rpc_call_user(call)) return;
    const agg_run *r = &g_agg.run;
    Vflclip__V1__WatchRunRequest *q = vflclip__v1__watch_run_request__unpack(NULL, len, data);
    if (!q) return fail(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode WatchRunRequest");
    int mismatch = q->run_id[0] && strcmp(q->run_id, r->id);
    vflclip__v1__watch_run_request__free_unpacked(q, NULL);
    if (mismatch) return fail(call, VF_GRPC_NOT_FOUND, "that run is not the current run");
    send_event(call, "state", NULL);
    if (r->state == RUN_IDLE || agg_run_terminal()) {
        send_event(call, "done", NULL);
        vf_error err;
        vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err);
        return;
    }
    for (int i = 0; i < MAX_WATCHERS; i++)
        if (!g_watchers[i]) {
            g_watchers[i] = call;
            vf_rpc_call_set_user(call, call);
            return;
        }
    fail(call, VF_GRPC_RESOURCE_EXHAUSTED, "too many watchers");
}

static void on_watch_done(vf_rpc_call *call, int status, void *ud) {
    for (int i = 0; i < MAX_WATCHERS; i++)
        if (g_watchers[i] == call) g_watchers[i] = NULL;
}

/* ---- GetResults -------------------------------------------------------------------- */
static void on_results(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    const agg_run *r = &g_agg.run;
    Vflclip__V1__GetResultsRequest *q = vflclip__v1__get_results_request__unpack(NULL, len, data);
    if (!q) return fail(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode GetResultsRequest");
    char dir[4500];
    if (q->run_id[0]) {
        int ok = agg_valid_run_id(q->run_id);
        snprintf(dir, sizeof dir, "%s/runs/%s", g_agg.state_dir, ok ? q->run_id : "");
        if (!ok) {
            vflclip__v1__get_results_request__free_unpacked(q, NULL);
            return fail(call, VF_GRPC_INVALID_ARGUMENT, "bad run id");
        }
    } else if (r->id[0]) {
        snprintf(dir, sizeof dir, "%s", r->dir);
    } else {
        vflclip__v1__get_results_request__free_unpacked(q, NULL);
        return fail(call, VF_GRPC_NOT_FOUND, "no run yet");
    }
    vflclip__v1__get_results_request__free_unpacked(q, NULL);
    DIR *d = opendir(dir);
    if (!d) return fail(call, VF_GRPC_NOT_FOUND, "no such run");
    struct dirent *e;
    vf_error err;
    int files = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp.")) continue;
        char path[4800];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
        char *buf;
        size_t n;
        if (vf_read_file(path, &buf, &n, &err)) continue;
        const size_t piece = 1u << 20;
        size_t off = 0;
        do {
            size_t m = n - off < piece ? n - off : piece;
            Vflclip__V1__ResultFile f = VFLCLIP__V1__RESULT_FILE__INIT;
            f.name = e->d_name;
            f.offset = off;
            f.data.data = (uint8_t *)buf + off;
            f.data.len = m;
            f.last = off + m >= n;
            vf_rpc_call_send_pb(call, &f.base, &err);
            off += m;
        } while (off < n);
        free(buf);
        files++;
    }
    closedir(d);
    char details[600];
    snprintf(details, sizeof details, "run_dir=%s files=%d", dir, files);
    vf_audit(g_agg.audit_path, "results_fetched", vf_rpc_call_peer(call), details, &err);
    vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err);
}

/* ---- the run history ---------------------------------------------------------------- */
#define MAX_SHOWN_FILE (16u << 20)   /* a run file larger than this is not put in a ShowRun reply */

/* What one run folder says about its run; strings owned here. */
typedef struct run_info {
    Vflclip__V1__RunSummary s;
    char id[64], state[64], fp[80], kp[128], message[768];
    char **parties;
    size_t n_parties;
} run_info;

static void run_info_free(run_info *ri) {
    for (size_t i = 0; i < ri->n_parties; i++) free(ri->parties[i]);
    free(ri->parties);
    ri->parties = NULL;
    ri->n_parties = 0;
}

/* A small file of the run folder as text (NULL when absent or too large). */
static char *read_small(const char *dir, const char *name) {
    char path[4600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_SHOWN_FILE) return NULL;
    char *text;
    size_t len;
    vf_error err;
    if (vf_read_file(path, &text, &len, &err)) return NULL;
    if (strlen(text) != len) {   /* not text */
        free(text);
        return NULL;
    }
    return text;
}

static cJSON *read_json(const char *dir, const char *name) {
    char *text = read_small(dir, name);
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    free(text);
    return o;
}

static double json_num(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static void json_str(const cJSON *o, const char *k, char *out, size_t size) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsString(x)) snprintf(out, size, "%s", x->valuestring);
}

/* The summary of run `id` from its folder; the current run's live values
 * (state, step, best val AUC, message) from memory. */
static void run_info_load(run_info *ri, const char *id) {
    memset(ri, 0, sizeof *ri);
    vflclip__v1__run_summary__init(&ri->s);
    snprintf(ri->id, sizeof ri->id, "%s", id);
    char dir[4500], path[4600];
    snprintf(dir, sizeof dir, "%s/runs/%s", g_agg.state_dir, id);
    snprintf(path, sizeof path, "%s/progress.json", dir);
    vf_error err;
    cJSON *p = vf_sealed_json_read(path, &err);
    struct stat st;
    int have_stat = stat(path, &st) == 0;
    if (!p) {
        char prev[4700];
        vf_error e2;
        snprintf(prev, sizeof prev, "%s.prev", path);
        p = vf_sealed_json_read(prev, &e2);
    }
    ri->s.best_val_auc = ri->s.test_auc = ri->s.test_acc = ri->s.epsilon = NAN;
    if (p) {
        json_str(p, "state", ri->state, sizeof ri->state);
        json_str(p, "message", ri->message, sizeof ri->message);
        json_str(p, "knowledge_party", ri->kp, sizeof ri->kp);
        double v = json_num(p, "started_unix");
        ri->s.started_unix = isfinite(v) ? (int64_t)v : 0;
        v = json_num(p, "global_step");
        ri->s.step = isfinite(v) && v > 0 ? (uint64_t)v : 0;
        v = json_num(p, "total_steps");
        ri->s.total_steps = isfinite(v) && v > 0 ? (uint64_t)v : 0;
        ri->s.best_val_auc = json_num(p, "best_val_auc");
        v = json_num(p, "best_epoch");
        ri->s.best_epoch = isfinite(v) ? (int32_t)v : 0;
        const cJSON *ip = cJSON_GetObjectItemCaseSensitive(p, "image_parties"), *e;
        int n = cJSON_GetArraySize(ip);
        ri->parties = n > 0 ? calloc((size_t)n, sizeof *ri->parties) : NULL;
        cJSON_ArrayForEach(e, ip) if (cJSON_IsString(e) && ri->parties && ri->n_parties < (size_t)n)
            ri->parties[ri->n_parties++] = strdup(e->valuestring);
        cJSON_Delete(p);
    } else {
        snprintf(ri->state, sizeof ri->state, "unreadable");
        snprintf(ri->message, sizeof ri->message, "%s", err.msg);
    }
    int terminal = !strcmp(ri->state, "done") || !strcmp(ri->state, "aborted") || !strcmp(ri->state, "failed");
    const agg_run *r = &g_agg.run;
    if (r->state != RUN_IDLE && !strcmp(r->id, id)) {   /* the run status reports: live values */
        ri->s.current = 1;
        snprintf(ri->state, sizeof ri->state, "%s%s", agg_run_state_name(r->state), r->paused ? "-paused" : "");
        snprintf(ri->message, sizeof ri->message, "%s", r->message);
        ri->s.step = (uint64_t)r->sess.global_step;
        if (r->sess.total_steps) ri->s.total_steps = (uint64_t)r->sess.total_steps;
        if (r->session_ready) {
            ri->s.best_val_auc = r->sess.best_auc;
            ri->s.best_epoch = r->sess.best_epoch;
        }
        terminal = agg_run_terminal();
    }
    if (terminal && have_stat) ri->s.ended_unix = (int64_t)st.st_mtime;   /* the run's last write is its end */
    cJSON *t = read_json(dir, "test_metrics.json");
    if (t) {
        ri->s.test_auc = json_num(t, "auc");
        ri->s.test_acc = json_num(t, "acc");
        cJSON_Delete(t);
    }
    cJSON *pr = read_json(dir, "privacy.json");
    if (pr) {
        ri->s.epsilon = json_num(cJSON_GetObjectItemCaseSensitive(pr, "text_grad"), "epsilon");
        cJSON_Delete(pr);
    }
    cJSON *rs = read_json(dir, "run_settings.json");
    if (rs) {
        json_str(rs, "model_fingerprint", ri->fp, sizeof ri->fp);
        cJSON_Delete(rs);
    }
    ri->s.run_id = ri->id;
    ri->s.state = ri->state;
    ri->s.model_fingerprint = ri->fp;
    ri->s.knowledge_party = ri->kp;
    ri->s.message = ri->message;
    ri->s.n_image_parties = ri->n_parties;
    ri->s.image_parties = ri->parties;
}

static int cmp_runs(const void *a, const void *b) {
    const run_info *x = a, *y = b;
    if (x->s.started_unix != y->s.started_unix) return x->s.started_unix < y->s.started_unix ? -1 : 1;
    return strcmp(x->id, y->id);
}

static void on_list_runs(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/runs", g_agg.state_dir);
    Vflclip__V1__ListRunsReply rep = VFLCLIP__V1__LIST_RUNS_REPLY__INIT;
    DIR *d = opendir(dir);
    if (!d) return reply(call, &rep.base);   /* no run yet */
    size_t n = 0, cap = 0;
    run_info *runs = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!agg_valid_run_id(e->d_name)) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            run_info *nr = realloc(runs, nc * sizeof *nr);
            if (!nr) break;
            runs = nr;
            cap = nc;
        }
        run_info_load(&runs[n++], e->d_name);
    }
    closedir(d);
    qsort(runs, n, sizeof *runs, cmp_runs);
    Vflclip__V1__RunSummary **ptrs = n ? malloc(n * sizeof *ptrs) : NULL;
    if (n && !ptrs) {
        fail(call, VF_GRPC_RESOURCE_EXHAUSTED, "aggregator is out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            runs[i].s.run_id = runs[i].id;   /* the array moved: point into it again */
            runs[i].s.state = runs[i].state;
            runs[i].s.model_fingerprint = runs[i].fp;
            runs[i].s.knowledge_party = runs[i].kp;
            runs[i].s.message = runs[i].message;
            ptrs[i] = &runs[i].s;
        }
        rep.n_runs = n;
        rep.runs = ptrs;
        reply(call, &rep.base);
    }
    for (size_t i = 0; i < n; i++) run_info_free(&runs[i]);
    free(runs);
    free(ptrs);
}

static void on_show_run(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    Vflclip__V1__ShowRunRequest *q = vflclip__v1__show_run_request__unpack(NULL, len, data);
    if (!q) return fail(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode ShowRunRequest");
    char id[64];
    snprintf(id, sizeof id, "%s", q->run_id[0] ? q->run_id : g_agg.run.id);
    int ok = agg_valid_run_id(id);
    vflclip__v1__show_run_request__free_unpacked(q, NULL);
    if (!ok) return fail(call, id[0] ? VF_GRPC_INVALID_ARGUMENT : VF_GRPC_NOT_FOUND, id[0] ? "bad run id" : "no run yet");
    char dir[4500];
    snprintf(dir, sizeof dir, "%s/runs/%s", g_agg.state_dir, id);
    DIR *d = opendir(dir);
    if (!d) {
        char msg[200];
        snprintf(msg, sizeof msg, "no run '%s' in the aggregator's history", id);
        return fail(call, VF_GRPC_NOT_FOUND, msg);
    }
    char **files = NULL;
    size_t n_files = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp.")) continue;
        if (n_files == cap) {
            size_t nc = cap ? cap * 2 : 32;
            char **nf = realloc(files, nc * sizeof *nf);
            if (!nf) break;
            files = nf;
            cap = nc;
        }
        files[n_files++] = strdup(e->d_name);
    }
    closedir(d);
    run_info ri;
    run_info_load(&ri, id);
    char *texts[5] = {read_small(dir, "run_settings.json"), read_small(dir, "test_metrics.json"),
                      read_small(dir, "site_metrics.json"), read_small(dir, "metrics.jsonl"), read_small(dir, "privacy.json")};
    Vflclip__V1__ShowRunReply rep = VFLCLIP__V1__SHOW_RUN_REPLY__INIT;
    rep.summary = &ri.s;
    rep.settings_json = texts[0] ? texts[0] : "";
    rep.test_metrics_json = texts[1] ? texts[1] : "";
    rep.site_metrics_json = texts[2] ? texts[2] : "";
    rep.metrics_jsonl = texts[3] ? texts[3] : "";
    rep.privacy_json = texts[4] ? texts[4] : "";
    rep.n_files = n_files;
    rep.files = files;
    reply(call, &rep.base);
    for (int i = 0; i < 5; i++) free(texts[i]);
    for (size_t i = 0; i < n_files; i++) free(files[i]);
    free(files);
    run_info_free(&ri);
}

static void on_continue_run(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    Vflclip__V1__ContinueRunRequest *q = vflclip__v1__continue_run_request__unpack(NULL, len, data);
    if (!q) return fail(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode ContinueRunRequest");
    char id[64];
    snprintf(id, sizeof id, "%s", q->run_id);
    int too_long = strlen(q->run_id) >= sizeof id;
    vflclip__v1__continue_run_request__free_unpacked(q, NULL);
    if (too_long) return fail(call, VF_GRPC_INVALID_ARGUMENT, "run id is too long");
    const vf_peer_identity *who = vf_rpc_call_peer(call);
    vf_error err;
    int status;
    uint64_t step = 0;
    if (agg_run_continue_from(id, who, &step, &status, &err)) {
        char details[1200], quoted[1100];
        snprintf(details, sizeof details, "run=%s refused=\"%s\"", id, vf_log_quote(quoted, sizeof quoted, err.msg));
        vf_error aerr;
        vf_audit(g_agg.audit_path, "run_continue_refused", who, details, &aerr);
        vf_log(VF_WARN, "event=run_continue_refused peer=%s %s", who->name, details);
        return fail(call, status, err.msg);
    }
    Vflclip__V1__ContinueRunReply rep = VFLCLIP__V1__CONTINUE_RUN_REPLY__INIT;
    rep.run_id = id;
    rep.resume_step = step;
    reply(call, &rep.base);
}

#define ADMIN VF_ROLE_BIT(VF_ROLE_ADMIN)
const vf_rpc_method agg_admin_methods[] = {
    {"/vflclip.v1.Admin/Status", ADMIN, NULL, on_status, NULL, NULL, NULL, NULL},
    {"/vflclip.v1.Admin/ListParties", ADMIN, NULL, on_list_parties, NULL, NULL, NULL, NULL},
    {"/vflclip.v1.Admin/StartRun", ADMIN, NULL, on_start_run, NULL, NULL, NULL, NULL},
    {"/vflclip.v1.Admin/AbortRun", ADMIN, NULL, on_abort_run, NULL, NULL, NULL, NULL},
    {"/vflclip.v1.Admin/WatchRun", ADMIN, NULL, on_watch, NULL, on_watch_done, NULL, NULL},
    {"/vflclip.v1.Admin/GetResults", ADMIN, NULL, on_results, NULL, NULL, NULL, NULL},
    {"/vflclip.v1.Admin/ListRuns", ADMIN, NULL, on_list_runs, NULL, NULL, NULL, NULL},
    {"/vflclip.v1.Admin/ShowRun", ADMIN, NULL, on_show_run, NULL, NULL, NULL, NULL},
    {"/vflclip.v1.Admin/ContinueRun", ADMIN, NULL, on_continue_run, NULL, NULL, NULL, NULL},
};
const int agg_admin_n_methods = (int)(sizeof agg_admin_methods / sizeof agg_admin_methods[0]);
