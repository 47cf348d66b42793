/* run: one federated CoOp run on the aggregator.
 *
 * The training maths is the trainer library's (coop/trainer.h), called in the
 * same order as vf_trainer_run so that a federated run and `vflclip train`
 * give the same numbers: per step vf_batcher_next -> vf_loss_step_run (here)
 * -> vf_text_update (at the knowledge party, which answers with the text
 * features of the updated context); per epoch vf_evaluate_split on train and
 * val, best-val-AUC selection, vf_run_log_epoch; at the end the best context,
 * val/test metrics, confusion plots and the context file.
 *
 * Phases: SETUP (RunSetup to the knowledge party: class names, D, the first
 * text features) -> ENCODING (each image party streams its splits; parties in
 * parallel, splits in order) -> TRAINING -> FINISHING -> DONE.  Exactly one
 * task to the knowledge party is in flight at a time (r->wait, r->task).
 *
 * Durability: every checkpoint_every steps and at each epoch end the
 * knowledge party saves its state for the step, and only after its Ack the
 * aggregator commits its own progress (progress.c).  When the knowledge party
 * goes away, the aggregator rolls back to its last committed step and pauses;
 * when it returns, RunSetup(resume_step) restores the party to that same
 * step.  An image party that leaves while its splits are streaming is asked
 * again when it returns.  A pause longer than party_timeout_s fails the run.
 * Starting, aborting and resuming after a restart are in run_control.c. */
#include "agg.h"
#include "daemon/audit.h"
#include "daemon/notify.h"
#include "daemon/peer_limits.h"
#include "util/fileio.h"
#include "util/log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *const split_names[3] = {"train", "val", "test"};

const char *agg_run_state_name(agg_run_state s) {
    static const char *const n[] = {"idle", "setup", "encoding", "training", "finishing", "done", "aborted", "failed"};
    return s <= RUN_FAILED ? n[s] : "?";
}

int agg_run_terminal(void) {
    agg_run_state s = g_agg.run.state;
    return s == RUN_DONE || s == RUN_ABORTED || s == RUN_FAILED;
}

int agg_run_active(void) { return g_agg.run.state != RUN_IDLE && !agg_run_terminal(); }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void end_epoch(void);

/* ---- state changes ------------------------------------------------------------ */
static void free_trainer(agg_run *r) {
    if (!r->trainer_ready) return;
    vf_batcher_free(&r->batcher);
    vf_loss_step_free(&r->ls);
    vf_metrics_free(&r->m_train);
    vf_metrics_free(&r->m_val);
    vf_metrics_free(&r->m_test);
    vf_run_log_free(&r->log);
    if (r->guarded) vf_text_grad_guard_free(&r->guard);
    r->guarded = 0;
    r->trainer_ready = 0;
}

void agg_run_free(agg_run *r) {
    vf_transcript_close(&r->transcript);
    free_trainer(r);
    for (int k = 0; k < 3; k++) {
        free(r->emb[k]);
        free(r->labels[k]);
        r->emb[k] = NULL;
        r->labels[k] = NULL;
    }
    if (r->class_names)
        for (int c = 0; c < r->C; c++) free(r->class_names[c]);
    free(r->class_names);
    free(r->T);
    free(r->dT);
    free(r->config_text);
    uv_timer_t timer = r->pause_timer;
    memset(r, 0, sizeof *r);
    r->pause_timer = timer;
}

static void save_progress_logged(void) {
    vf_error err;
    if (agg_progress_save(&g_agg.run, &err)) vf_log(VF_ERROR, "event=progress_save_failed run=%s error=\"%s\"", g_agg.run.id, err.msg);
}

static void shutdown_kp(const char *reason) {
    agg_party *kp = agg_party_find(VF_ROLE_KNOWLEDGE_PARTY, g_agg.run.kp_name);
    if (!kp) return;
    Vflclip__V1__Shutdown s = VFLCLIP__V1__SHUTDOWN__INIT;
    s.reason = (char *)reason;
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.task_id = agg_new_task();
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SHUTDOWN;
    am.shutdown = &s;
    vf_error err;
    agg_send(kp, &am, &err);
}

