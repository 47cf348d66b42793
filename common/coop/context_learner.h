/* context_learner: the context side of CoOp training — the prompt learner's
 * context vectors, their optimizer, and the best context so far.  Whoever
 * holds the context (the `vflclip train` process, the knowledge party) keeps
 * one and answers a training session's actions with it (train_session.h):
 *   UPDATE        vf_context_learner_update(dL/dT, lr), then _forward
 *   MARK_BEST     vf_context_learner_mark_best(epoch, val AUC)
 *   RESTORE_BEST  vf_context_learner_restore_best, then _forward
 * Buffers are allocated once, at init; a step allocates nothing. */
#ifndef VF_COOP_CONTEXT_LEARNER_H
#define VF_COOP_CONTEXT_LEARNER_H

#include <stdint.h>

#include "coop/optim.h"
#include "coop/prompt.h"
#include "util/arena.h"
#include "util/vf_error.h"

typedef struct vf_context_learner {
    vf_coop *coop;          /* not owned */
    vf_optim optim;
    vf_arena arena;
    float *text;            /* (C, D) text features of the last forward */
    float *dctx;            /* (ctx floats) dL/dctx of the last update */
    float *best_ctx;        /* (ctx floats) */
    int best_epoch;         /* 0: the initial context */
    double best_auc;        /* NaN when unknown */
} vf_context_learner;

int vf_context_learner_init(vf_context_learner *l, vf_coop *coop, const vf_optim_config *oc, vf_error *err);
void vf_context_learner_free(vf_context_learner *l);
/* l->text = T of the current context (C, D). */
int vf_context_learner_forward(vf_context_learner *l, vf_error *err);
/* dL/dctx from dtext (C, D) for the last forward, then one optimizer step at lr. */
int vf_context_learner_update(vf_context_learner *l, const float *dtext, float lr, vf_error *err);
void vf_context_learner_mark_best(vf_context_learner *l, int epoch, double val_auc);
int vf_context_learner_restore_best(vf_context_learner *l, vf_error *err);

/* The learner's durable state at `step`, written atomically to path: "ctx",
 * "best_ctx", the optimizer ("optim.*"), metadata step, best_epoch,
 * best_val_auc and model_fingerprint.  _load refuses a file written for
 * another model or of another shape, naming the file. */
int vf_context_learner_save(const vf_context_learner *l, const char *path, uint64_t step, const char *model_fingerprint,
                            vf_error *err);
int vf_context_learner_load(vf_context_learner *l, const char *path, const char *model_fingerprint, vf_error *err);

#endif
