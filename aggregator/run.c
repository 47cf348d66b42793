/* run: one federated CoOp run on the aggregator: the network side of the
 * one training loop.
 *
 * The loop itself is coop/train_session.c, the same one `vflclip train`
 * drives.  Here its actions become tasks for the knowledge party, which
 * holds the context: UPDATE -> TextBackward (answered with the text features
 * of the updated context), SAVE -> Checkpoint save, MARK_BEST -> Checkpoint
 * mark-best, RESTORE_BEST -> Checkpoint restore-best, DONE -> export of the
 * context file.  This file keeps what is about the network: who is asked
 * what, waiting, pausing and resuming.
 *
 * Phases: SETUP (RunSetup to the knowledge party: class names, D, the first
 * text features) -> ENCODING (each image party streams its splits; parties in
 * parallel, splits in order) -> TRAINING -> FINISHING -> DONE.  Exactly one
 * task to the knowledge party is in flight at a time (r->wait, r->task).
 *
 * Durability: at every SAVE the knowledge party saves its state for the
 * step, and only after its Ack the aggregator commits its own progress
 * (progress.c: the session's state).  When the knowledge party goes away,
 * the aggregator rolls back to its last committed step and pauses; when it
 * returns, RunSetup(resume_step) restores the party to that same step.  An
 * image party that leaves while its splits are streaming is asked again when
 * it returns.  A pause longer than party_timeout_s fails the run.  Starting,
 * aborting and resuming after a restart are in run_control.c. */
#include "agg.h"
#include "coop/classifier.h"
#include "daemon/audit.h"
#include "data/dataset.h"
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
#include <unistd.h>
#include <time.h>


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

/* ---- state changes ------------------------------------------------------------ */
static void free_session(agg_run *r) {
    if (!r->session_ready) return;
    vf_train_session_free(&r->sess);
    r->session_ready = 0;
}

void agg_run_free(agg_run *r) {
    vf_transcript_close(&r->transcript);
    free_session(r);
    agg_sum_free();
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
           r->sess.global_step, r->message);
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

void agg_run_fail(const char *fmt, ...) {
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
    agg_run_fail("%s for more than %d s; the run gave up (party_timeout_s)", r->message, r->cfg.party_timeout_s);
}

void agg_run_pause(const char *fmt, ...) {
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
    vf_log(VF_WARN, "event=run_paused run=%s step=%ld reason=\"%s\" timeout_s=%d", r->id, r->sess.global_step, msg,
           r->cfg.party_timeout_s);
    agg_admin_event("state", msg);
}

static void unpause(void) {
    agg_run *r = &g_agg.run;
    if (!r->paused) return;
    r->paused = 0;
    uv_timer_stop(&r->pause_timer);
    vf_log(VF_INFO, "event=run_resumed run=%s step=%ld", r->id, r->sess.global_step);
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
        agg_run_pause("waiting for knowledge party '%s'", r->kp_name);
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
    rs.n_ctx_given = c->n_ctx_given;
    rs.warm_start_run = (char *)c->warm_start;
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
    rs.resume_step = (uint64_t)r->sess.committed_step;
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_RUN_SETUP;
    am.run_setup = &rs;
    if (send_kp(&am, WAIT_SETUP) == 0)
        vf_log(VF_INFO, "event=run_setup_sent run=%s peer=%s resume_step=%ld", r->id, r->kp_name, r->sess.committed_step);
}

static void send_checkpoint(Vflclip__V1__CheckpointAction action, agg_wait wait, uint32_t epoch, double val_auc) {
    agg_run *r = &g_agg.run;
    Vflclip__V1__Checkpoint ck = VFLCLIP__V1__CHECKPOINT__INIT;
    ck.tag = r->id;
    ck.step = (uint64_t)r->sess.global_step;
    ck.action = action;
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
            agg_run_pause("waiting for image party '%s'", r->img[i].name);
            return 0;
        }
    return 1;
}

/* Sizes from the Hellos (each bounded by peer_limits); the buffers for all
 * splits of all parties, their byte counts checked before malloc. */
