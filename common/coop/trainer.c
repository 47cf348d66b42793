/* trainer: batches, the loss step, evaluation, the context update, and
 * `vflclip train`'s driver of the one training loop (train_session.c) with
 * the context in this process (context_learner.c).  The run directory's
 * files are written by trainer_io.c. */
#include "coop/trainer.h"
#include "coop/context_learner.h"
#include "coop/loss.h"
#include "coop/train_session.h"
#include "data/shuffle.h"
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
/* The arena's layout, for both of its passes (util/arena.h). */
static void loss_step_carve(vf_loss_step *s) {
    const int B_max = s->B_max, C = s->C, D = s->D;
    s->image = vf_arena_floats(&s->arena, (size_t)B_max * D);
    s->labels = vf_arena_alloc(&s->arena, (size_t)B_max * sizeof(int));
    s->logits = vf_arena_floats(&s->arena, (size_t)B_max * C);
    s->scratch = vf_arena_floats(&s->arena, (size_t)vf_coop_loss_scratch_floats(B_max, C, D));
}

int vf_loss_step_init(vf_loss_step *s, int C, int D, int B_max, vf_error *err) {
    memset(s, 0, sizeof *s);
    if (C < 2 || D < 1 || B_max < 1) return vf_fail(err, "loss step: bad sizes C=%d D=%d B=%d", C, D, B_max);
    s->C = C;
    s->D = D;
    s->B_max = B_max;
    vf_arena_plan(&s->arena);
    loss_step_carve(s);
    if (vf_arena_commit(&s->arena, err)) return -1;
    loss_step_carve(s);
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

int vf_split_scores(vf_loss_step *s, const vf_embedded_split *sp, const float *text, float logit_scale, float *probs,
                    double *loss_sum, vf_error *err) {
    int *idx = malloc((size_t)s->B_max * sizeof *idx);
    if (!idx) return vf_fail(err, "evaluation: out of memory");
    *loss_sum = 0;
    int rc = 0;
    for (int first = 0; first < sp->n && rc == 0; first += s->B_max) {
        int B = sp->n - first < s->B_max ? sp->n - first : s->B_max;
        for (int b = 0; b < B; b++) idx[b] = first + b;
        float l;
        rc = vf_loss_step_run(s, sp, idx, B, text, logit_scale, &l, NULL, err);
        if (rc == 0) {
            *loss_sum += (double)l * B;
            vf_softmax_rows(s->logits, probs + (size_t)first * s->C, B, s->C);   // (B, C)
        }
    }
    free(idx);
    return rc;
}

int vf_evaluate_split(vf_loss_step *s, const vf_embedded_split *sp, const float *text, float logit_scale,
                      vf_metrics *m, float *probs, vf_error *err) {
    if (sp->n == 0) return vf_fail(err, "evaluation: the split is empty");
    float *p = probs ? probs : malloc((size_t)sp->n * s->C * sizeof *p);
    if (!p) return vf_fail(err, "evaluation: out of memory for %d images", sp->n);
    double loss_sum;
    int rc = vf_split_scores(s, sp, text, logit_scale, p, &loss_sum, err);
    if (rc == 0) rc = vf_metrics_compute(m, p, sp->labels, sp->n, err);
    if (rc == 0) m->loss = loss_sum / sp->n;
    if (!probs) free(p);
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

/* ---- the single-process driver ----------------------------------------------- */
/* Answers each action of the session at once with the context in this process. */
static int drive(vf_train_session *s, vf_context_learner *l, const char *ctx_path, const vf_context_info *info, vf_error *err) {
    for (;;) {
        switch (vf_train_session_next(s, err)) {
        case VF_TRAIN_ERROR: return -1;
        case VF_TRAIN_UPDATE:
            if (vf_context_learner_update(l, s->dtext, s->lr, err) || vf_context_learner_forward(l, err)) return -1;
            vf_train_session_set_text(s, l->text, s->logit_scale);
            break;
        case VF_TRAIN_SAVE: vf_train_session_saved(s); break;
        case VF_TRAIN_MARK_BEST: {
            vf_context_learner_mark_best(l, s->best_epoch, s->best_auc);
            /* Saved as soon as it is the best, so an interrupted run keeps its best context. */
            vf_context_info ci = *info;
            ci.epoch = s->best_epoch;
            ci.val_auc = s->best_auc;
            if (vf_context_save(ctx_path, l->coop, &ci, err)) return -1;
            vf_train_session_marked(s);
            break;
        }
        case VF_TRAIN_RESTORE_BEST:
            if (vf_context_learner_restore_best(l, err) || vf_context_learner_forward(l, err)) return -1;
            vf_train_session_set_text(s, l->text, s->logit_scale);
            break;
        case VF_TRAIN_DONE: return 0;
        case VF_TRAIN_LOSS:
        case VF_TRAIN_EVAL:   /* only a session with loss_at_parties asks; this one holds the embeddings */
            return vf_fail(err, "training session: a loss or evaluation asked of image parties in a single-process run");
        }
    }
}

int vf_trainer_run(const vf_train_config *cfg, vf_coop *c, float logit_scale, const vf_embedded_split *train,
                   const vf_embedded_split *val, const vf_embedded_split *test, const vf_context_info *info,
                   vf_train_result *res, vf_error *err) {
    memset(res, 0, sizeof *res);
    const int C = vf_coop_n_classes(c), D = vf_coop_feature_dim(c);
    const vf_embedded_split none = {0, D, NULL, NULL};
    const vf_embedded_split split[3] = {*train, val ? *val : none, test ? *test : none};
    vf_train_session_config sc = {.epochs = cfg->epochs, .batch_size = cfg->batch_size, .max_steps = cfg->max_steps,
                                  .seed = cfg->seed, .schedule = cfg->schedule,
                                  .privacy = cfg->privacy ? *cfg->privacy : vf_text_grad_privacy_default(),
                                  .out_dir = cfg->out_dir, .class_names = info->class_names,
                                  .progress_tty = cfg->progress_tty, .quiet = cfg->quiet};
    vf_context_learner l;
    vf_train_session s;
    if (vf_context_learner_init(&l, c, &cfg->optim, err)) return -1;
    if (vf_train_session_init(&s, &sc, split, C, D, logit_scale, err)) {
        vf_context_learner_free(&l);
        return -1;
    }
    vf_log(VF_INFO, "event=train_start train=%d val=%d test=%d classes=%d ctx_floats=%d epochs=%d steps_per_epoch=%d "
           "batch=%d optimizer=%s lr=%g seed=%llu", train->n, split[1].n, split[2].n, C, vf_coop_ctx_count(c), cfg->epochs,
           s.steps_per_epoch, s.batcher.batch_size, vf_optim_kind_name(cfg->optim.kind), cfg->schedule.base_lr, cfg->seed);
    char ctx_path[4400];
    snprintf(ctx_path, sizeof ctx_path, "%s/context.safetensors", cfg->out_dir);
    int rc = vf_context_learner_forward(&l, err);
    if (rc == 0) {
        vf_train_session_set_text(&s, l.text, logit_scale);
        rc = drive(&s, &l, ctx_path, info, err);
    }
    if (rc == 0) {
        res->epochs_run = s.log.n;
        res->best_epoch = s.best_epoch;
        res->steps = s.global_step;
        res->best_val_auc = s.best_auc;
        res->first_loss = s.first_loss;
        res->last_loss = s.log.n ? s.log.train_loss[s.log.n - 1] : NAN;
        res->epsilon = s.epsilon;
        res->budget_stop = s.budget_stop;
        if (split[2].n > 0)
            vf_log(VF_INFO, "event=train_done best_epoch=%d best_val_auc=%.4f test_auc=%.4f test_acc=%.4f steps=%ld",
                   s.best_epoch, s.best_auc, s.m_test.auc, s.m_test.acc, s.global_step);
        else
            vf_log(VF_INFO, "event=train_done best_epoch=%d best_val_auc=%.4f test=none steps=%ld", s.best_epoch, s.best_auc,
                   s.global_step);
    }
    vf_train_session_free(&s);
    vf_context_learner_free(&l);
    return rc;
}
