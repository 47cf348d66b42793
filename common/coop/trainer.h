/* trainer: CoOp training as library steps, so that the single-process
 * `vflclip train` and the federated daemons run the very same code.
 *
 * The work of one training step is split where the federation splits it:
 *   knowledge party  vf_coop_text_forward           ctx -> text features T (C, D)
 *   aggregator       vf_loss_step_run               image embeddings of the batch + labels + T
 *                                                   -> loss and dL/dT (C, D)
 *   knowledge party  vf_text_update                 dL/dT -> dL/dctx -> optimizer step on ctx
 * and evaluation (vf_evaluate_split) needs only embeddings, labels and T.
 * Batches come from vf_batcher: a permutation per epoch that depends only on
 * (seed, epoch, n), so every party can agree on it from the seed alone.
 * Following CoOp (Dassl's train loader), the last incomplete batch of an
 * epoch is dropped when the split holds at least one full batch.
 *
 * The loop over these is train_session.h (the one loop, which the
 * aggregator drives too); vf_trainer_run drives it in one process with the
 * context here: epochs of steps, train and val metrics after every epoch, the
 * best-validation-AUC context kept, test metrics with it at the end, and
 * the run directory's files (all written atomically):
 *   metrics.jsonl       one JSON object per epoch (rewritten whole each epoch)
 *   test_metrics.json   test metrics of the best-val-AUC context
 *   context.safetensors "ctx" (n_ctx, W) or (C, n_ctx, W) for CSC; metadata:
 *                       template, class_names (JSON), n_ctx, csc, class_pos,
 *                       init_words, model_fingerprint, epoch, val_auc, seed,
 *                       split_seed
 *   auc_acc.png, loss.png, confusion_test.png (and confusion_val.png) */
#ifndef VF_COOP_TRAINER_H
#define VF_COOP_TRAINER_H

#include <stdint.h>
#include "coop/optim.h"
#include "coop/prompt.h"
#include "metrics/metrics.h"
#include "util/arena.h"
#include "util/vf_error.h"

/* A split as the aggregator holds it: embeddings and labels, no images. */
typedef struct vf_embedded_split {
    int n, D;
    const float *emb;    /* (n, D) projected image embeddings, not normalised */
    const int *labels;   /* (n) */
} vf_embedded_split;

/* ---- batches ------------------------------------------------------------ */
typedef struct vf_batcher {
    int n, batch_size, steps_per_epoch;
    uint64_t seed;
    int *order;          /* (n) this epoch's permutation */
    int epoch, step;     /* current epoch; next step within it */
} vf_batcher;

int vf_batcher_init(vf_batcher *b, int n, int batch_size, uint64_t seed, vf_error *err);
void vf_batcher_free(vf_batcher *b);
/* Steps per epoch: n / batch_size (incomplete batch dropped) or 1 when n < batch_size. */
int vf_batcher_steps(int n, int batch_size);
void vf_batcher_start_epoch(vf_batcher *b, int epoch);
/* Indices of the next batch of this epoch into *idx; returns its size, or 0
 * when the epoch is over. */
int vf_batcher_next(vf_batcher *b, const int **idx);

/* ---- aggregator: loss and dL/dT from image embeddings + text features ---- */
typedef struct vf_loss_step {
    int C, D, B_max;
    vf_arena arena;
    float *image;        /* (B_max, D) the batch's embeddings, gathered */
    int *labels;         /* (B_max) */
    float *logits;       /* (B_max, C) */
    float *scratch;      /* vf_coop_loss_scratch_floats(B_max, C, D) */
} vf_loss_step;

int vf_loss_step_init(vf_loss_step *s, int C, int D, int B_max, vf_error *err);
void vf_loss_step_free(vf_loss_step *s);
/* Mean loss over the batch idx (B <= B_max) of split sp with text features
 * text (C, D); dtext (C, D) = dL/dtext if non-NULL; logits (B, C) stay in
 * s->logits.  A non-finite loss (zero-norm feature, NaN input) is an error. */
int vf_loss_step_run(vf_loss_step *s, const vf_embedded_split *sp, const int *idx, int B, const float *text,
                     float logit_scale, float *loss, float *dtext, vf_error *err);

