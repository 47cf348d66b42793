/* optim: the optimizers and learning-rate schedules of CoOp training.
 *
 * Adam and SGD follow torch.optim exactly (same update order, L2 weight
 * decay added to the gradient, Adam's bias corrections, SGD momentum buffer
 * initialised to the first gradient, no dampening, no Nesterov), so that one
 * step from the same parameters and gradient gives the same numbers.
 * The schedule is CoOp's (Dassl): cosine annealing over the epochs with an
 * optional constant or linear warm-up.  State (step count, moments) saves to
 * and loads from safetensors for checkpoints; the writer is atomic. */
#ifndef VF_COOP_OPTIM_H
#define VF_COOP_OPTIM_H

#include "formats/safetensors.h"
#include "util/vf_error.h"

typedef enum { VF_OPT_ADAM = 0, VF_OPT_SGD = 1 } vf_optim_kind;

typedef struct vf_optim_config {
    vf_optim_kind kind;
    float weight_decay;       /* L2, added to the gradient (torch semantics); 0 = none */
    float beta1, beta2, eps;  /* Adam: 0.9, 0.999, 1e-8 */
    float momentum;           /* SGD: CoOp uses 0.9; 0 = plain SGD */
} vf_optim_config;

/* torch.optim defaults for `kind` (Adam: betas (0.9, 0.999), eps 1e-8;
 * SGD: momentum 0.9 as CoOp), weight decay 0. */
vf_optim_config vf_optim_defaults(vf_optim_kind kind);
/* "adam" / "sgd" -> kind; -1 with an error otherwise. */
int vf_optim_kind_parse(const char *s, vf_optim_kind *kind, vf_error *err);
const char *vf_optim_kind_name(vf_optim_kind kind);

typedef struct vf_optim {
    vf_optim_config cfg;
    long n;          /* number of parameters */
    long step;       /* steps taken */
    float *m;        /* Adam first moment / SGD momentum buffer (n) */
    float *v;        /* Adam second moment (n); NULL for SGD */
} vf_optim;

int vf_optim_init(vf_optim *o, const vf_optim_config *cfg, long n, vf_error *err);
/* One update of params (n) with grad (n) at learning rate lr. No allocation. */
void vf_optim_step(vf_optim *o, float *params, const float *grad, float lr);
void vf_optim_free(vf_optim *o);

/* Adds the state to a safetensors writer as "<prefix>step" (I64 scalar),
 * "<prefix>m", "<prefix>v" and metadata "<prefix>kind"; the optimizer must
 * outlive the writer's save. */
int vf_optim_add_to_writer(const vf_optim *o, vf_st_writer *w, const char *prefix, vf_error *err);
/* Restores state written by vf_optim_add_to_writer into an initialised
 * optimizer of the same kind and size; errors name the file and tensor. */
int vf_optim_load_from(vf_optim *o, const vf_safetensors *st, const char *prefix, vf_error *err);
/* Convenience: the state alone in its own file (atomic) and back. */
int vf_optim_save(const vf_optim *o, const char *path, vf_error *err);
int vf_optim_load(vf_optim *o, const char *path, vf_error *err);

/* ---- learning-rate schedule (per epoch, as CoOp/Dassl step it) ---------- */
typedef enum { VF_WARMUP_NONE = 0, VF_WARMUP_CONSTANT, VF_WARMUP_LINEAR } vf_warmup_kind;

typedef struct vf_lr_schedule {
    float base_lr;          /* paper: 1e-3 (Adam); CoOp: 2e-3 (SGD) */
    int max_epochs;         /* cosine period T_max; 0 = constant base_lr */
    vf_warmup_kind warmup;
    int warmup_epochs;      /* CoOp: 1 */
    float warmup_lr;        /* constant warm-up lr (CoOp: 1e-5); linear: lr at epoch 0 */
} vf_lr_schedule;

/* Learning rate for epoch `epoch` (0-based):
 *   warm-up (epoch < warmup_epochs): constant -> warmup_lr; linear -> warmup_lr at
 *     epoch 0, then base_lr * epoch / warmup_epochs (Dassl's LinearWarmupScheduler);
 *   otherwise base_lr * (1 + cos(pi * t / max_epochs)) / 2 with t = epoch - warmup_epochs
 *     (t = epoch without warm-up): CosineAnnealingLR(T_max = max_epochs, eta_min 0)
 *     as Dassl's ConstantWarmupScheduler / LinearWarmupScheduler chain it, the
 *     successor stepped only after warm-up, so the cosine restarts at base_lr on
 *     the first epoch after warm-up (cfg.OPTIM.WARMUP_RECOUNT = True, the default). */
float vf_lr_at_epoch(const vf_lr_schedule *s, int epoch);
/* "none" / "constant" / "linear". */
int vf_warmup_kind_parse(const char *s, vf_warmup_kind *kind, vf_error *err);

#endif
