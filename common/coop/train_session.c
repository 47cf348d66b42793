/* train_session: the CoOp training loop as a state machine (see
 * train_session.h).  Each phase is one thing the loop does; next() runs
 * phases until one needs the driver, and the driver's answer (set_text,
 * saved, marked) moves the loop on. */
#include "coop/train_session.h"
#include "metrics/eval_counts.h"
#include "util/log.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    P_START = 0,        /* no text features yet */
    P_STEP,             /* start the next step: its first batch */
    P_BATCH,            /* one batch's loss and dL/dT */
    P_WAIT_LOSS,        /* the image parties compute it (loss_at_parties) */
    P_BATCH_DONE,       /* the step's next batch, or its dL/dT */
    P_WAIT_EVAL,        /* the image parties count an evaluation (loss_at_parties) */
    P_WAIT_UPDATE,      /* the driver applies dL/dT */
    P_AFTER_UPDATE,     /* the new T arrived: count the step */
    P_WAIT_SAVE,        /* the driver makes the context durable */
    P_END_EPOCH,        /* train/val metrics, best selection */
    P_WAIT_MARK,        /* the driver keeps the best context */
    P_LOG_EPOCH,        /* metrics.jsonl and plots, next epoch */
    P_WAIT_RESTORE,     /* the driver puts the best context back */
    P_FINISH,           /* its T arrived: final val/test metrics */
    P_DONE,
};