static int prepare_encoding(void) {
    agg_run *r = &g_agg.run;
    if (r->sizes_ready) return 0;
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
        agg_run_fail("the image parties hold no training images");
        return -1;
    }
    vf_error err;
    if (r->cfg.loss_at_parties) {   /* the embeddings stay at the parties: sizes only */
        for (int k = 0; k < 3; k++)
            if (r->n[k] > INT32_MAX) {
                agg_run_fail("the image parties declare %" PRIu64 " %s examples: more than one run can hold", r->n[k],
                             vf_split_name((vf_split)k));
                return -1;
            }
        r->sizes_ready = 1;
        vf_log(VF_INFO, "event=loss_at_image_parties run=%s parties=%d train=%" PRIu64 " val=%" PRIu64 " test=%" PRIu64
               " detail=\"embeddings and labels stay at the image parties; the aggregator receives secure sums\"",
               r->id, r->n_img, r->n[0], r->n[1], r->n[2]);
        return 0;
    }
    for (int k = 0; k < 3; k++) {
        size_t n = r->n[k] ? (size_t)r->n[k] : 1, bytes;
        if (r->n[k] > INT32_MAX || vf_size_mul3(n, (size_t)r->D, sizeof(float), &bytes, &err)) {
            agg_run_fail("the image parties declare %" PRIu64 " %s examples of dimension %d: more than one run can hold", r->n[k],
                     vf_split_name((vf_split)k), r->D);
            return -1;
        }
        r->emb[k] = malloc(bytes);
        r->labels[k] = malloc(n * sizeof(int));
        if (!r->emb[k] || !r->labels[k]) {
            agg_run_fail("out of memory for %" PRIu64 " embeddings", r->n[k]);
            return -1;
        }
    }
    vf_log(VF_INFO, "event=encoding_start run=%s parties=%d train=%" PRIu64 " val=%" PRIu64 " test=%" PRIu64 " dim=%d",
           r->id, r->n_img, r->n[0], r->n[1], r->n[2], r->D);
    r->sizes_ready = 1;
    return 0;
}

static void request_next_split(agg_img *im) {
    agg_run *r = &g_agg.run;
    while (im->split < 3 && im->n[im->split] == 0) im->split++;
    if (im->split >= 3 || im->task) return;
    agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, im->name);
    if (!p) return;
    Vflclip__V1__EncodeSplit es = VFLCLIP__V1__ENCODE_SPLIT__INIT;
    es.split = (char *)vf_split_name((vf_split)im->split);
    es.chunk_size = (uint32_t)r->cfg.chunk_size;
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
    if (r->cfg.loss_at_parties) return start_training();
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
    if (vf_peer_check_chunk(ch, &err)) return agg_run_fail("image party '%s': %s", who, err.msg);
    if (strcmp(ch->split, vf_split_name((vf_split)k)) || ch->view != 0)
        return agg_run_fail("image party '%s' sent split %s view %u for a %s request", who, ch->split, ch->view, vf_split_name((vf_split)k));
    if (ch->dim != (uint32_t)r->D)
        return agg_run_fail("image party '%s' sent %u-dim embeddings; the run's dimension is %d", who, ch->dim, r->D);
    if (ch->offset != im->received[k] || ch->count > im->n[k] - ch->offset || ch->total != im->n[k])
        return agg_run_fail("image party '%s': %s chunk at %" PRIu64 "+%u does not continue %" PRIu64 " of %" PRIu64, who,
                        vf_split_name((vf_split)k), ch->offset, ch->count, im->received[k], im->n[k]);
    for (uint32_t i = 0; i < ch->count; i++)
        if (ch->labels[i] < 0 || ch->labels[i] >= r->C)
            return agg_run_fail("image party '%s': %s example %s has label %d outside 0..%d", who, vf_split_name((vf_split)k), ch->ids[i],
                            ch->labels[i], r->C - 1);
    for (size_t i = 0; i < ch->n_data; i++)
        if (!isfinite(ch->data[i])) return agg_run_fail("image party '%s': %s embedding value %zu is not finite", who, vf_split_name((vf_split)k), i);
    uint64_t at = im->base[k] + ch->offset;
    memcpy(r->emb[k] + at * r->D, ch->data, ch->n_data * sizeof(float));
    for (uint32_t i = 0; i < ch->count; i++) r->labels[k][at + i] = ch->labels[i];
    im->received[k] += ch->count;
    if (!ch->last) return;
    if (im->received[k] != im->n[k])
        return agg_run_fail("image party '%s': %s ended after %" PRIu64 " of %" PRIu64 " examples", who, vf_split_name((vf_split)k),
                        im->received[k], im->n[k]);
    vf_log(VF_INFO, "event=split_received run=%s peer=%s split=%s images=%" PRIu64, r->id, who, vf_split_name((vf_split)k), im->n[k]);
    im->task = 0;
    im->split++;
    snprintf(p->state, sizeof p->state, "ready");
    continue_encoding();
}