void agg_run_end(agg_run_state s, const char *msg) {
    agg_run *r = &g_agg.run;
    r->state = s;
    r->wait = WAIT_NONE;
    r->paused = 0;
    uv_timer_stop(&r->pause_timer);
    snprintf(r->message, sizeof r->message, "%s", msg ? msg : "");
    vf_log(s == RUN_DONE ? VF_INFO : VF_WARN, "event=run_%s run=%s step=%ld message=\"%s\"", agg_run_state_name(s), r->id,
           r->global_step, r->message);
    save_progress_logged();
    if (r->transcript.f) {
        vf_error err;
        if (vf_transcript_sign(&r->transcript, g_agg.key_path, g_agg.cert_path, &err))
            vf_log(VF_ERROR, "event=transcript_sign_failed run=%s error=\"%s\"", r->id, err.msg);
        else
            vf_log(VF_INFO, "event=transcript_signed run=%s entries=%llu", r->id, (unsigned long long)r->transcript.entries);
    }
    shutdown_kp(msg && *msg ? msg : agg_run_state_name(s));
    for (int i = 0; i < AGG_MAX_PARTIES; i++)
        if (g_agg.parties[i].used && g_agg.parties[i].hello_ok) snprintf(g_agg.parties[i].state, 32, "connected");
    vf_notify_status("run %s %s", r->id, agg_run_state_name(s));
    agg_admin_event("state", r->message);
    agg_admin_run_over();
}

static void fail_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_run(const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    agg_run_end(RUN_FAILED, msg);
}

static void on_pause_timeout(uv_timer_t *t) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active() || !r->paused) return;
    fail_run("%s for more than %d s; the run gave up (party_timeout_s)", r->message, r->cfg.party_timeout_s);
}

static void pause_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void pause_run(const char *fmt, ...) {
    agg_run *r = &g_agg.run;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->paused && !strcmp(msg, r->message)) return;
    if (!r->paused) uv_timer_start(&r->pause_timer, on_pause_timeout, (uint64_t)r->cfg.party_timeout_s * 1000, 0);
    r->paused = 1;
    snprintf(r->message, sizeof r->message, "%s", msg);
    vf_log(VF_WARN, "event=run_paused run=%s step=%ld reason=\"%s\" timeout_s=%d", r->id, r->global_step, msg,
           r->cfg.party_timeout_s);
    agg_admin_event("state", msg);
}

static void unpause(void) {
    agg_run *r = &g_agg.run;
    if (!r->paused) return;
    r->paused = 0;
    uv_timer_stop(&r->pause_timer);
    vf_log(VF_INFO, "event=run_resumed run=%s step=%ld", r->id, r->global_step);
    r->message[0] = 0;
    agg_admin_event("state", "resumed");
}

/* ---- tasks to the knowledge party --------------------------------------------- */
static int send_kp(Vflclip__V1__AggregatorMessage *am, agg_wait wait) {
    agg_run *r = &g_agg.run;
    agg_party *kp = agg_party_find(VF_ROLE_KNOWLEDGE_PARTY, r->kp_name);
    vf_error err;
    am->task_id = agg_new_task();
    if (!kp || agg_send(kp, am, &err)) {
        pause_run("waiting for knowledge party '%s'", r->kp_name);
        return -1;
    }
    r->wait = wait;
    r->task = am->task_id;
    return 0;
}

static void send_setup(void) {
    agg_run *r = &g_agg.run;
    const vf_run_config *c = &r->cfg;
    Vflclip__V1__RunSetup rs = VFLCLIP__V1__RUN_SETUP__INIT;
    rs.run_id = r->id;
    rs.n_ctx = (uint32_t)c->n_ctx;
    rs.template_ = (char *)c->template_;
    rs.init_words = (char *)c->init_words;
    rs.csc = c->csc;
    rs.class_pos = (char *)vf_class_pos_name(c->class_pos);
    rs.seed = c->seed;
    rs.optimizer = (char *)vf_optim_kind_name(c->optim.kind);
    rs.momentum = c->optim.momentum;
    rs.weight_decay = c->optim.weight_decay;
    rs.beta1 = c->optim.beta1;
    rs.beta2 = c->optim.beta2;
    rs.eps = c->optim.eps;
    rs.resume_step = (uint64_t)r->committed_step;
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_RUN_SETUP;
    am.run_setup = &rs;
    if (send_kp(&am, WAIT_SETUP) == 0)
        vf_log(VF_INFO, "event=run_setup_sent run=%s peer=%s resume_step=%ld", r->id, r->kp_name, r->committed_step);
}