static double elapsed_s(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* ---- set-up ------------------------------------------------------------------ */
int vf_train_session_init(vf_train_session *s, const vf_train_session_config *cfg, const vf_embedded_split split[3], int C,
                          int D, float logit_scale, vf_error *err) {
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->C = C;
    s->D = D;
    s->logit_scale = logit_scale;
    for (int k = 0; k < 3; k++) s->split[k] = split[k];
    s->best_auc = NAN;
    s->first_loss = s->last_loss = NAN;
    s->epsilon = INFINITY;
    if (cfg->epochs < 1) return vf_fail(err, "epochs %d must be at least 1", cfg->epochs);
    if (split[0].D != D) return vf_fail(err, "image embeddings are %d wide but the text tower projects to %d", split[0].D, D);
    if (s->cfg.privacy.accumulate < 1) s->cfg.privacy.accumulate = 1;
    const vf_text_grad_privacy *priv = &s->cfg.privacy;
    if (vf_batcher_init(&s->batcher, split[0].n, cfg->batch_size, cfg->seed, err)) return -1;
    const int B_eval = 256, B = s->batcher.batch_size;
    s->text = malloc((size_t)C * D * sizeof(float));
    s->dtext = malloc((size_t)C * D * sizeof(float));
    if (!s->text || !s->dtext) goto oom;
    if (vf_loss_step_init(&s->ls, C, D, B > B_eval ? B : B_eval, err) || vf_metrics_init(&s->m_train, C, err) ||
        vf_metrics_init(&s->m_val, C, err) || vf_metrics_init(&s->m_test, C, err) ||
        vf_run_log_init(&s->log, cfg->out_dir, cfg->epochs, cfg->class_names, C, err))
        goto fail;
    if (cfg->run_name || cfg->backbone) vf_run_log_set_title(&s->log, cfg->run_name, cfg->backbone);
    if (vf_text_grad_privacy_active(priv)) {
        if (vf_text_grad_guard_init(&s->guard, priv, C, D, B, err)) goto fail;
        s->guarded = 1;
    }
    if (priv->epsilon_budget > 0 && vf_text_grad_epsilon(priv, B, split[0].n, 1) > priv->epsilon_budget) {
        vf_fail(err, "epsilon_budget %g is below the epsilon of a single step (%.4f)", priv->epsilon_budget,
                vf_text_grad_epsilon(priv, B, split[0].n, 1));
        goto fail;
    }
    s->steps_per_epoch = (s->batcher.steps_per_epoch + priv->accumulate - 1) / priv->accumulate;
    long total = (long)cfg->epochs * s->steps_per_epoch;
    s->total_steps = cfg->max_steps > 0 && cfg->max_steps < total ? cfg->max_steps : total;
    clock_gettime(CLOCK_MONOTONIC, &s->t0);
    return 0;
oom:
    vf_fail(err, "out of memory for %d x %d text features", C, D);
fail:
    vf_train_session_free(s);
    return -1;
}

void vf_train_session_free(vf_train_session *s) {
    vf_batcher_free(&s->batcher);
    if (s->ls.arena.base) vf_loss_step_free(&s->ls);
    vf_metrics_free(&s->m_train);
    vf_metrics_free(&s->m_val);
    vf_metrics_free(&s->m_test);
    vf_run_log_free(&s->log);
    if (s->guarded) vf_text_grad_guard_free(&s->guard);
    s->guarded = 0;
    free(s->text);
    free(s->dtext);
    s->text = s->dtext = NULL;
    for (int k = 0; k < 3; k++) {
        free(s->probs[k]);
        free(s->counts[k]);
        free(s->grid[k]);
        s->grid[k] = NULL;
        s->probs[k] = NULL;
        s->counts[k] = NULL;
    }
}

/* ---- progress on stderr (single-process runs) ------------------------------ */
static void fmt_duration(double sec, char *out, size_t size) {
    long t = (long)(sec + 0.5);
    if (t >= 3600) snprintf(out, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, size, "%02ld:%02ld", t / 60, t % 60);
}

static void progress_step(vf_train_session *s) {
    if (s->cfg.quiet) return;
    double el = elapsed_s(&s->t0);
    char eta[32];
    long done = s->global_step, total = s->total_steps;
    fmt_duration(done ? el / done * (double)(total - done) : 0, eta, sizeof eta);
    if (s->cfg.progress_tty) {
        fprintf(stderr, "\r\033[Kepoch %d/%d  step %d/%d  loss %.4f  lr %.3g  ETA %s", s->epoch + 1, s->cfg.epochs,
                s->step_in_epoch, s->steps_per_epoch, s->last_loss, s->lr, eta);
        s->progress_line = 1;
    } else if (done >= s->progress_next || done == total) {
        fprintf(stderr, "epoch %d/%d step %d/%d loss %.4f lr %.3g eta %s\n", s->epoch + 1, s->cfg.epochs, s->step_in_epoch,
                s->steps_per_epoch, s->last_loss, s->lr, eta);
        s->progress_next = done + (total >= 10 ? total / 10 : 1);
    }
    fflush(stderr);
}

static void progress_epoch(vf_train_session *s, double train_loss, int has_val) {
    if (s->cfg.quiet) return;
    if (s->progress_line) fputc('\n', stderr);
    s->progress_line = 0;
    if (has_val)
        fprintf(stderr, "epoch %d/%d done: train loss %.4f  val AUC %.4f  ACC %.4f  (%.1fs)\n", s->epoch + 1, s->cfg.epochs,
                train_loss, s->m_val.auc, s->m_val.acc, elapsed_s(&s->t0));
    else
        fprintf(stderr, "epoch %d/%d done: train loss %.4f  (%.1fs)\n", s->epoch + 1, s->cfg.epochs, train_loss,
                elapsed_s(&s->t0));
    fflush(stderr);
}

/* ---- the phases ----------------------------------------------------------------- */
static double epsilon_after(const vf_train_session *s, long steps) {
    return vf_text_grad_epsilon(&s->cfg.privacy, s->batcher.batch_size, s->split[0].n, steps);
}

/* A step: the budget check and its first batch.  Returns the next phase. */
static int phase_step(vf_train_session *s, vf_error *err) {
    const vf_text_grad_privacy *priv = &s->cfg.privacy;
    if (s->stop || s->epoch >= s->cfg.epochs) return P_WAIT_RESTORE;
    /* every optimizer step but an epoch's last takes `accumulate` batches */
    long batch_pos = (long)s->step_in_epoch * priv->accumulate;
    if (batch_pos > s->batcher.steps_per_epoch) batch_pos = s->batcher.steps_per_epoch;
    if (s->batcher.epoch != s->epoch || s->batcher.step != batch_pos) {
        vf_batcher_start_epoch(&s->batcher, s->epoch);
        s->batcher.step = (int)batch_pos;
    }
    int B = vf_batcher_next(&s->batcher, &s->req_idx);
    if (B == 0) return P_END_EPOCH;
    if (priv->epsilon_budget > 0 && epsilon_after(s, s->global_step + 1) > priv->epsilon_budget) {
        s->batcher.step--;
        s->stop = s->budget_stop = 1;
        vf_log(VF_INFO, "event=epsilon_budget_reached step=%ld epsilon=%.4f budget=%g", s->global_step,
               epsilon_after(s, s->global_step), priv->epsilon_budget);
        snprintf(s->message, sizeof s->message, "stopped before step %ld: the next step would exceed epsilon_budget %g",
                 s->global_step + 1, priv->epsilon_budget);
        return s->step_in_epoch > 0 ? P_END_EPOCH : P_WAIT_RESTORE;
    }
    (void)err;
    s->req_B = B;
    s->req_batch = 0;
    s->step_loss_sum = 0;
    if (s->guarded) vf_text_grad_guard_begin(&s->guard);
    return P_BATCH;
}

/* One batch of the step (s->req_idx, s->req_B) under the current T: its loss
 * and dL/dT here, or asked of the image parties. */
static int phase_batch(vf_train_session *s, vf_error *err) {
    if (s->cfg.loss_at_parties) return P_WAIT_LOSS;
    float loss;
    if (vf_loss_step_run(&s->ls, &s->split[0], s->req_idx, s->req_B, s->text, s->logit_scale, &loss, s->dtext, err))   // dT (C, D)
        return vf_error_prefix(err, "step %ld", s->global_step), -1;
    const vf_guard_batch gb = {s->req_B, s->ls.image, s->ls.labels, s->ls.logits};
    if (s->guarded && vf_text_grad_guard_add(&s->guard, &gb, s->text, s->logit_scale, s->dtext, err))
        return vf_error_prefix(err, "step %ld", s->global_step), -1;
    s->step_loss_sum += loss;
    return P_BATCH_DONE;
}

/* The step's next batch (all under the same T), or its dL/dT released. */
static int phase_batch_done(vf_train_session *s) {
    int n_batches = ++s->req_batch;
    if (n_batches < s->cfg.privacy.accumulate && (s->req_B = vf_batcher_next(&s->batcher, &s->req_idx)) > 0) return P_BATCH;
    if (s->guarded) vf_text_grad_guard_release(&s->guard, s->cfg.seed, (uint64_t)s->global_step, s->dtext);   // (C, D)
    s->pending_batches = n_batches;
    s->pending_loss = (float)(s->step_loss_sum / n_batches);
    s->lr = vf_lr_at_epoch(&s->cfg.schedule, s->epoch);
    return P_WAIT_UPDATE;
}

int vf_train_session_set_loss(vf_train_session *s, double loss, const float *grad, uint64_t clipped, vf_error *err) {
    if (s->phase != P_WAIT_LOSS) return vf_fail(err, "training session: a batch loss nobody asked for");
    const long n = (long)s->C * s->D;
    if (!isfinite(loss)) return vf_fail(err, "step %ld: the batch loss is not finite", s->global_step);
    for (long i = 0; i < n; i++)
        if (!isfinite(grad[i])) return vf_fail(err, "step %ld: dL/dT element %ld is not finite", s->global_step, i);
    if (s->guarded) {
        if (vf_text_grad_guard_add_share(&s->guard, grad, s->req_B, err)) return vf_error_prefix(err, "step %ld", s->global_step);
        s->guard.clipped += (long)clipped;
    } else {
        memcpy(s->dtext, grad, (size_t)n * sizeof(float));
    }
    s->step_loss_sum += loss;
    s->phase = P_BATCH_DONE;
    return 0;
}

/* Metrics of split k under the current T into m: computed here, or (at the
 * parties) asked for, the phase `resume` coming back once they are in.
 * Returns 0 when m is ready, else the phase to go to (or -1). */
static int evaluate(vf_train_session *s, int k, int final, vf_metrics *m, int resume, vf_error *err) {
    if (!s->cfg.loss_at_parties)
        return vf_evaluate_split(&s->ls, &s->split[k], s->text, s->logit_scale, m, final ? s->probs[k] : NULL, err) ? -1 : 0;
    if (s->evaluated[k]) return 0;
    s->req_split = k;
    s->req_final = final;
    s->resume_phase = resume;
    return P_WAIT_EVAL;
}

int vf_train_session_set_eval(vf_train_session *s, const uint64_t *counts, double loss_sum, const vf_auc_grid *grid,
                              vf_error *err) {
    if (s->phase != P_WAIT_EVAL) return vf_fail(err, "training session: evaluation counts nobody asked for");
    const int k = s->req_split;
    vf_metrics *m = k == 0 ? &s->m_train : k == 1 ? &s->m_val : &s->m_test;
    if (vf_metrics_from_counts(m, counts, err))
        return vf_error_prefix(err, "%s evaluation at step %ld", k == 0 ? "train" : k == 1 ? "val" : "test", s->global_step);
    if (m->n != s->split[k].n)
        return vf_fail(err, "%s evaluation: the parties counted %d examples, the split has %d", k == 0 ? "train" : k == 1 ? "val" : "test",
                       m->n, s->split[k].n);
    m->loss = loss_sum / m->n;
    if (s->req_final) {
        const size_t len = vf_eval_counts_len(s->C);
        if (!s->counts[k]) s->counts[k] = malloc(len * sizeof(uint64_t));
        if (!s->grid[k]) s->grid[k] = malloc(sizeof *s->grid[k]);
        if (!s->counts[k] || !s->grid[k]) return vf_fail(err, "out of memory for evaluation counts");
        memcpy(s->counts[k], counts, len * sizeof(uint64_t));
        *s->grid[k] = *grid;
    }
    s->evaluated[k] = 1;
    s->phase = s->resume_phase;
    return 0;
}

static int phase_after_update(vf_train_session *s) {
    s->loss_sum += s->pending_loss;
    s->last_loss = s->pending_loss;
    s->step_in_epoch++;
    s->global_step++;
    progress_step(s);
    if (s->cfg.max_steps > 0 && s->global_step >= s->cfg.max_steps) s->stop = 1;
    if (s->stop) return P_END_EPOCH;
    if (s->cfg.checkpoint_every > 0 && s->global_step % s->cfg.checkpoint_every == 0) return P_WAIT_SAVE;
    return P_STEP;
}

static int phase_end_epoch(vf_train_session *s, vf_error *err) {
    const int has_val = s->split[1].n > 0;
    int w;
    if ((w = evaluate(s, 0, 0, &s->m_train, P_END_EPOCH, err)) || (has_val && (w = evaluate(s, 1, 0, &s->m_val, P_END_EPOCH, err))))
        return w < 0 ? (vf_error_prefix(err, "epoch %d evaluation", s->epoch + 1), -1) : w;
    s->evaluated[0] = s->evaluated[1] = 0;
    if (s->epoch == 0) s->first_loss = s->loss_sum / s->step_in_epoch;
    double v_auc = has_val ? s->m_val.auc : NAN;
    if (!s->have_best || isnan(s->best_auc) || v_auc > s->best_auc) {
        s->have_best = 1;
        s->best_auc = v_auc;
        s->best_epoch = s->epoch + 1;
        return P_WAIT_MARK;
    }
    return P_LOG_EPOCH;
}

static int phase_log_epoch(vf_train_session *s, vf_error *err) {
    const int has_val = s->split[1].n > 0;
    double train_loss = s->loss_sum / s->step_in_epoch;
    vf_epoch_record rec = {.epoch = s->epoch + 1, .steps = s->step_in_epoch, .lr = vf_lr_at_epoch(&s->cfg.schedule, s->epoch),
                           .train_loss = train_loss, .seconds = elapsed_s(&s->t0), .best_epoch = s->best_epoch};
    if (vf_run_log_epoch(&s->log, &rec, &s->m_train, has_val ? &s->m_val : NULL, err))
        return vf_error_prefix(err, "epoch %d", s->epoch + 1), -1;
    progress_epoch(s, train_loss, has_val);
    s->epsilon = epsilon_after(s, s->global_step);
    s->epoch++;
    s->step_in_epoch = 0;
    s->loss_sum = 0;
    return P_WAIT_SAVE;
}

/* The scores of split k's final evaluation, kept for per-site metrics. */
static float *final_probs(vf_train_session *s, int k, vf_error *err) {
    if (!s->probs[k]) s->probs[k] = malloc((size_t)s->split[k].n * s->C * sizeof(float));
    if (!s->probs[k]) vf_fail(err, "out of memory for %d x %d scores", s->split[k].n, s->C);
    return s->probs[k];
}

/* confusion, ROC and recall figures of split k's final evaluation: the ROC
 * from the scores here, or from the parties' summed histograms. */
static int final_figures(vf_train_session *s, int k, const vf_metrics *m, vf_error *err) {
    const char *name = k == 1 ? "val" : "test";
    if (s->cfg.loss_at_parties) return vf_run_log_final_figures_counts(&s->log, name, m, s->counts[k], s->grid[k], err);
    return vf_run_log_final_figures_scores(&s->log, name, m, s->probs[k], s->split[k].labels, s->split[k].n, err);
}

static int phase_finish(vf_train_session *s, vf_error *err) {
    const vf_embedded_split *val = &s->split[1], *test = &s->split[2];
    int w;
    if (!s->cfg.loss_at_parties) {
        if (val->n > 0 && !final_probs(s, 1, err)) return -1;
        if (test->n > 0 && !final_probs(s, 2, err)) return -1;
    }
    if (val->n > 0 && (w = evaluate(s, 1, 1, &s->m_val, P_FINISH, err))) return w < 0 ? (vf_error_prefix(err, "final validation"), -1) : w;
    if (test->n > 0 && (w = evaluate(s, 2, 1, &s->m_test, P_FINISH, err))) return w < 0 ? (vf_error_prefix(err, "test evaluation"), -1) : w;
    s->evaluated[1] = s->evaluated[2] = 0;
    if (val->n > 0 && final_figures(s, 1, &s->m_val, err)) return vf_error_prefix(err, "final validation"), -1;
    if (test->n > 0 && (vf_run_log_test(&s->log, &s->m_test, s->best_epoch, err) || final_figures(s, 2, &s->m_test, err)))
        return vf_error_prefix(err, "test evaluation"), -1;
    s->epsilon = epsilon_after(s, s->global_step);
    return P_DONE;
}

int vf_train_session_site_metrics(vf_train_session *s, const vf_site_rows *sites, int n_sites, vf_error *err) {
    if (s->phase != P_DONE) return vf_fail(err, "per-site metrics: the run has not finished its final evaluation");
    if (s->cfg.loss_at_parties) return vf_fail(err, "per-site metrics: with loss_at = image-parties each site reports its own");
    const float *const scores[3] = {NULL, s->probs[1], s->probs[2]};
    const int *const labels[3] = {NULL, s->split[1].labels, s->split[2].labels};
    const int n[3] = {s->split[0].n, s->split[1].n, s->split[2].n};
    return vf_run_log_sites(&s->log, sites, n_sites, scores, labels, n, s->best_epoch, err);
}

static const vf_train_action waiting_for[] = {
    [P_WAIT_UPDATE] = VF_TRAIN_UPDATE, [P_WAIT_SAVE] = VF_TRAIN_SAVE, [P_WAIT_MARK] = VF_TRAIN_MARK_BEST,
    [P_WAIT_RESTORE] = VF_TRAIN_RESTORE_BEST, [P_DONE] = VF_TRAIN_DONE, [P_WAIT_LOSS] = VF_TRAIN_LOSS,
    [P_WAIT_EVAL] = VF_TRAIN_EVAL,
};

vf_train_action vf_train_session_next(vf_train_session *s, vf_error *err) {
    for (;;) {
        int next;
        switch (s->phase) {
        case P_START: return vf_fail(err, "training session: no text features yet"), VF_TRAIN_ERROR;
        case P_STEP: next = phase_step(s, err); break;
        case P_BATCH: next = phase_batch(s, err); break;
        case P_BATCH_DONE: next = phase_batch_done(s); break;
        case P_AFTER_UPDATE: next = phase_after_update(s); break;
        case P_END_EPOCH: next = phase_end_epoch(s, err); break;
        case P_LOG_EPOCH: next = phase_log_epoch(s, err); break;
        case P_FINISH: next = phase_finish(s, err); break;
        default: return waiting_for[s->phase];
        }
        if (next < 0) return VF_TRAIN_ERROR;
        s->phase = next;
    }
}

void vf_train_session_set_text(vf_train_session *s, const float *text, float logit_scale) {
    memcpy(s->text, text, (size_t)s->C * s->D * sizeof(float));
    s->logit_scale = logit_scale;
    if (s->phase == P_START) s->phase = P_STEP;
    else if (s->phase == P_WAIT_UPDATE) s->phase = P_AFTER_UPDATE;
    else if (s->phase == P_WAIT_RESTORE) s->phase = P_FINISH;
}

void vf_train_session_saved(vf_train_session *s) {
    if (s->phase != P_WAIT_SAVE) return;
    s->committed_step = s->global_step;
    s->phase = P_STEP;
}

void vf_train_session_marked(vf_train_session *s) {
    if (s->phase == P_WAIT_MARK) s->phase = P_LOG_EPOCH;
}

/* ---- state ------------------------------------------------------------------------ */
static cJSON *doubles(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, isfinite(v[i]) ? cJSON_CreateNumber(v[i]) : cJSON_CreateNull());
    return a;
}