/* ---- training -------------------------------------------------------------------- */

static void start_training(void) {
    agg_run *r = &g_agg.run;
    vf_error err;
    if (!r->session_ready) {
        for (int k = 0; k < 3; k++) r->split[k] = (vf_embedded_split){(int)r->n[k], r->D, r->emb[k], r->labels[k]};
        const vf_run_config *c = &r->cfg;
        for (int i = 0; c->loss_at_parties && i < r->n_img; i++) {
            agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name);
            if (p && p->mask_pub_len == 0)
                return agg_run_fail("image party '%s' sent no mask key in its Hello (an older version?): loss_at = "
                                    "image-parties needs one from every image party", p->id.name);
        }
        vf_train_session_config sc = {.epochs = c->epochs, .batch_size = c->batch_size, .max_steps = c->max_steps,
                                      .seed = c->seed, .schedule = c->schedule, .privacy = c->privacy,
                                      .checkpoint_every = c->checkpoint_every, .out_dir = r->dir,
                                      .class_names = (const char *const *)r->class_names, .quiet = 1,
                                      .loss_at_parties = c->loss_at_parties, .run_name = r->id};
        if (vf_train_session_init(&r->sess, &sc, r->split, r->C, r->D, r->logit_scale, &err))
            return agg_run_fail("cannot start training: %s", err.msg);
        r->session_ready = 1;
        /* The committed progress (nothing on a fresh run) decides where to start. */
        if (agg_progress_load(r, r->dir, &err)) return agg_run_fail("cannot resume: %s", err.msg);
        r->epochs_reported = r->sess.log.n;
        r->steps_reported = r->sess.global_step;
        vf_train_session_set_text(&r->sess, r->T, r->logit_scale);
        vf_log(VF_INFO, "event=train_start run=%s train=%" PRIu64 " val=%" PRIu64 " test=%" PRIu64 " classes=%d epochs=%d "
               "steps_per_epoch=%d batch=%d optimizer=%s lr=%g seed=%llu resume_step=%ld", r->id, r->n[0], r->n[1],
               r->n[2], r->C, c->epochs, r->sess.steps_per_epoch, r->sess.batcher.batch_size,
               vf_optim_kind_name(c->optim.kind), c->schedule.base_lr, c->seed, r->sess.global_step);
    }
    r->state = RUN_TRAINING;
    for (int i = 0; i < r->n_img; i++) {
        agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name);
        if (p) snprintf(p->state, sizeof p->state, "done");
    }
    agg_admin_event("state", "training");
    agg_run_continue();
}

/* UPDATE: dL/dT of the step's batches to the knowledge party. */
static void send_update(void) {
    agg_run *r = &g_agg.run;
    r->step_t0 = now_s();
    uint32_t shape[2] = {(uint32_t)r->C, (uint32_t)r->D};
    Vflclip__V1__Tensor t = VFLCLIP__V1__TENSOR__INIT;
    t.n_shape = 2;
    t.shape = shape;
    t.n_data = (size_t)r->C * r->D;
    t.data = r->sess.dtext;
    Vflclip__V1__TextBackward tb = VFLCLIP__V1__TEXT_BACKWARD__INIT;
    tb.step = (uint64_t)r->sess.global_step;
    tb.grad_text_features = &t;
    tb.learning_rate = r->sess.lr;
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_BACKWARD;
    am.text_backward = &tb;
    r->bytes_out += vflclip__v1__aggregator_message__get_packed_size(&am) + 5;
    send_kp(&am, WAIT_STEP);
}

/* Steps and epochs the session has done since last told: the admins' watch
 * streams, the log and privacy.json hear of them. */
static void report_progress(void) {
    agg_run *r = &g_agg.run;
    const vf_run_log *l = &r->sess.log;
    if (r->sess.global_step != r->steps_reported) {
        r->steps_reported = r->sess.global_step;
        agg_admin_event("step", NULL);
    }
    for (; r->epochs_reported < l->n; r->epochs_reported++) {
        int e = r->epochs_reported;
        vf_log(VF_INFO, "event=epoch_done run=%s epoch=%d step=%ld train_loss=%.6f val_auc=%.6f val_acc=%.6f best_epoch=%d",
               r->id, e + 1, r->sess.global_step, l->train_loss[e], l->val_auc[e], l->val_acc[e], r->sess.best_epoch);
        agg_admin_event("eval", NULL);
        agg_privacy_report_write();
    }
}

