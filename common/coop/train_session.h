/* train_session: the one CoOp training loop, as a resumable state machine.
 *
 * It owns everything of a run that needs image embeddings: the batch order,
 * the loss step and dL/dT, dL/dT accumulation/clipping/noise and the epsilon
 * budget, epoch ends (train/val metrics, best-val-AUC selection, the
 * metrics log and plots) and the final val/test metrics.  What it does not
 * own is the context: the driver holds the CoOp context (in this process for
 * `vflclip train`, at the knowledge party for a federated run) and does what
 * the session asks:
 *
 *     vf_train_session_set_text(s, T)          T of the current context first
 *     for (;;) switch (vf_train_session_next(s, err)) {
 *     case VF_TRAIN_UPDATE:       apply s->dtext at s->lr, then set_text(T of the new context)
 *     case VF_TRAIN_SAVE:         make the context durable at s->global_step, then vf_train_session_saved(s)
 *     case VF_TRAIN_MARK_BEST:    keep the context as the best (s->best_epoch, s->best_auc), then _marked(s)
 *     case VF_TRAIN_RESTORE_BEST: put the best context back, then set_text(its T)
 *     case VF_TRAIN_LOSS:         (loss_at_parties) the parties' summed shares of batch s->req_idx (s->req_B
 *                                 examples of the train split) under s->text: vf_train_session_set_loss
 *     case VF_TRAIN_EVAL:         (loss_at_parties) the parties' summed counts of split s->req_split under
 *                                 s->text (s->req_final: the final evaluation): vf_train_session_set_eval
 *     case VF_TRAIN_DONE:         val/test metrics are written; export the best context
 *     case VF_TRAIN_ERROR:        err says why
 *     }
 *
 * `vflclip train` (coop/trainer.c) answers each action at once; the
 * aggregator answers them from its network callbacks.  Both therefore train
 * the same way, step for step.  The state that matters between actions (where
 * in which epoch, losses so far, the best epoch, the per-epoch history) is
 * written and read by vf_train_session_state_{to,from}_json; a driver that
 * lost an action (the knowledge party went away) restores the last saved
 * state and calls next() again.  The batch order needs no state: it is a
 * function of (seed, epoch).
 *
 * With loss_at_parties ([run] loss_at = image-parties) the session holds no
 * embedding or label: the splits give only their sizes, and each batch's
 * loss and dL/dT and each evaluation's counts come from the image parties as
 * secure sums (coop/party_share.h says what each party computes), through
 * the LOSS and EVAL actions.  Everything else (batches, accumulation, clipped
 * sums, noise and the epsilon budget, best-epoch selection, the metrics log)
 * is the same code as in the pooled mode. */
#ifndef VF_COOP_TRAIN_SESSION_H
#define VF_COOP_TRAIN_SESSION_H

#include <time.h>

#include "coop/trainer.h"
#include "coop/trainer_io.h"
#include "privacy/text_grad_guard.h"

typedef struct cJSON cJSON;

typedef struct vf_train_session_config {
    int epochs, batch_size;            /* >= 1 */
    long max_steps;                    /* stop after this many optimizer steps; 0 = no limit */
    unsigned long long seed;           /* batch order and dL/dT noise */
    vf_lr_schedule schedule;
    vf_text_grad_privacy privacy;      /* vf_text_grad_privacy_default(): off */
    int checkpoint_every;              /* a SAVE every this many steps (besides each epoch end); 0 = epoch ends only */
    const char *out_dir;               /* metrics.jsonl, plots, test_metrics.json */
    const char *const *class_names;    /* (C), kept by pointer */
    int loss_at_parties;               /* 1: LOSS and EVAL actions instead of embeddings here */
    const char *run_name, *backbone;   /* in the figures' titles (NULL: the run directory's name; none) */
    int progress_tty, quiet;           /* progress on stderr: one updating line, plain lines, or none */
} vf_train_session_config;