static void read_doubles(const cJSON *a, double *v, int n) {
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(a, i);
        v[i] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    }
}

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static double num(const cJSON *o, const char *k, double def) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : def;
}

void vf_train_session_state_to_json(const vf_train_session *s, cJSON *o) {
    cJSON_AddNumberToObject(o, "committed_step", (double)s->committed_step);
    cJSON_AddNumberToObject(o, "epoch", s->epoch);
    cJSON_AddNumberToObject(o, "step_in_epoch", s->step_in_epoch);
    cJSON_AddNumberToObject(o, "global_step", (double)s->global_step);
    cJSON_AddNumberToObject(o, "total_steps", (double)s->total_steps);
    cJSON_AddBoolToObject(o, "stop", s->stop);
    cJSON_AddBoolToObject(o, "budget_stop", s->budget_stop);
    add_num(o, "loss_sum", s->loss_sum);
    add_num(o, "last_loss", s->last_loss);
    add_num(o, "first_loss", s->first_loss);
    add_num(o, "best_val_auc", s->best_auc);
    cJSON_AddNumberToObject(o, "best_epoch", s->best_epoch);
    cJSON_AddBoolToObject(o, "have_best", s->have_best);
    const vf_run_log *l = &s->log;
    cJSON *h = cJSON_AddObjectToObject(o, "history");
    cJSON_AddNumberToObject(h, "n", l->n);
    cJSON_AddItemToObject(h, "train_loss", doubles(l->train_loss, l->n));
    cJSON_AddItemToObject(h, "train_eval_loss", doubles(l->train_eval_loss, l->n));
    cJSON_AddItemToObject(h, "val_loss", doubles(l->val_loss, l->n));
    cJSON_AddItemToObject(h, "train_auc", doubles(l->train_auc, l->n));
    cJSON_AddItemToObject(h, "train_acc", doubles(l->train_acc, l->n));
    cJSON_AddItemToObject(h, "val_auc", doubles(l->val_auc, l->n));
    cJSON_AddItemToObject(h, "val_acc", doubles(l->val_acc, l->n));
    cJSON_AddStringToObject(h, "jsonl", l->jsonl ? l->jsonl : "");
}

