/* trainer: batches, the aggregator's loss step, evaluation, the knowledge
 * party's update, and the single-process epoch loop (see trainer.h).  The
 * run directory's files are written by trainer_io.c. */
#include "coop/trainer.h"
#include "coop/loss.h"
#include "coop/trainer_io.h"
#include "data/shuffle.h"
#include "privacy/text_grad_guard.h"
#include "util/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- batches ------------------------------------------------------------ */
int vf_batcher_steps(int n, int batch_size) { return n >= batch_size ? n / batch_size : (n > 0); }

int vf_batcher_init(vf_batcher *b, int n, int batch_size, uint64_t seed, vf_error *err) {
    memset(b, 0, sizeof *b);
    if (n <= 0) return vf_fail(err, "the training split is empty");
    if (batch_size <= 0) return vf_fail(err, "batch size %d must be positive", batch_size);
    b->n = n;
    b->batch_size = batch_size < n ? batch_size : n;
    b->steps_per_epoch = vf_batcher_steps(n, batch_size);
    b->seed = seed;
    b->order = malloc((size_t)n * sizeof *b->order);
    if (!b->order) return vf_fail(err, "out of memory for a batch order of %d", n);
    vf_batcher_start_epoch(b, 0);
    return 0;
}

void vf_batcher_free(vf_batcher *b) {
    free(b->order);
    b->order = NULL;
}

void vf_batcher_start_epoch(vf_batcher *b, int epoch) {
    b->epoch = epoch;
    b->step = 0;
    vf_epoch_order(b->seed, epoch, b->order, b->n);
}

int vf_batcher_next(vf_batcher *b, const int **idx) {
    if (b->step >= b->steps_per_epoch) return 0;
    *idx = b->order + (size_t)b->step * b->batch_size;
    b->step++;
    return b->batch_size;
}

/* ---- aggregator: loss step and evaluation -------------------------------- */
int vf_loss_step_init(vf_loss_step *s, int C, int D, int B_max, vf_error *err) {
    memset(s, 0, sizeof *s);
    if (C < 2 || D < 1 || B_max < 1) return vf_fail(err, "loss step: bad sizes C=%d D=%d B=%d", C, D, B_max);
    s->C = C;
    s->D = D;
    s->B_max = B_max;
    size_t bytes = vf_arena_round((size_t)B_max * D * sizeof(float)) + vf_arena_round((size_t)B_max * sizeof(int)) +
                   vf_arena_round((size_t)B_max * C * sizeof(float)) +
                   vf_arena_round((size_t)vf_coop_loss_scratch_floats(B_max, C, D) * sizeof(float));
    if (vf_arena_init(&s->arena, bytes, err)) return -1;
    s->image = vf_arena_floats(&s->arena, (size_t)B_max * D);
    s->labels = vf_arena_alloc(&s->arena, (size_t)B_max * sizeof(int));
    s->logits = vf_arena_floats(&s->arena, (size_t)B_max * C);
    s->scratch = vf_arena_floats(&s->arena, (size_t)vf_coop_loss_scratch_floats(B_max, C, D));
    if (!s->image || !s->labels || !s->logits || !s->scratch) {
        vf_arena_free(&s->arena);
        return vf_fail(err, "loss step: arena sizing bug");
    }
    return 0;
}

void vf_loss_step_free(vf_loss_step *s) { vf_arena_free(&s->arena); }

int vf_loss_step_run(vf_loss_step *s, const vf_embedded_split *sp, const int *idx, int B, const float *text,
                     float logit_scale, float *loss, float *dtext, vf_error *err) {
    if (B < 1 || B > s->B_max) return vf_fail(err, "loss step: batch of %d (1..%d)", B, s->B_max);
    if (sp->D != s->D) return vf_fail(err, "loss step: embeddings are %d wide, text features %d", sp->D, s->D);
    for (int b = 0; b < B; b++) {
        int i = idx ? idx[b] : b;
        if (i < 0 || i >= sp->n) return vf_fail(err, "loss step: index %d outside the split's %d images", i, sp->n);
        memcpy(s->image + (size_t)b * s->D, sp->emb + (size_t)i * s->D, (size_t)s->D * sizeof(float));   // (B, D)
        s->labels[b] = sp->labels[i];
    }
    float l = vf_coop_loss(s->image, s->labels, B, text, s->C, s->D, logit_scale, s->logits, dtext, s->scratch);
    if (!isfinite(l))
        return vf_fail(err, "loss is not finite (a label outside 0..%d, a zero or non-finite embedding or text feature)",
                       s->C - 1);
    *loss = l;
    return 0;
}