static void send_checkpoint(const char *action, agg_wait wait, uint32_t epoch, double val_auc) {
    agg_run *r = &g_agg.run;
    Vflclip__V1__Checkpoint ck = VFLCLIP__V1__CHECKPOINT__INIT;
    ck.tag = r->id;
    ck.step = (uint64_t)r->global_step;
    ck.action = (char *)action;
    ck.epoch = epoch;
    ck.val_auc = val_auc;
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CHECKPOINT;
    am.checkpoint = &ck;
    send_kp(&am, wait);
}

/* ---- encoding ------------------------------------------------------------------- */
static int all_images_present(void) {
    agg_run *r = &g_agg.run;
    for (int i = 0; i < r->n_img; i++)
        if (!agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name)) {
            pause_run("waiting for image party '%s'", r->img[i].name);
            return 0;
        }
    return 1;
}

/* Sizes from the Hellos (each bounded by peer_limits); the buffers for all
 * splits of all parties, their byte counts checked before malloc. */
static int prepare_encoding(void) {
    agg_run *r = &g_agg.run;
    if (r->emb[0]) return 0;
    for (int k = 0; k < 3; k++) r->n[k] = 0;
    for (int i = 0; i < r->n_img; i++) {
        agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name);
        for (int k = 0; k < 3; k++) {
            r->img[i].n[k] = p->split_n[k];
            r->img[i].base[k] = r->n[k];
            r->n[k] += p->split_n[k];
        }
    }
    if (r->n[0] == 0) {
        fail_run("the image parties hold no training images");
        return -1;
    }
    vf_error err;
    for (int k = 0; k < 3; k++) {
        size_t n = r->n[k] ? (size_t)r->n[k] : 1, bytes;
        if (r->n[k] > INT32_MAX || vf_size_mul3(n, (size_t)r->D, sizeof(float), &bytes, &err)) {
            fail_run("the image parties declare %" PRIu64 " %s examples of dimension %d: more than one run can hold", r->n[k],
                     split_names[k], r->D);
            return -1;
        }
        r->emb[k] = malloc(bytes);
        r->labels[k] = malloc(n * sizeof(int));
        if (!r->emb[k] || !r->labels[k]) {
            fail_run("out of memory for %" PRIu64 " embeddings", r->n[k]);
            return -1;
        }
    }
    vf_log(VF_INFO, "event=encoding_start run=%s parties=%d train=%" PRIu64 " val=%" PRIu64 " test=%" PRIu64 " dim=%d",
           r->id, r->n_img, r->n[0], r->n[1], r->n[2], r->D);
    return 0;
}

static void request_next_split(agg_img *im) {
    agg_run *r = &g_agg.run;
    while (im->split < 3 && im->n[im->split] == 0) im->split++;
    if (im->split >= 3 || im->task) return;
    agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, im->name);
    if (!p) return;
    Vflclip__V1__EncodeSplit es = VFLCLIP__V1__ENCODE_SPLIT__INIT;
    es.split = (char *)split_names[im->split];
    es.chunk_size = (uint32_t)r->cfg.chunk_size;
    es.seed = r->cfg.seed;
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.task_id = agg_new_task();
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_ENCODE_SPLIT;
    am.encode_split = &es;
    vf_error err;
    if (agg_send(p, &am, &err)) return;
    im->task = am.task_id;
    im->received[im->split] = 0;
    snprintf(p->state, sizeof p->state, "encoding");
}

static void start_training(void);

static void continue_encoding(void) {
    agg_run *r = &g_agg.run;
    if (!all_images_present() || prepare_encoding()) return;
    int done = 1;
    for (int i = 0; i < r->n_img; i++) {
        request_next_split(&r->img[i]);
        done &= r->img[i].split >= 3;
    }
    if (done) start_training();
}