/* Each image party's val and test metrics (site_metrics.json): its rows of
 * the pooled splits are img[i].base[k] .. + n[k].  The pooled results stand
 * without them, so a failure is logged, not fatal. */
static void write_site_metrics(void) {
    agg_run *r = &g_agg.run;
    static vf_site_rows sites[AGG_MAX_PARTIES];
    for (int i = 0; i < r->n_img; i++) {
        sites[i] = (vf_site_rows){.name = r->img[i].name};
        for (int k = 0; k < 3; k++) {
            sites[i].first[k] = (int)r->img[i].base[k];
            sites[i].n[k] = (int)r->img[i].n[k];
        }
    }
    vf_error err;
    if (vf_train_session_site_metrics(&r->sess, sites, r->n_img, &err))
        vf_log(VF_ERROR, "event=site_metrics_failed run=%s error=\"%s\"", r->id, err.msg);
    else
        vf_log(VF_INFO, "event=site_metrics run=%s sites=%d file=%s/site_metrics.json", r->id, r->n_img, r->dir);
}

/* The session's next action, as a task for the knowledge party. */
void agg_run_drive(void) {
    agg_run *r = &g_agg.run;
    vf_error err;
    vf_train_action a = vf_train_session_next(&r->sess, &err);
    report_progress();
    switch (a) {
    case VF_TRAIN_ERROR: return agg_run_fail("%s", err.msg);
    case VF_TRAIN_UPDATE: return send_update();
    case VF_TRAIN_LOSS:
    case VF_TRAIN_EVAL: return agg_sum_start(a);
    case VF_TRAIN_SAVE: return send_checkpoint(VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_SAVE, WAIT_SAVE, 0, 0);
    case VF_TRAIN_MARK_BEST:
        return send_checkpoint(VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_MARK_BEST, WAIT_BEST, (uint32_t)r->sess.best_epoch, r->sess.best_auc);
    case VF_TRAIN_RESTORE_BEST:
        if (r->sess.budget_stop) snprintf(r->message, sizeof r->message, "%s", r->sess.message);
        if (r->state != RUN_FINISHING) {
            r->state = RUN_FINISHING;
            agg_admin_event("state", "finishing");
        }
        return send_checkpoint(VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_RESTORE_BEST, WAIT_RESTORE_BEST, 0, 0);
    case VF_TRAIN_DONE:
        if (r->cfg.loss_at_parties) agg_sum_write_site_metrics();
        else write_site_metrics();
        if (r->n[2] > 0)
            vf_log(VF_INFO, "event=train_done run=%s best_epoch=%d best_val_auc=%.4f test_auc=%.4f test_acc=%.4f steps=%ld",
                   r->id, r->sess.best_epoch, r->sess.best_auc, r->sess.m_test.auc, r->sess.m_test.acc, r->sess.global_step);
        return send_checkpoint(VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_EXPORT, WAIT_EXPORT, 0, 0);
    }
}

static void after_step(void) {
    agg_run *r = &g_agg.run;
    double dt = now_s() - r->step_t0;
    if (r->step_count == 0 || dt < r->step_min_s) r->step_min_s = dt;
    r->step_sum_s += dt;
    r->step_count++;
    vf_train_session_set_text(&r->sess, r->T, r->logit_scale);
    agg_run_drive();
}

/* The knowledge party's classifier (ContextFile.classifier), checked against
 * the run: its classes, width and model, and its features against T of the
 * best context the session's final evaluation used.  Completed here with the
 * preprocessing fingerprint, the run id, the temperature (fit_temperature),
 * calibration and the test metrics, and kept as classifier.safetensors. */
/* The run's model and preprocessing fingerprints: those kept at the start,
 * or, after the aggregator restarted (progress.json does not hold them), the
 * knowledge party's and the run's image parties' Hellos (each was checked
 * against the run's when it joined).  An unknown preprocessing fingerprint is
 * left empty (predict then checks only the model) and logged. */