/* Softmax scores probs (n, C) of the whole split under text features (C, D),
 * in chunks of s->B_max, and the sum of its examples' cross-entropy. */
int vf_split_scores(vf_loss_step *s, const vf_embedded_split *sp, const float *text, float logit_scale, float *probs,
                    double *loss_sum, vf_error *err);

/* Metrics of the whole split under text features (C, D): logits in chunks of
 * s->B_max, softmax scores, ACC/AUC/recall/confusion, mean loss in m->loss.
 * probs (n, C) receives the softmax scores if non-NULL. */
int vf_evaluate_split(vf_loss_step *s, const vf_embedded_split *sp, const float *text, float logit_scale,
                      vf_metrics *m, float *probs, vf_error *err);

/* ---- knowledge party: text backward + optimizer step -------------------- */
/* dctx (ctx-sized scratch) = dL/dctx from dtext (C, D) for the last forward,
 * then one optimizer step on the context at learning rate lr. */
int vf_text_update(vf_coop *c, vf_optim *o, const float *dtext, float lr, float *dctx, vf_error *err);

/* ---- context files -------------------------------------------------------- */
typedef struct vf_context_info {
    const char *template_, *init_words;
    const char *const *class_names;
    int n_classes, n_ctx, csc;
    vf_class_pos class_pos;
    const char *model_fingerprint;   /* hex */
    int epoch;                       /* epoch the context comes from (1-based; 0 = initial) */
    double val_auc;                  /* NaN when unknown */
    unsigned long long seed;
    unsigned long long split_seed;   /* of a CSV data set split by seed */
} vf_context_info;

/* Writes ctx and its description atomically. */
int vf_context_save(const char *path, const vf_coop *c, const vf_context_info *info, vf_error *err);

/* A context file read back: everything needed to rebuild the prompts. */
typedef struct vf_context_file {
    char *template_, *init_words, *fingerprint;
    char **class_names;
    int n_classes, n_ctx, csc, rows, width;
    vf_class_pos class_pos;
    unsigned long long split_seed;   /* 0 when absent */
    float *ctx;                      /* (rows, width) */
} vf_context_file;

/* Reads a context.safetensors written by vf_context_save; errors name the
 * file and the missing or malformed field. */
int vf_context_load(const char *path, vf_context_file *f, vf_error *err);
void vf_context_file_free(vf_context_file *f);

/* ---- single-process training ---------------------------------------------- */
typedef struct vf_train_config {
    int epochs;                 /* >= 1 */
    int batch_size;             /* >= 1 */
    long max_steps;             /* stop after this many steps in total; 0 = no limit */
    unsigned long long seed;    /* batch order */
    vf_optim_config optim;
    vf_lr_schedule schedule;    /* max_epochs = epochs for the cosine */
    const char *out_dir;
    int progress_tty;           /* 1: one updating line on stderr; 0: plain lines */
    int quiet;                  /* no progress at all */
    /* dL/dT accumulation, clipping and noise (privacy/text_grad_guard.h);
     * all zero = off.  One step = one optimizer update = `accumulate` batches. */
    struct vf_text_grad_privacy *privacy;
} vf_train_config;

typedef struct vf_train_result {
    int epochs_run, best_epoch;
    long steps;
    double best_val_auc;
    double first_loss, last_loss;   /* mean training loss of the first and last epoch */
    double epsilon;                 /* of the dL/dT releases at the privacy's delta; +inf without noise */
    int budget_stop;                /* 1: stopped because the next step would exceed the epsilon budget */
} vf_train_result;

/* Trains the context of c on train, selects by val AUC (last epoch when val
 * is empty), evaluates test, writes the run directory.  logit_scale is the
 * checkpoint's (log of s).  info describes c for the context file (epoch and
 * val_auc are filled in here). */
int vf_trainer_run(const vf_train_config *cfg, vf_coop *c, float logit_scale, const vf_embedded_split *train,
                   const vf_embedded_split *val, const vf_embedded_split *test, const vf_context_info *info,
                   vf_train_result *res, vf_error *err);

/* The run directory's plot and JSON writers, shared with `vflclip evaluate`. */
int vf_write_metrics_json(const char *path, const vf_metrics *m, const char *const *class_names, const char *extra_key,
                          int extra_value, vf_error *err);

#endif