static void on_chunk(agg_party *p, uint64_t task, const Vflclip__V1__EmbeddingsChunk *ch) {
    agg_run *r = &g_agg.run;
    agg_img *im = NULL;
    for (int i = 0; i < r->n_img && !im; i++)
        if (!strcmp(r->img[i].name, p->id.name)) im = &r->img[i];
    if (!im || task != im->task || r->state != RUN_ENCODING) return; /* stale */
    int k = im->split;
    const char *who = p->id.name;
    vf_error err;
    if (vf_peer_check_chunk(ch, &err)) return fail_run("image party '%s': %s", who, err.msg);
    if (strcmp(ch->split, split_names[k]) || ch->view != 0)
        return fail_run("image party '%s' sent split %s view %u for a %s request", who, ch->split, ch->view, split_names[k]);
    if (ch->dim != (uint32_t)r->D)
        return fail_run("image party '%s' sent %u-dim embeddings; the run's dimension is %d", who, ch->dim, r->D);
    if (ch->offset != im->received[k] || ch->count > im->n[k] - ch->offset || ch->total != im->n[k])
        return fail_run("image party '%s': %s chunk at %" PRIu64 "+%u does not continue %" PRIu64 " of %" PRIu64, who,
                        split_names[k], ch->offset, ch->count, im->received[k], im->n[k]);
    for (uint32_t i = 0; i < ch->count; i++)
        if (ch->labels[i] < 0 || ch->labels[i] >= r->C)
            return fail_run("image party '%s': %s example %s has label %d outside 0..%d", who, split_names[k], ch->ids[i],
                            ch->labels[i], r->C - 1);
    for (size_t i = 0; i < ch->n_data; i++)
        if (!isfinite(ch->data[i])) return fail_run("image party '%s': %s embedding value %zu is not finite", who, split_names[k], i);
    uint64_t at = im->base[k] + ch->offset;
    memcpy(r->emb[k] + at * r->D, ch->data, ch->n_data * sizeof(float));
    for (uint32_t i = 0; i < ch->count; i++) r->labels[k][at + i] = ch->labels[i];
    im->received[k] += ch->count;
    if (!ch->last) return;
    if (im->received[k] != im->n[k])
        return fail_run("image party '%s': %s ended after %" PRIu64 " of %" PRIu64 " examples", who, split_names[k],
                        im->received[k], im->n[k]);
    vf_log(VF_INFO, "event=split_received run=%s peer=%s split=%s images=%" PRIu64, r->id, who, split_names[k], im->n[k]);
    im->task = 0;
    im->split++;
    snprintf(p->state, sizeof p->state, "ready");
    continue_encoding();
}

/* ---- training -------------------------------------------------------------------- */
static void start_training(void) {
    agg_run *r = &g_agg.run;
    vf_error err;
    if (!r->trainer_ready) {
        for (int k = 0; k < 3; k++) r->split[k] = (vf_embedded_split){(int)r->n[k], r->D, r->emb[k], r->labels[k]};
        int B_eval = 256;
        int rc = vf_batcher_init(&r->batcher, (int)r->n[0], r->cfg.batch_size, r->cfg.seed, &err);
        if (!rc) rc = vf_loss_step_init(&r->ls, r->C, r->D, r->batcher.batch_size > B_eval ? r->batcher.batch_size : B_eval, &err);
        if (!rc) rc = vf_metrics_init(&r->m_train, r->C, &err) || vf_metrics_init(&r->m_val, r->C, &err) ||
                      vf_metrics_init(&r->m_test, r->C, &err);
        if (!rc) rc = vf_run_log_init(&r->log, r->dir, r->cfg.epochs, (const char *const *)r->class_names, r->C, &err);
        if (!rc && vf_text_grad_privacy_active(&r->cfg.privacy)) {
            rc = vf_text_grad_guard_init(&r->guard, &r->cfg.privacy, r->C, r->D, r->batcher.batch_size, &err);
            r->guarded = !rc;
        }
        if (!rc && r->cfg.privacy.epsilon_budget > 0 &&
            vf_text_grad_epsilon(&r->cfg.privacy, r->batcher.batch_size, (int)r->n[0], 1) > r->cfg.privacy.epsilon_budget)
            rc = vf_fail(&err, "epsilon_budget %g is below the epsilon of a single step (%.4f)", r->cfg.privacy.epsilon_budget,
                         vf_text_grad_epsilon(&r->cfg.privacy, r->batcher.batch_size, (int)r->n[0], 1));
        if (rc) return fail_run("cannot start training: %s", err.msg);
        r->trainer_ready = 1;
        r->steps_per_epoch = (r->batcher.steps_per_epoch + r->cfg.privacy.accumulate - 1) / r->cfg.privacy.accumulate;
        long total = (long)r->cfg.epochs * r->steps_per_epoch;
        r->total_steps = r->cfg.max_steps > 0 && r->cfg.max_steps < total ? r->cfg.max_steps : total;
        /* The committed progress (nothing on a fresh run) decides where to start. */
        if (agg_progress_load(r, r->dir, &err)) return fail_run("cannot resume: %s", err.msg);
        r->t0 = now_s();
        vf_log(VF_INFO, "event=train_start run=%s train=%" PRIu64 " val=%" PRIu64 " test=%" PRIu64 " classes=%d epochs=%d "
               "steps_per_epoch=%d batch=%d optimizer=%s lr=%g seed=%llu resume_step=%ld", r->id, r->n[0], r->n[1],
               r->n[2], r->C, r->cfg.epochs, r->steps_per_epoch, r->batcher.batch_size,
               vf_optim_kind_name(r->cfg.optim.kind), r->cfg.schedule.base_lr, r->cfg.seed, r->global_step);
    }
    r->state = RUN_TRAINING;
    for (int i = 0; i < r->n_img; i++) {
        agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name);
        if (p) snprintf(p->state, sizeof p->state, "done");
    }
    agg_admin_event("state", "training");
    agg_run_continue();
}

