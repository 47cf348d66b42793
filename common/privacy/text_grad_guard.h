/* text_grad_guard: what the aggregator does to dL/dT before it leaves for the
 * knowledge party, the only tensor that carries the image parties' labels
 * out of the aggregator.  One dL/dT of one batch says which classes the batch
 * held (docs/threat-model.md); two controls, both per run:
 *
 *   accumulate k   dL/dT is the mean over k consecutive batches (drawn with
 *                  the same text features), one optimizer step per k
 *                  batches, so the knowledge party sees only the union of
 *                  k batches' classes.
 *   clip, noise    per-example DP-SGD on dL/dT: each example's own gradient
 *                  G_i (C, D) is scaled to L2 norm <= clip, the clipped
 *                  gradients are summed over the k batches, Gaussian noise
 *                  of standard deviation noise * clip is added to every
 *                  element (seeded by the run seed and the step), and the sum
 *                  is divided by the number of examples.  With noise > 0 this
 *                  is the subsampled Gaussian mechanism the RDP accountant
 *                  (rdp.h) measures, at sampling rate k * batch / n_train.
 *
 * The per-example gradient of the CoOp loss needs no autograd: with unit
 * image u_i, unit text v_c = T_c/|T_c|, logits s <u_i, v_c> and softmax p,
 *   G_i[c] = s (p_ic - [c = y_i]) / |T_c| * (u_i - <u_i, v_c> v_c)
 *   |G_i|^2 = sum_c (s (p_ic - [c = y_i]) / |T_c|)^2 (1 - <u_i, v_c>^2),
 * so the clipped sum is sum_c-rows of (W^T U) minus a v_c term, O(B C D).
 * With k = 1 and clip = 0 the guard is not used and dL/dT is the loss
 * step's own, bit for bit. */
#ifndef VF_PRIVACY_TEXT_GRAD_GUARD_H
#define VF_PRIVACY_TEXT_GRAD_GUARD_H

#include <stdint.h>
#include "util/arena.h"
#include "util/vf_error.h"

typedef struct vf_text_grad_privacy {
    int accumulate;            /* batches per release, >= 1 */
    float clip;                /* per-example L2 bound on dL/dT; 0 = no per-example clipping */
    float noise_multiplier;    /* noise std / clip; > 0 needs clip > 0 */
    double delta;              /* of the reported (epsilon, delta) */
    double epsilon_budget;     /* a run stops before exceeding it; 0 = no budget */
} vf_text_grad_privacy;

/* Defaults: accumulate 1, no clip, no noise, delta 1e-5, no budget. */
vf_text_grad_privacy vf_text_grad_privacy_default(void);
/* Range and consistency checks; messages name the option (`what` prefixes them). */
int vf_text_grad_privacy_check(const vf_text_grad_privacy *p, const char *what, vf_error *err);
/* 1 when the guard changes anything (k > 1 or clipping). */
int vf_text_grad_privacy_active(const vf_text_grad_privacy *p);
/* Epsilon at p->delta after `steps` releases of k batches of `batch` from n_train
 * examples; +inf without noise. */
double vf_text_grad_epsilon(const vf_text_grad_privacy *p, int batch, int n_train, long steps);

typedef struct vf_text_grad_guard {
    vf_text_grad_privacy p;
    int C, D, B_max;
    vf_arena arena;
    float *sum;          /* (C, D) running sum over the release's batches */
    float *unit_image;   /* (B_max, D) */
    float *weight;       /* (B_max, C) clip factor * s (p - y) / |T_c| */
    float *unit_text;    /* (C, D) */
    float *text_norm;    /* (C) */
    long examples;       /* in the release so far */
    int batches;
    long clipped;        /* examples whose gradient was scaled down, over the run */
} vf_text_grad_guard;

int vf_text_grad_guard_init(vf_text_grad_guard *g, const vf_text_grad_privacy *p, int C, int D, int B_max,
                            vf_error *err);
void vf_text_grad_guard_free(vf_text_grad_guard *g);
/* Starts a release (clears the sum). */
void vf_text_grad_guard_begin(vf_text_grad_guard *g);
/* One batch as the loss saw it, with B examples under text features text (C, D). */
typedef struct vf_guard_batch {
    int B;
    const float *image;    /* (B, D) the batch's image embeddings */
    const int *labels;     /* (B) */
    const float *logits;   /* (B, C) s * cos(image, text) */
} vf_guard_batch;

/* Adds a batch; dtext_batch (C, D) is its mean dL/dT, used when there is no
 * clipping. */
int vf_text_grad_guard_add(vf_text_grad_guard *g, const vf_guard_batch *b, const float *text, float logit_scale,
                           const float *dtext_batch, vf_error *err);
/* Adds a batch whose dL/dT was computed elsewhere (loss_at = image-parties:
 * the secure sum of the parties' shares): with clipping, share (C, D) is the
 * batch's clipped per-example sum over its B examples; without, the batch's
 * mean dL/dT.  The release is then the same as for vf_text_grad_guard_add. */
int vf_text_grad_guard_add_share(vf_text_grad_guard *g, const float *share, int B, vf_error *err);
/* dtext (C, D) = the release: mean over the batches (no clipping) or
 * (clipped sum + noise) / examples; noise seeded by (seed, step). */
void vf_text_grad_guard_release(vf_text_grad_guard *g, uint64_t seed, uint64_t step, float *dtext);

#endif