static int run_fingerprints(char model[80], char pp[80], vf_error *err) {
    agg_run *r = &g_agg.run;
    snprintf(model, 80, "%s", r->model_fp);
    snprintf(pp, 80, "%s", r->pp_fp);
    agg_party *kp = agg_party_find(VF_ROLE_KNOWLEDGE_PARTY, r->kp_name);
    if (!model[0] && kp) snprintf(model, 80, "%s", kp->fingerprint);
    for (int i = 0; i < r->n_img && !pp[0]; i++) {
        agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name);
        if (p) snprintf(pp, 80, "%s", p->pp_fingerprint);
    }
    if (!pp[0]) vf_log(VF_WARN, "event=classifier_without_preprocessing_fingerprint run=%s reason=\"no image party connected\"", r->id);
    return model[0] ? 0 : vf_fail(err, "run %s: the model fingerprint is not known", r->id);
}

static int keep_classifier(const ProtobufCBinaryData *b, vf_error *err) {
    agg_run *r = &g_agg.run;
    char model_fp[80], pp_fp[80];
    if (run_fingerprints(model_fp, pp_fp, err)) return -1;
    if (vf_peer_check_classifier(b->len, (unsigned)r->C, (unsigned)r->D, err)) return vf_error_prefix(err, "knowledge party: ");
    char tmp[4500];
    snprintf(tmp, sizeof tmp, "%s/classifier.from-knowledge-party.tmp.safetensors", r->dir);
    if (vf_write_atomic(tmp, b->data, b->len, err)) return -1;
    vf_classifier k;
    int rc = vf_classifier_load(&k, tmp, err);
    unlink(tmp);
    if (rc) return vf_error_prefix(err, "knowledge party's classifier: ");
    rc = -1;
    double diff = 0;
    if (k.C != r->C || k.D != r->D) {
        vf_fail(err, "knowledge party's classifier is %d x %d, the run's text features %d x %d", k.C, k.D, r->C, r->D);
        goto out;
    }
    if (strcmp(k.model_fingerprint, model_fp) != 0) {
        vf_fail(err, "knowledge party's classifier is for model %s, the run's model is %s", k.model_fingerprint, model_fp);
        goto out;
    }
    for (int c = 0; c < r->C; c++) {
        const float *t = r->sess.text + (size_t)c * r->D;
        double ss = 0;
        for (int j = 0; j < r->D; j++) ss += (double)t[j] * t[j];
        for (int j = 0; j < r->D; j++) diff = fmax(diff, fabs(t[j] / sqrt(ss) - k.text[(size_t)c * r->D + j]));
    }
    if (!(diff < 1e-5)) {
        vf_fail(err, "knowledge party's classifier differs from the best context's text features (max %g)", diff);
        goto out;
    }
    snprintf(k.preprocessing_fingerprint, sizeof k.preprocessing_fingerprint, "%s", pp_fp);
    snprintf(k.run_id, sizeof k.run_id, "%s", r->id);
    double ece;
    /* loss_at = image-parties: no embedding here to calibrate with */
    const int pooled = !r->cfg.loss_at_parties;
    if (vf_classifier_finish_run(&k, r->dir, pooled ? &r->sess.split[1] : NULL, pooled ? &r->sess.split[2] : NULL,
                                 r->cfg.fit_temperature, &ece, err))
        goto out;
    vf_log(VF_INFO, "event=classifier_kept run=%s file=%s/%s temperature=%.6g ece=%.6f", r->id, r->dir, VF_CLASSIFIER_FILE,
           (double)k.temperature, ece);
    rc = 0;
out:
    vf_classifier_free(&k);
    return rc;
}

/* [run] share_classifier = image-parties: the classifier, once, to each of
 * the run's image parties connected now (the only tensor an image party is
 * ever sent).  One that is away is named in the log; it does not get it later. */