static void begin_finish(void) {
    agg_run *r = &g_agg.run;
    r->state = RUN_FINISHING;
    agg_admin_event("state", "finishing");
    send_checkpoint("restore-best", WAIT_RESTORE_BEST, 0, 0);
}

static void train_step(void) {
    agg_run *r = &g_agg.run;
    if (r->stop || r->epoch >= r->cfg.epochs) return begin_finish();
    /* every optimizer step but an epoch's last takes `accumulate` batches */
    long batch_pos = (long)r->step_in_epoch * r->cfg.privacy.accumulate;
    if (batch_pos > r->batcher.steps_per_epoch) batch_pos = r->batcher.steps_per_epoch;
    if (r->batcher.epoch != r->epoch || r->batcher.step != batch_pos) {
        vf_batcher_start_epoch(&r->batcher, r->epoch);
        r->batcher.step = (int)batch_pos;
    }
    const int *idx;
    int B = vf_batcher_next(&r->batcher, &idx);
    if (B == 0) return end_epoch();
    const vf_text_grad_privacy *priv = &r->cfg.privacy;
    if (priv->epsilon_budget > 0 &&
        vf_text_grad_epsilon(priv, r->batcher.batch_size, (int)r->n[0], r->global_step + 1) > priv->epsilon_budget) {
        r->batcher.step--;
        r->stop = r->budget_stop = 1;
        vf_log(VF_INFO, "event=epsilon_budget_reached run=%s step=%ld epsilon=%.4f budget=%g", r->id, r->global_step,
               agg_run_epsilon(), priv->epsilon_budget);
        snprintf(r->message, sizeof r->message, "stopped before step %ld: the next step would exceed epsilon_budget %g",
                 r->global_step + 1, priv->epsilon_budget);
        return r->step_in_epoch > 0 ? end_epoch() : begin_finish();
    }
    r->step_t0 = now_s();
    vf_error err;
    float loss;
    double batch_loss_sum = 0;
    int n_batches = 0;
    if (r->guarded) vf_text_grad_guard_begin(&r->guard);
    for (;;) {   /* the step's `accumulate` batches, all under the same T (as vf_trainer_run) */
        if (vf_loss_step_run(&r->ls, &r->split[0], idx, B, r->T, r->logit_scale, &loss, r->dT, &err))   // dT (C, D)
            return fail_run("step %ld: %s", r->global_step, err.msg);
        if (r->guarded && vf_text_grad_guard_add(&r->guard, &r->ls, B, r->T, r->logit_scale, r->dT, &err))
            return fail_run("step %ld: %s", r->global_step, err.msg);
        batch_loss_sum += loss;
        if (++n_batches >= priv->accumulate || (B = vf_batcher_next(&r->batcher, &idx)) == 0) break;
    }
    if (r->guarded) vf_text_grad_guard_release(&r->guard, r->cfg.seed, (uint64_t)r->global_step, r->dT);   // (C, D)
    r->pending_batches = n_batches;
    r->pending_loss = (float)(batch_loss_sum / n_batches);
    uint32_t shape[2] = {(uint32_t)r->C, (uint32_t)r->D};
    Vflclip__V1__Tensor t = VFLCLIP__V1__TENSOR__INIT;
    t.n_shape = 2;
    t.shape = shape;
    t.n_data = (size_t)r->C * r->D;
    t.data = r->dT;
    Vflclip__V1__TextBackward tb = VFLCLIP__V1__TEXT_BACKWARD__INIT;
    tb.step = (uint64_t)r->global_step;
    tb.grad_text_features = &t;
    tb.learning_rate = vf_lr_at_epoch(&r->cfg.schedule, r->epoch);
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_BACKWARD;
    am.text_backward = &tb;
    r->bytes_out += vflclip__v1__aggregator_message__get_packed_size(&am) + 5;
    /* the batches must be drawn again if this task is lost */
    r->batcher.step -= r->pending_batches;
    send_kp(&am, WAIT_STEP);
}