int vf_evaluate_split(vf_loss_step *s, const vf_embedded_split *sp, const float *text, float logit_scale,
                      vf_metrics *m, float *probs, vf_error *err) {
    if (sp->n == 0) return vf_fail(err, "evaluation: the split is empty");
    float *p = probs ? probs : malloc((size_t)sp->n * s->C * sizeof *p);
    int *idx = malloc((size_t)s->B_max * sizeof *idx);
    if (!p || !idx) {
        if (!probs) free(p);
        free(idx);
        return vf_fail(err, "evaluation: out of memory for %d images", sp->n);
    }
    double loss_sum = 0;
    int rc = 0;
    for (int first = 0; first < sp->n && rc == 0; first += s->B_max) {
        int B = sp->n - first < s->B_max ? sp->n - first : s->B_max;
        for (int b = 0; b < B; b++) idx[b] = first + b;
        float l;
        rc = vf_loss_step_run(s, sp, idx, B, text, logit_scale, &l, NULL, err);
        if (rc == 0) {
            loss_sum += (double)l * B;
            vf_softmax_rows(s->logits, p + (size_t)first * s->C, B, s->C);   // (B, C)
        }
    }
    if (rc == 0) rc = vf_metrics_compute(m, p, sp->labels, sp->n, err);
    if (rc == 0) m->loss = loss_sum / sp->n;
    if (!probs) free(p);
    free(idx);
    return rc;
}

/* ---- knowledge party ------------------------------------------------------ */
int vf_text_update(vf_coop *c, vf_optim *o, const float *dtext, float lr, float *dctx, vf_error *err) {
    if (vf_coop_text_backward(c, dtext, dctx, err)) return -1;
    int n = vf_coop_ctx_count(c);
    for (int i = 0; i < n; i++)
        if (!isfinite(dctx[i])) return vf_fail(err, "context gradient element %d is not finite", i);
    vf_optim_step(o, vf_coop_ctx(c), dctx, lr);
    return 0;
}

/* ---- progress ------------------------------------------------------------- */
typedef struct progress {
    int tty, quiet;
    struct timespec t0;
    long total, done, next_report;
    int line_open;
} progress;

static double elapsed_s(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

static void fmt_duration(double s, char *out, size_t size) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, size, "%02ld:%02ld", t / 60, t % 60);
}

static void progress_step(progress *p, int epoch, int epochs, int step, int steps, float loss, float lr) {
    p->done++;
    if (p->quiet) return;
    double el = elapsed_s(&p->t0);
    char eta[32];
    fmt_duration(p->done ? el / p->done * (double)(p->total - p->done) : 0, eta, sizeof eta);
    if (p->tty) {
        fprintf(stderr, "\r\033[Kepoch %d/%d  step %d/%d  loss %.4f  lr %.3g  ETA %s", epoch + 1, epochs, step, steps,
                loss, lr, eta);
        p->line_open = 1;
    } else if (p->done >= p->next_report || p->done == p->total) {
        fprintf(stderr, "epoch %d/%d step %d/%d loss %.4f lr %.3g eta %s\n", epoch + 1, epochs, step, steps, loss, lr, eta);
        p->next_report = p->done + (p->total >= 10 ? p->total / 10 : 1);
    }
    fflush(stderr);
}

static void progress_epoch(progress *p, int epoch, int epochs, double train_loss, const vf_metrics *val) {
    if (p->quiet) return;
    if (p->line_open) fputc('\n', stderr);
    p->line_open = 0;
    if (val)
        fprintf(stderr, "epoch %d/%d done: train loss %.4f  val AUC %.4f  ACC %.4f  (%.1fs)\n", epoch + 1, epochs, train_loss,
                val->auc, val->acc, elapsed_s(&p->t0));
    else
        fprintf(stderr, "epoch %d/%d done: train loss %.4f  (%.1fs)\n", epoch + 1, epochs, train_loss, elapsed_s(&p->t0));
    fflush(stderr);
}

/* ---- the single-process loop ----------------------------------------------- */
typedef struct run_buffers {
    float *text, *dtext, *dctx, *best_ctx;
} run_buffers;

static int evaluate_current(vf_coop *c, vf_loss_step *ls, float logit_scale, float *text, const vf_embedded_split *sp,
                            vf_metrics *m, vf_error *err) {
    if (vf_coop_text_forward(c, text, err)) return -1;
    return vf_evaluate_split(ls, sp, text, logit_scale, m, NULL, err);
}