static void share_classifier(void) {
    agg_run *r = &g_agg.run;
    char path[4500];
    char *data = NULL;
    size_t len = 0;
    vf_error err;
    snprintf(path, sizeof path, "%s/%s", r->dir, VF_CLASSIFIER_FILE);
    if (vf_read_file(path, &data, &len, &err)) {
        vf_log(VF_ERROR, "event=classifier_not_shared run=%s error=\"%s\"", r->id, err.msg);
        return;
    }
    for (int i = 0; i < r->n_img; i++) {
        agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name);
        if (!p) {
            vf_log(VF_WARN, "event=classifier_not_shared run=%s party=%s reason=\"not connected\"", r->id, r->img[i].name);
            continue;
        }
        Vflclip__V1__ClassifierFile cf = VFLCLIP__V1__CLASSIFIER_FILE__INIT;
        cf.run_id = r->id;
        cf.data.data = (uint8_t *)data;
        cf.data.len = len;
        Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
        am.task_id = agg_new_task();
        am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CLASSIFIER_FILE;
        am.classifier_file = &cf;
        if (agg_send(p, &am, &err))
            vf_log(VF_WARN, "event=classifier_not_shared run=%s party=%s error=\"%s\"", r->id, r->img[i].name, err.msg);
        else
            vf_log(VF_INFO, "event=classifier_shared run=%s party=%s bytes=%zu", r->id, r->img[i].name, len);
    }
    free(data);
}

static void on_context_file(const Vflclip__V1__ContextFile *cf) {
    agg_run *r = &g_agg.run;
    char path[4500];
    vf_error err;
    snprintf(path, sizeof path, "%s/context.safetensors", r->dir);
    if (vf_write_atomic(path, cf->data.data, cf->data.len, &err)) return agg_run_fail("%s", err.msg);
    if (cf->classifier.len == 0)
        vf_log(VF_WARN, "event=no_classifier run=%s reason=\"the knowledge party sent none (an older version)\"", r->id);
    else if (keep_classifier(&cf->classifier, &err))
        return agg_run_fail("%s", err.msg);
    else if (r->cfg.share_classifier)
        share_classifier();
    long steps = r->sess.global_step > 0 ? r->sess.global_step : 1;
    vf_log(VF_INFO, "event=run_bytes run=%s steps=%ld bytes_out=%" PRIu64 " bytes_in=%" PRIu64 " bytes_per_step=%.0f", r->id,
           r->sess.global_step, r->bytes_out, r->bytes_in, (double)(r->bytes_out + r->bytes_in) / steps);
    if (r->step_count)
        vf_log(VF_INFO, "event=step_time run=%s steps=%ld min_ms=%.3f mean_ms=%.3f", r->id, r->step_count,
               r->step_min_s * 1e3, r->step_sum_s / r->step_count * 1e3);
    if (r->cfg.loss_at_parties)
        vf_log(VF_INFO, "event=secure_sums run=%s sums=%" PRIu64 " redone=%" PRIu64 " fewest_participants=%d bytes_out=%" PRIu64
               " bytes_in=%" PRIu64 " step_sum_ms=%.3f", r->id, r->sum.sums, r->sum.redone, r->sum.min_participants, r->sum.bytes_out,
               r->sum.bytes_in, steps ? r->sum.step_s / steps * 1e3 : 0.0);
    if (r->cfg.loss_at_parties && r->sum.kind_sums[0] && r->sum.kind_sums[1])
        vf_log(VF_INFO, "event=secure_sum_sizes run=%s step_bytes=%.0f eval_bytes=%.0f", r->id,
               (double)r->sum.kind_bytes[0] / (double)r->sum.kind_sums[0], (double)r->sum.kind_bytes[1] / (double)r->sum.kind_sums[1]);
    agg_privacy_report_write();
    char why[sizeof r->message];   /* agg_run_end rewrites r->message */
    snprintf(why, sizeof why, "%s", r->sess.budget_stop ? r->sess.message : "");
    agg_run_end(RUN_DONE, why);
}

/* ---- what to do next ------------------------------------------------------------ */
void agg_run_continue(void) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active() || r->wait != WAIT_NONE) return;
    agg_party *kp = agg_party_find(VF_ROLE_KNOWLEDGE_PARTY, r->kp_name);
    if (!kp) return agg_run_pause("waiting for knowledge party '%s'", r->kp_name);
    if (r->state == RUN_ENCODING || r->state == RUN_SETUP) {
        if (!all_images_present()) return;
    }
    unpause();
    if (!r->have_text) return send_setup();
    if (r->state == RUN_SETUP) r->state = RUN_ENCODING;
    if (r->state == RUN_ENCODING) return continue_encoding();
    if (r->state == RUN_TRAINING || r->state == RUN_FINISHING) return agg_run_drive();
}