static void after_step(void) {
    agg_run *r = &g_agg.run;
    double dt = now_s() - r->step_t0;
    if (r->step_count == 0 || dt < r->step_min_s) r->step_min_s = dt;
    r->step_sum_s += dt;
    r->step_count++;
    r->batcher.step += r->pending_batches;
    r->loss_sum += r->pending_loss;
    r->last_loss = r->pending_loss;
    r->step_in_epoch++;
    r->global_step++;
    agg_admin_event("step", NULL);
    if (r->cfg.max_steps > 0 && r->global_step >= r->cfg.max_steps) r->stop = 1;
    if (r->stop) return end_epoch();
    if (r->global_step % r->cfg.checkpoint_every == 0) return send_checkpoint("save", WAIT_SAVE, 0, 0);
    train_step();
}

static void log_epoch(void);

static void end_epoch(void) {
    agg_run *r = &g_agg.run;
    vf_error err;
    const int has_val = r->n[1] > 0;
    double train_loss = r->loss_sum / r->step_in_epoch;
    if (r->epoch == 0) r->first_loss = train_loss;
    if (vf_evaluate_split(&r->ls, &r->split[0], r->T, r->logit_scale, &r->m_train, NULL, &err) ||
        (has_val && vf_evaluate_split(&r->ls, &r->split[1], r->T, r->logit_scale, &r->m_val, NULL, &err)))
        return fail_run("epoch %d evaluation: %s", r->epoch + 1, err.msg);
    double v_auc = has_val ? r->m_val.auc : NAN;
    if (!r->have_best || isnan(r->best_auc) || v_auc > r->best_auc) {
        r->have_best = 1;
        r->best_auc = v_auc;
        r->best_epoch = r->epoch + 1;
        return send_checkpoint("mark-best", WAIT_BEST, (uint32_t)r->best_epoch, v_auc);
    }
    log_epoch();
}

static void log_epoch(void) {
    agg_run *r = &g_agg.run;
    vf_error err;
    const int has_val = r->n[1] > 0;
    double train_loss = r->loss_sum / r->step_in_epoch;
    vf_epoch_record rec = {.epoch = r->epoch + 1, .steps = r->step_in_epoch, .lr = vf_lr_at_epoch(&r->cfg.schedule, r->epoch),
                           .train_loss = train_loss, .seconds = now_s() - r->t0, .best_epoch = r->best_epoch};
    if (vf_run_log_epoch(&r->log, &rec, &r->m_train, has_val ? &r->m_val : NULL, &err))
        return fail_run("epoch %d: %s", r->epoch + 1, err.msg);
    vf_log(VF_INFO, "event=epoch_done run=%s epoch=%d step=%ld train_loss=%.6f val_auc=%.6f val_acc=%.6f best_epoch=%d",
           r->id, r->epoch + 1, r->global_step, train_loss, has_val ? r->m_val.auc : NAN, has_val ? r->m_val.acc : NAN,
           r->best_epoch);
    agg_admin_event("eval", NULL);
    agg_privacy_report_write();
    r->epoch++;
    r->step_in_epoch = 0;
    r->loss_sum = 0;
    send_checkpoint("save", WAIT_SAVE, 0, 0);
}

static void finish_metrics(void) {
    agg_run *r = &g_agg.run;
    vf_error err;
    if (r->n[1] > 0 && (vf_evaluate_split(&r->ls, &r->split[1], r->T, r->logit_scale, &r->m_val, NULL, &err) ||
                        vf_run_log_confusion(&r->log, "val", &r->m_val, &err)))
        return fail_run("final validation: %s", err.msg);
    if (r->n[2] > 0) {
        if (vf_evaluate_split(&r->ls, &r->split[2], r->T, r->logit_scale, &r->m_test, NULL, &err) ||
            vf_run_log_test(&r->log, &r->m_test, r->best_epoch, &err) || vf_run_log_confusion(&r->log, "test", &r->m_test, &err))
            return fail_run("test evaluation: %s", err.msg);
        vf_log(VF_INFO, "event=train_done run=%s best_epoch=%d best_val_auc=%.4f test_auc=%.4f test_acc=%.4f steps=%ld",
               r->id, r->best_epoch, r->best_auc, r->m_test.auc, r->m_test.acc, r->global_step);
    }
    send_checkpoint("export", WAIT_EXPORT, 0, 0);
}