typedef enum {
    VF_TRAIN_ERROR = -1,
    VF_TRAIN_UPDATE = 0,
    VF_TRAIN_SAVE,
    VF_TRAIN_MARK_BEST,
    VF_TRAIN_RESTORE_BEST,
    VF_TRAIN_DONE,
    VF_TRAIN_LOSS,
    VF_TRAIN_EVAL,
} vf_train_action;

typedef struct vf_train_session {
    vf_train_session_config cfg;
    int C, D;
    vf_embedded_split split[3];        /* train, val, test (val/test may be empty) */
    float logit_scale;
    float *text, *dtext;               /* (C, D) the current T; dL/dT of the pending UPDATE */
    float lr;                          /* learning rate of the pending UPDATE */
    int steps_per_epoch;               /* optimizer steps (each `accumulate` batches) */
    long total_steps;
    /* where the run is: saved and restored as the session's state */
    int epoch, step_in_epoch, stop, budget_stop, have_best, best_epoch;
    long global_step, committed_step;
    double loss_sum, last_loss, first_loss, best_auc;
    /* final results */
    vf_metrics m_train, m_val, m_test;
    float *probs[3];                   /* (n, C) softmax scores of the final val [1] and test [2] evaluation; [0] unused */
    double epsilon;                    /* of the dL/dT released so far; +inf without noise */
    char message[256];                 /* why it stopped early, if it did */
    /* the pending LOSS or EVAL (loss_at_parties) */
    const int *req_idx;                /* (req_B) positions in the train split of the batch */
    int req_B, req_batch;              /* its size; its number within the step (0 .. accumulate - 1) */
    int req_split, req_final;          /* EVAL: the split (0 train, 1 val, 2 test); 1: the final evaluation */
    uint64_t *counts[3];               /* the final evaluation's summed counts of val [1] and test [2] (eval_counts.h) */
    vf_auc_grid *grid[3];              /* and their histogram grids */
    /* internals */
    int phase, pending_batches, resume_phase, evaluated[3];
    float pending_loss;
    double step_loss_sum;
    vf_batcher batcher;
    vf_loss_step ls;
    vf_text_grad_guard guard;
    int guarded;
    vf_run_log log;
    struct timespec t0;
    long progress_next;
    int progress_line;
} vf_train_session;

/* Checks the configuration against the splits, sizes everything; nothing is
 * written yet.  The splits' arrays are kept by pointer. */
int vf_train_session_init(vf_train_session *s, const vf_train_session_config *cfg, const vf_embedded_split split[3], int C,
                          int D, float logit_scale, vf_error *err);
void vf_train_session_free(vf_train_session *s);

/* The text features of the driver's current context (C, D), and its logit scale. */
void vf_train_session_set_text(vf_train_session *s, const float *text, float logit_scale);
/* What the driver must do next (see the top of this file). */
vf_train_action vf_train_session_next(vf_train_session *s, vf_error *err);
void vf_train_session_saved(vf_train_session *s);
/* LOSS answered: the batch's loss (mean over its examples) and grad (C, D):
 * its mean dL/dT, or with [privacy] clip its clipped per-example sum;
 * clipped: examples whose gradient was clipped. */
int vf_train_session_set_loss(vf_train_session *s, double loss, const float *grad, uint64_t clipped, vf_error *err);
/* EVAL answered: the summed counts (eval_counts.h) on histogram grid and
 * the cross-entropy sum. */
int vf_train_session_set_eval(vf_train_session *s, const uint64_t *counts, double loss_sum, const vf_auc_grid *grid,
                              vf_error *err);
void vf_train_session_marked(vf_train_session *s);

/* After DONE: site_metrics.json in the run directory, each site's val and
 * test metrics from the scores of the final evaluation (vf_run_log_sites);
 * a site's rows are given per split. */
int vf_train_session_site_metrics(vf_train_session *s, const vf_site_rows *sites, int n_sites, vf_error *err);

/* The session's state (position, losses, best, history) into / from o. */
void vf_train_session_state_to_json(const vf_train_session *s, cJSON *o);
int vf_train_session_state_from_json(vf_train_session *s, const cJSON *o, const char *what, vf_error *err);

#endif