/* The knowledge party went away: what it held since the last commit is lost. */
static void roll_back(void) {
    agg_run *r = &g_agg.run;
    vf_error err;
    r->wait = WAIT_NONE;
    r->task = 0;
    r->have_text = 0;
    agg_sum_reset();
    if (r->session_ready) {
        if (agg_progress_load(r, r->dir, &err)) return agg_run_fail("cannot roll back: %s", err.msg);
        r->state = RUN_TRAINING;
        vf_log(VF_INFO, "event=rolled_back run=%s step=%ld epoch=%d", r->id, r->sess.global_step, r->sess.epoch + 1);
    }
}

static void on_text_features(const Vflclip__V1__TextFeatures *tf, size_t wire) {
    agg_run *r = &g_agg.run;
    const Vflclip__V1__Tensor *t = tf->features;
    if (!t || t->n_shape != 2 || t->shape[0] != (uint32_t)r->C || t->shape[1] != (uint32_t)r->D ||
        t->n_data != (size_t)r->C * r->D)
        return agg_run_fail("knowledge party '%s' sent text features that are not (%d, %d)", r->kp_name, r->C, r->D);
    for (size_t i = 0; i < t->n_data; i++)
        if (!isfinite(t->data[i])) return agg_run_fail("knowledge party '%s': text feature %zu is not finite", r->kp_name, i);
    memcpy(r->T, t->data, t->n_data * sizeof(float));
    r->logit_scale = tf->logit_scale;
    agg_wait w = r->wait;
    r->wait = WAIT_NONE;
    if (w == WAIT_SETUP) {
        r->have_text = 1;
        if (r->session_ready) vf_train_session_set_text(&r->sess, r->T, r->logit_scale);   /* the restored context's T */
        vf_log(VF_INFO, "event=text_ready run=%s peer=%s step=%" PRIu64 " classes=%d dim=%d", r->id, r->kp_name, tf->step, r->C, r->D);
        return agg_run_continue();
    }
    if (w == WAIT_STEP) {
        r->bytes_in += wire + 5;
        return after_step();
    }
    if (w == WAIT_RESTORE_BEST) {
        vf_train_session_set_text(&r->sess, r->T, r->logit_scale);
        return agg_run_drive();
    }
    agg_run_fail("knowledge party '%s' sent text features nobody asked for", r->kp_name);
}

static void on_text_ready(const Vflclip__V1__TextReady *tr) {
    agg_run *r = &g_agg.run;
    agg_party *kp = agg_party_find(VF_ROLE_KNOWLEDGE_PARTY, r->kp_name);
    vf_error err;
    if (vf_peer_check_text_ready(tr, &err)) return agg_run_fail("knowledge party '%s': %s", r->kp_name, err.msg);
    if (kp && tr->dim != kp->embed_dim)
        return agg_run_fail("knowledge party '%s' projects to %u but said %u in its Hello", r->kp_name, tr->dim, kp->embed_dim);
    if (r->C && ((uint32_t)r->C != tr->n_classes || (uint32_t)r->D != tr->dim))
        return agg_run_fail("knowledge party '%s' came back with %u classes of dimension %u (was %d, %d)", r->kp_name,
                        tr->n_classes, tr->dim, r->C, r->D);
    if (!r->C) {
        r->C = (int)tr->n_classes;
        r->D = (int)tr->dim;
        r->class_names = calloc((size_t)r->C, sizeof *r->class_names);
        r->T = malloc((size_t)r->C * r->D * sizeof(float));
        if (!r->class_names || !r->T) return agg_run_fail("out of memory");
        for (int c = 0; c < r->C; c++) r->class_names[c] = strdup(tr->class_names[c]);
        /* run_settings.json again, now with the class names and the knowledge party's template */
        if (agg_run_settings_write(tr->template_, &err))
            vf_log(VF_ERROR, "event=run_settings_failed run=%s error=\"%s\"", r->id, err.msg);
    }
    /* TextFeatures of the same task follow. */
}

/* The knowledge party cannot restore the committed step (its checkpoint is
 * damaged or gone): go back one commit, whose checkpoint it still keeps,
 * once; said loudly.  A second refusal fails the run with both reasons. */