static void on_context_file(const Vflclip__V1__ContextFile *cf) {
    agg_run *r = &g_agg.run;
    char path[4500];
    vf_error err;
    snprintf(path, sizeof path, "%s/context.safetensors", r->dir);
    if (vf_write_atomic(path, cf->data.data, cf->data.len, &err)) return fail_run("%s", err.msg);
    long steps = r->global_step > 0 ? r->global_step : 1;
    vf_log(VF_INFO, "event=run_bytes run=%s steps=%ld bytes_out=%" PRIu64 " bytes_in=%" PRIu64 " bytes_per_step=%.0f", r->id,
           r->global_step, r->bytes_out, r->bytes_in, (double)(r->bytes_out + r->bytes_in) / steps);
    if (r->step_count)
        vf_log(VF_INFO, "event=step_time run=%s steps=%ld min_ms=%.3f mean_ms=%.3f", r->id, r->step_count,
               r->step_min_s * 1e3, r->step_sum_s / r->step_count * 1e3);
    agg_privacy_report_write();
    char why[sizeof r->message];   /* agg_run_end rewrites r->message */
    snprintf(why, sizeof why, "%s", r->budget_stop ? r->message : "");
    agg_run_end(RUN_DONE, why);
}

/* ---- what to do next ------------------------------------------------------------ */
void agg_run_continue(void) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active() || r->wait != WAIT_NONE) return;
    agg_party *kp = agg_party_find(VF_ROLE_KNOWLEDGE_PARTY, r->kp_name);
    if (!kp) return pause_run("waiting for knowledge party '%s'", r->kp_name);
    if (r->state == RUN_ENCODING || r->state == RUN_SETUP) {
        if (!all_images_present()) return;
    }
    unpause();
    if (!r->have_text) return send_setup();
    if (r->state == RUN_SETUP) r->state = RUN_ENCODING;
    if (r->state == RUN_ENCODING) return continue_encoding();
    if (r->state == RUN_TRAINING) return train_step();
    if (r->state == RUN_FINISHING) return begin_finish();
}

/* The knowledge party went away: what it held since the last commit is lost. */
static void roll_back(void) {
    agg_run *r = &g_agg.run;
    vf_error err;
    r->wait = WAIT_NONE;
    r->task = 0;
    r->have_text = 0;
    if (r->trainer_ready) {
        if (agg_progress_load(r, r->dir, &err)) return fail_run("cannot roll back: %s", err.msg);
        r->state = RUN_TRAINING;
        vf_log(VF_INFO, "event=rolled_back run=%s step=%ld epoch=%d", r->id, r->global_step, r->epoch + 1);
    }
}

static void on_text_features(const Vflclip__V1__TextFeatures *tf, size_t wire) {
    agg_run *r = &g_agg.run;
    const Vflclip__V1__Tensor *t = tf->features;
    if (!t || t->n_shape != 2 || t->shape[0] != (uint32_t)r->C || t->shape[1] != (uint32_t)r->D ||
        t->n_data != (size_t)r->C * r->D)
        return fail_run("knowledge party '%s' sent text features that are not (%d, %d)", r->kp_name, r->C, r->D);
    for (size_t i = 0; i < t->n_data; i++)
        if (!isfinite(t->data[i])) return fail_run("knowledge party '%s': text feature %zu is not finite", r->kp_name, i);
    memcpy(r->T, t->data, t->n_data * sizeof(float));
    r->logit_scale = tf->logit_scale;
    agg_wait w = r->wait;
    r->wait = WAIT_NONE;
    if (w == WAIT_SETUP) {
        r->have_text = 1;
        vf_log(VF_INFO, "event=text_ready run=%s peer=%s step=%" PRIu64 " classes=%d dim=%d", r->id, r->kp_name, tf->step, r->C, r->D);
        return agg_run_continue();
    }
    if (w == WAIT_STEP) {
        r->bytes_in += wire + 5;
        return after_step();
    }
    if (w == WAIT_RESTORE_BEST) return finish_metrics();
    fail_run("knowledge party '%s' sent text features nobody asked for", r->kp_name);
}