int vf_train_session_state_from_json(vf_train_session *s, const cJSON *o, const char *what, vf_error *err) {
    int epoch = (int)num(o, "epoch", 0), step_in_epoch = (int)num(o, "step_in_epoch", 0);
    long global_step = (long)num(o, "global_step", 0);
    if (epoch < 0 || epoch > s->cfg.epochs || step_in_epoch < 0 || step_in_epoch > s->steps_per_epoch || global_step < 0)
        return vf_fail(err, "%s: epoch %d, step %d of %d, global step %ld do not fit a run of %d epochs", what, epoch,
                       step_in_epoch, s->steps_per_epoch, global_step, s->cfg.epochs);
    vf_run_log *l = &s->log;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "history");
    int n = h ? (int)num(h, "n", 0) : 0;
    if (n < 0 || n > l->max_epochs) return vf_fail(err, "%s: history of %d epochs for a run of %d", what, n, l->max_epochs);
    const cJSON *j = h ? cJSON_GetObjectItemCaseSensitive(h, "jsonl") : NULL;
    if (cJSON_IsString(j) && j->valuestring[0]) {
        size_t len = strlen(j->valuestring);
        char *copy = malloc(len + 4096);
        if (!copy) return vf_fail(err, "out of memory");
        memcpy(copy, j->valuestring, len + 1);
        free(l->jsonl);
        l->jsonl = copy;
        l->jsonl_len = len;
        l->jsonl_cap = len + 4096;
    } else {
        l->jsonl_len = 0;
        if (l->jsonl) l->jsonl[0] = 0;
    }
    l->n = n;
    if (h) {
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "train_loss"), l->train_loss, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "train_eval_loss"), l->train_eval_loss, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "val_loss"), l->val_loss, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "train_auc"), l->train_auc, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "train_acc"), l->train_acc, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "val_auc"), l->val_auc, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "val_acc"), l->val_acc, n);
    }
    s->epoch = epoch;
    s->step_in_epoch = step_in_epoch;
    s->global_step = global_step;
    s->committed_step = (long)num(o, "committed_step", 0);
    s->stop = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "stop"));
    s->budget_stop = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "budget_stop"));
    s->loss_sum = num(o, "loss_sum", 0);
    s->last_loss = num(o, "last_loss", NAN);
    s->first_loss = num(o, "first_loss", NAN);
    s->best_auc = num(o, "best_val_auc", NAN);
    s->best_epoch = (int)num(o, "best_epoch", 0);
    s->have_best = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "have_best"));
    s->phase = s->phase == P_START ? P_START : P_STEP;   /* whatever was in flight is redone from here */
    s->evaluated[0] = s->evaluated[1] = s->evaluated[2] = 0;
    return 0;
}