int vf_trainer_run(const vf_train_config *cfg, vf_coop *c, float logit_scale, const vf_embedded_split *train,
                   const vf_embedded_split *val, const vf_embedded_split *test, const vf_context_info *info,
                   vf_train_result *res, vf_error *err) {
    memset(res, 0, sizeof *res);
    const int C = vf_coop_n_classes(c), D = vf_coop_feature_dim(c), n_ctx_f = vf_coop_ctx_count(c);
    if (cfg->epochs < 1) return vf_fail(err, "epochs %d must be at least 1", cfg->epochs);
    if (train->D != D) return vf_fail(err, "image embeddings are %d wide but the text tower projects to %d", train->D, D);
    const int has_val = val && val->n > 0, has_test = test && test->n > 0;

    vf_batcher batcher;
    vf_loss_step ls;
    vf_optim opt = {0};
    vf_metrics m_train = {0}, m_val = {0}, m_test = {0};
    vf_run_log log = {0};
    run_buffers buf = {0};
    vf_text_grad_guard guard;
    int rc = -1, ls_ok = 0, guard_ok = 0;
    if (vf_batcher_init(&batcher, train->n, cfg->batch_size, cfg->seed, err)) return -1;
    int B_eval = 256;
    if (vf_loss_step_init(&ls, C, D, batcher.batch_size > B_eval ? batcher.batch_size : B_eval, err)) goto done;
    ls_ok = 1;
    if (vf_optim_init(&opt, &cfg->optim, n_ctx_f, err)) goto done;
    if (vf_metrics_init(&m_train, C, err) || vf_metrics_init(&m_val, C, err) || vf_metrics_init(&m_test, C, err)) goto done;
    buf.text = malloc((size_t)C * D * sizeof(float));
    buf.dtext = malloc((size_t)C * D * sizeof(float));
    buf.dctx = malloc((size_t)n_ctx_f * sizeof(float));
    buf.best_ctx = malloc((size_t)n_ctx_f * sizeof(float));
    if (!buf.text || !buf.dtext || !buf.dctx || !buf.best_ctx) { vf_fail(err, "out of memory"); goto done; }
    if (vf_run_log_init(&log, cfg->out_dir, cfg->epochs, info->class_names, C, err)) goto done;

    progress pr = {.tty = cfg->progress_tty, .quiet = cfg->quiet};
    clock_gettime(CLOCK_MONOTONIC, &pr.t0);
    vf_text_grad_privacy priv = vf_text_grad_privacy_default();
    if (cfg->privacy) priv = *cfg->privacy;
    const int guarded = vf_text_grad_privacy_active(&priv);
    if (guarded && vf_text_grad_guard_init(&guard, &priv, C, D, batcher.batch_size, err)) goto done;
    guard_ok = guarded;
    if (priv.epsilon_budget > 0 &&
        vf_text_grad_epsilon(&priv, batcher.batch_size, train->n, 1) > priv.epsilon_budget) {
        vf_fail(err, "epsilon_budget %g is below the epsilon of a single step (%.4f)", priv.epsilon_budget,
                vf_text_grad_epsilon(&priv, batcher.batch_size, train->n, 1));
        goto done;
    }
    const int steps_per_epoch = (batcher.steps_per_epoch + priv.accumulate - 1) / priv.accumulate;
    long total = (long)cfg->epochs * steps_per_epoch;
    pr.total = cfg->max_steps > 0 && cfg->max_steps < total ? cfg->max_steps : total;
    vf_log(VF_INFO, "event=train_start train=%d val=%d test=%d classes=%d ctx_floats=%d epochs=%d steps_per_epoch=%d "
           "batch=%d optimizer=%s lr=%g seed=%llu", train->n, has_val ? val->n : 0, has_test ? test->n : 0, C, n_ctx_f,
           cfg->epochs, steps_per_epoch, batcher.batch_size, vf_optim_kind_name(cfg->optim.kind),
           cfg->schedule.base_lr, cfg->seed);

    char ctx_path[4400];
    snprintf(ctx_path, sizeof ctx_path, "%s/context.safetensors", cfg->out_dir);
    double best_auc = NAN;
    int have_best = 0, stop = 0;
    for (int epoch = 0; epoch < cfg->epochs && !stop; epoch++) {
        float lr = vf_lr_at_epoch(&cfg->schedule, epoch);
        vf_batcher_start_epoch(&batcher, epoch);
        const int *idx;
        int B;
        double loss_sum = 0;
        int steps = 0;
        while ((B = vf_batcher_next(&batcher, &idx)) > 0) {
            if (priv.epsilon_budget > 0 &&
                vf_text_grad_epsilon(&priv, batcher.batch_size, train->n, res->steps + 1) > priv.epsilon_budget) {
                res->budget_stop = stop = 1;
                vf_log(VF_INFO, "event=epsilon_budget_reached steps=%ld epsilon=%.4f budget=%g", res->steps,
                       vf_text_grad_epsilon(&priv, batcher.batch_size, train->n, res->steps), priv.epsilon_budget);
                break;
            }
            float loss;
            double batch_loss_sum = 0;
            int n_batches = 0;
            if (vf_coop_text_forward(c, buf.text, err)) goto done;                                    // T (C, D)
            if (guarded) vf_text_grad_guard_begin(&guard);
            for (;;) {   /* the step's `accumulate` batches, all under the same T */
                if (vf_loss_step_run(&ls, train, idx, B, buf.text, logit_scale, &loss, buf.dtext, err)) goto done;
                if (guarded && vf_text_grad_guard_add(&guard, &ls, B, buf.text, logit_scale, buf.dtext, err)) goto done;
                batch_loss_sum += loss;
                if (++n_batches >= priv.accumulate || (B = vf_batcher_next(&batcher, &idx)) == 0) break;
            }
            if (guarded) vf_text_grad_guard_release(&guard, cfg->seed, (uint64_t)res->steps, buf.dtext);   // (C, D)
            loss = (float)(batch_loss_sum / n_batches);
            if (vf_text_update(c, &opt, buf.dtext, lr, buf.dctx, err)) goto done;
            loss_sum += loss;
            steps++;
            res->steps++;
            progress_step(&pr, epoch, cfg->epochs, steps, steps_per_epoch, loss, lr);
            if (cfg->max_steps > 0 && res->steps >= cfg->max_steps) { stop = 1; break; }
        }
        if (steps == 0) break;   /* the budget ran out at an epoch boundary: nothing new to evaluate */
        double train_loss = loss_sum / steps;
        if (epoch == 0) res->first_loss = train_loss;
        res->last_loss = train_loss;
        res->epochs_run = epoch + 1;

        if (evaluate_current(c, &ls, logit_scale, buf.text, train, &m_train, err)) goto done;
        if (has_val && vf_evaluate_split(&ls, val, buf.text, logit_scale, &m_val, NULL, err)) goto done;
        double v_auc = has_val ? m_val.auc : NAN;
        if (!have_best || isnan(best_auc) || v_auc > best_auc) {
            have_best = 1;
            best_auc = v_auc;
            res->best_epoch = epoch + 1;
            memcpy(buf.best_ctx, vf_coop_ctx(c), (size_t)n_ctx_f * sizeof(float));
            /* Saved as soon as it is the best, so an interrupted run keeps its best context. */
            vf_context_info ci = *info;
            ci.epoch = epoch + 1;
            ci.val_auc = v_auc;
            if (vf_context_save(ctx_path, c, &ci, err)) goto done;
        }
        progress_epoch(&pr, epoch, cfg->epochs, train_loss, has_val ? &m_val : NULL);
        vf_epoch_record rec = {.epoch = epoch + 1, .steps = steps, .lr = lr, .train_loss = train_loss,
                               .seconds = elapsed_s(&pr.t0), .best_epoch = res->best_epoch};
        if (vf_run_log_epoch(&log, &rec, &m_train, has_val ? &m_val : NULL, err)) goto done;
    }
    res->best_val_auc = best_auc;
    res->epsilon = vf_text_grad_epsilon(&priv, batcher.batch_size, train->n, res->steps);

    /* The best-val-AUC context is the run's result. */
    if (vf_coop_set_ctx(c, buf.best_ctx, vf_coop_ctx_rows(c), vf_coop_width(c), "best context", err)) goto done;
    if (vf_coop_text_forward(c, buf.text, err)) goto done;
    if (has_val) {
        if (vf_evaluate_split(&ls, val, buf.text, logit_scale, &m_val, NULL, err)) goto done;
        if (vf_run_log_confusion(&log, "val", &m_val, err)) goto done;
    }
    if (has_test) {
        if (vf_evaluate_split(&ls, test, buf.text, logit_scale, &m_test, NULL, err)) goto done;
        if (vf_run_log_test(&log, &m_test, res->best_epoch, err)) goto done;
        if (vf_run_log_confusion(&log, "test", &m_test, err)) goto done;
        vf_log(VF_INFO, "event=train_done best_epoch=%d best_val_auc=%.4f test_auc=%.4f test_acc=%.4f steps=%ld",
               res->best_epoch, best_auc, m_test.auc, m_test.acc, res->steps);
    } else {
        vf_log(VF_INFO, "event=train_done best_epoch=%d best_val_auc=%.4f test=none steps=%ld", res->best_epoch, best_auc,
               res->steps);
    }
    rc = 0;
done:
    vf_run_log_free(&log);
    free(buf.text); free(buf.dtext); free(buf.dctx); free(buf.best_ctx);
    vf_metrics_free(&m_train); vf_metrics_free(&m_val); vf_metrics_free(&m_test);
    vf_optim_free(&opt);
    if (ls_ok) vf_loss_step_free(&ls);
    if (guard_ok) vf_text_grad_guard_free(&guard);
    vf_batcher_free(&batcher);
    return rc;
}