static void on_text_ready(const Vflclip__V1__TextReady *tr) {
    agg_run *r = &g_agg.run;
    agg_party *kp = agg_party_find(VF_ROLE_KNOWLEDGE_PARTY, r->kp_name);
    vf_error err;
    if (vf_peer_check_text_ready(tr, &err)) return fail_run("knowledge party '%s': %s", r->kp_name, err.msg);
    if (kp && tr->dim != kp->embed_dim)
        return fail_run("knowledge party '%s' projects to %u but said %u in its Hello", r->kp_name, tr->dim, kp->embed_dim);
    if (r->C && ((uint32_t)r->C != tr->n_classes || (uint32_t)r->D != tr->dim))
        return fail_run("knowledge party '%s' came back with %u classes of dimension %u (was %d, %d)", r->kp_name,
                        tr->n_classes, tr->dim, r->C, r->D);
    if (!r->C) {
        r->C = (int)tr->n_classes;
        r->D = (int)tr->dim;
        r->class_names = calloc((size_t)r->C, sizeof *r->class_names);
        r->T = malloc((size_t)r->C * r->D * sizeof(float));
        r->dT = malloc((size_t)r->C * r->D * sizeof(float));
        if (!r->class_names || !r->T || !r->dT) return fail_run("out of memory");
        for (int c = 0; c < r->C; c++) r->class_names[c] = strdup(tr->class_names[c]);
    }
    /* TextFeatures of the same task follow. */
}

void agg_run_on_message(agg_party *p, const Vflclip__V1__PartyMessage *m, size_t wire_bytes) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active()) return;
    if (p->id.role == VF_ROLE_IMAGE_PARTY) {
        if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_EMBEDDINGS) return on_chunk(p, m->task_id, m->embeddings);
        if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR) {
            for (int i = 0; i < r->n_img; i++)
                if (!strcmp(r->img[i].name, p->id.name) && r->img[i].task == m->task_id)
                    return fail_run("image party '%s': %s", p->id.name, m->error->message);
        }
        return;
    }
    if (strcmp(p->id.name, r->kp_name) || m->task_id != r->task || r->wait == WAIT_NONE) return; /* stale */
    switch (m->body_case) {
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR:
        return fail_run("knowledge party '%s': %s", p->id.name, m->error->message);
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_READY:
        if (r->wait == WAIT_SETUP) return on_text_ready(m->text_ready);
        break;
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_FEATURES: return on_text_features(m->text_features, wire_bytes);
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_ACK:
        if (r->wait == WAIT_SAVE) {
            vf_error err;
            r->wait = WAIT_NONE;
            r->committed_step = r->global_step;
            if (agg_progress_save(r, &err)) return fail_run("cannot commit progress: %s", err.msg);
            return agg_run_continue();
        }
        if (r->wait == WAIT_BEST) {
            r->wait = WAIT_NONE;
            return log_epoch();
        }
        break;
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_CONTEXT_FILE:
        if (r->wait == WAIT_EXPORT) {
            r->wait = WAIT_NONE;
            return on_context_file(m->context_file);
        }
        break;
    default: break;
    }
    fail_run("knowledge party '%s' answered task %" PRIu64 " with an unexpected message", p->id.name, m->task_id);
}

/* ---- parties coming and going --------------------------------------------------- */
void agg_run_on_joined(agg_party *p) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active()) return;
    if (p->id.role == VF_ROLE_IMAGE_PARTY) {
        for (int i = 0; i < r->n_img; i++) {
            if (strcmp(r->img[i].name, p->id.name)) continue;
            if (r->emb[0])
                for (int k = 0; k < 3; k++)
                    if (p->split_n[k] != r->img[i].n[k])
                        return fail_run("image party '%s' came back holding %" PRIu64 " %s images instead of %" PRIu64,
                                        p->id.name, p->split_n[k], split_names[k], r->img[i].n[k]);
            r->img[i].task = 0;
        }
    }
    agg_run_continue();
}

void agg_run_on_left(agg_party *p, const char *why) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active()) return;
    if (p->id.role == VF_ROLE_KNOWLEDGE_PARTY && !strcmp(p->id.name, r->kp_name)) {
        roll_back();
        pause_run("waiting for knowledge party '%s' (left: %s)", r->kp_name, why);
        return;
    }
    for (int i = 0; i < r->n_img; i++) {
        agg_img *im = &r->img[i];
        if (strcmp(im->name, p->id.name)) continue;
        if (r->state == RUN_SETUP || r->state == RUN_ENCODING) {
            if (im->split < 3) im->received[im->split] = 0;
            im->task = 0;
            if (r->state == RUN_ENCODING) pause_run("waiting for image party '%s' (left: %s)", im->name, why);
        } else {
            vf_log(VF_INFO, "event=image_party_left run=%s peer=%s detail=\"its embeddings are already here; training goes on\"",
                   r->id, im->name);
        }
    }
}