static void fall_back(const char *why) {
    agg_run *r = &g_agg.run;
    vf_error err;
    long from = r->sess.committed_step;
    r->wait = WAIT_NONE;
    if (agg_progress_restore_previous(r, &err))
        return agg_run_fail("knowledge party '%s' cannot restore step %ld (%s), nor can the aggregator go back a commit: %s",
                        r->kp_name, from, why, err.msg);
    if (r->sess.committed_step >= from)
        return agg_run_fail("knowledge party '%s' cannot restore step %ld (%s), and there is no earlier commit to go back to",
                        r->kp_name, from, why);
    vf_log(VF_ERROR, "event=fell_back run=%s from_step=%ld to_step=%ld reason=\"knowledge party: %s\"", r->id, from,
           r->sess.committed_step, why);
    r->have_text = 0;
    agg_run_continue();
}

void agg_run_on_message(agg_party *p, const Vflclip__V1__PartyMessage *m, size_t wire_bytes) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active()) return;
    if (p->id.role == VF_ROLE_IMAGE_PARTY) {
        if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_EMBEDDINGS) return on_chunk(p, m->task_id, m->embeddings);
        if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_MASKED_SHARE)
            return agg_sum_on_share(p, m->task_id, m->masked_share, wire_bytes);
        if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR && r->wait == WAIT_SUM) {
            for (int i = 0; i < r->sum.n_part; i++)
                if (!strcmp(r->img[r->sum.part[i]].name, p->id.name))
                    return agg_run_fail("image party '%s' could not compute its share of secure sum %" PRIu64 ": %s", p->id.name,
                                        r->sum.sum_id, m->error->message);
        }
        if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR) {
            for (int i = 0; i < r->n_img; i++)
                if (!strcmp(r->img[i].name, p->id.name) && r->img[i].task == m->task_id)
                    return agg_run_fail("image party '%s': %s", p->id.name, m->error->message);
        }
        return;
    }
    if (strcmp(p->id.name, r->kp_name) || m->task_id != r->task || r->wait == WAIT_NONE || r->wait == WAIT_SUM) return; /* stale */
    switch (m->body_case) {
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR:
        if (r->wait == WAIT_SETUP && r->sess.committed_step > 0) return fall_back(m->error->message);
        return agg_run_fail("knowledge party '%s': %s", p->id.name, m->error->message);
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_READY:
        if (r->wait == WAIT_SETUP) return on_text_ready(m->text_ready);
        break;
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_FEATURES: return on_text_features(m->text_features, wire_bytes);
    case VFLCLIP__V1__PARTY_MESSAGE__BODY_ACK:
        if (r->wait == WAIT_SAVE) {
            vf_error err;
            r->wait = WAIT_NONE;
            vf_train_session_saved(&r->sess);
            if (agg_progress_save(r, &err)) return agg_run_fail("cannot commit progress: %s", err.msg);
            return agg_run_continue();
        }
        if (r->wait == WAIT_BEST) {
            r->wait = WAIT_NONE;
            vf_train_session_marked(&r->sess);
            return agg_run_drive();
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
    agg_run_fail("knowledge party '%s' answered task %" PRIu64 " with an unexpected message", p->id.name, m->task_id);
}

/* ---- parties coming and going --------------------------------------------------- */
void agg_run_on_joined(agg_party *p) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active()) return;
    if (p->id.role == VF_ROLE_IMAGE_PARTY) {
        for (int i = 0; i < r->n_img; i++) {
            if (strcmp(r->img[i].name, p->id.name)) continue;
            if (r->sizes_ready)
                for (int k = 0; k < 3; k++)
                    if (p->split_n[k] != r->img[i].n[k])
                        return agg_run_fail("image party '%s' came back holding %" PRIu64 " %s images instead of %" PRIu64,
                                        p->id.name, p->split_n[k], vf_split_name((vf_split)k), r->img[i].n[k]);
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
        agg_run_pause("waiting for knowledge party '%s' (left: %s)", r->kp_name, why);
        return;
    }
    for (int i = 0; i < r->n_img; i++) {
        agg_img *im = &r->img[i];
        if (strcmp(im->name, p->id.name)) continue;
        if (r->state == RUN_SETUP || r->state == RUN_ENCODING) {
            if (im->split < 3) im->received[im->split] = 0;
            im->task = 0;
            if (r->state == RUN_ENCODING) agg_run_pause("waiting for image party '%s' (left: %s)", im->name, why);
        } else if (r->cfg.loss_at_parties) {
            agg_sum_on_left(p);
        } else {
            vf_log(VF_INFO, "event=image_party_left run=%s peer=%s detail=\"its embeddings are already here; training goes on\"",
                   r->id, im->name);
        }
    }
}
