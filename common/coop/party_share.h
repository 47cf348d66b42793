/* party_share: what one image party computes for a secure sum when the
 * loss is computed at the image parties ([run] loss_at = image-parties), so
 * that its embeddings and labels never leave it.  The sums over all parties
 * are exactly what train_session computes itself in the pooled mode:
 *
 *   step  the party's examples of a batch of B (all parties together) under
 *         text features T:
 *           loss share = sum over its examples of the CoOp loss / B
 *           dL/dT share (C, D) = sum of its examples' dL/dT / B
 *         or, with per-example clipping (clip > 0), the sum of its
 *         examples' clipped dL/dT, not divided: the aggregator adds the
 *         noise to the sum over parties and divides by the examples of the
 *         release, as text_grad_guard does in the pooled mode;
 *   range where a split's scores lie, so the evaluation's histograms can
 *         be fine where the scores are: per class the count, sum and sum of
 *         squares of the log-odds of p_c (metrics/eval_counts.h), the sums
 *         / 128 and / 128^2 so that they stay inside the fixed point's range;
 *   eval  a whole split of its own: the counts of metrics/eval_counts.h on
 *         that grid and the sum of its examples' cross-entropy.
 *
 * Nothing here is masked: secagg/masked_sum.h does that to the vectors
 * vf_party_share_step_vector / _eval_vector fill. */
#ifndef VF_COOP_PARTY_SHARE_H
#define VF_COOP_PARTY_SHARE_H

#include <stddef.h>
#include <stdint.h>

#include "coop/trainer.h"
#include "metrics/eval_counts.h"
#include "privacy/text_grad_guard.h"
#include "util/vf_error.h"

typedef struct vf_party_share {
    int C, D, B_max;
    float clip;
    vf_loss_step ls;              /* gathers, logits, loss, dL/dT */
    vf_text_grad_guard guard;     /* per-example clipping when clip > 0 */
    int guarded;
    float *dtext;                 /* (C, D) */
} vf_party_share;

/* Sized for batches of up to B_max of this party's examples (and evaluation
 * chunks of as many); clip > 0 turns on per-example clipping. */
int vf_party_share_init(vf_party_share *ps, int C, int D, int B_max, float clip, vf_error *err);
void vf_party_share_free(vf_party_share *ps);

/* Words of the STEP vector: loss, C * D dL/dT, examples clipped. */
size_t vf_party_share_step_len(int C, int D);
/* Words of the EVAL vector: vf_eval_counts_len(C) counts, loss sum. */
size_t vf_party_share_eval_len(int C);
/* Words of the RANGE vector: 3 per class. */
size_t vf_party_share_range_len(int C);

/* The STEP vector of this party's examples idx (n_own of them, positions in
 * sp; 0 is fine: a party with no example in the batch sends zeros) of a
 * batch of B, under text (C, D) and logit_scale, into v. */
int vf_party_share_step_vector(vf_party_share *ps, const vf_embedded_split *sp, const int *idx, int n_own, int B,
                               const float *text, float logit_scale, uint64_t *v, vf_error *err);
/* The RANGE vector of the whole split sp into v; probs (sp->n, C) receives
 * the split's softmax scores. */
int vf_party_share_range_vector(vf_party_share *ps, const vf_embedded_split *sp, const float *text, float logit_scale,
                                float *probs, uint64_t *v, vf_error *err);
/* The EVAL vector of the whole split sp, histograms on grid, into v; probs
 * (sp->n, C) receives the split's softmax scores (the site's own metrics
 * are computed from them). */
int vf_party_share_eval_vector(vf_party_share *ps, const vf_embedded_split *sp, const float *text, float logit_scale,
                               const vf_auc_grid *grid, float *probs, uint64_t *v, vf_error *err);

/* The aggregator's side: a summed STEP vector back into the loss, dL/dT (C,
 * D) and the count of clipped examples; a summed EVAL vector's loss sum (its
 * counts are the vector itself).  A decoded value that is not finite or out
 * of range is an error (masks that did not cancel). */
int vf_party_share_read_step(const uint64_t *sum, int C, int D, double *loss, float *dtext, uint64_t *clipped,
                             vf_error *err);
double vf_party_share_read_eval_loss(const uint64_t *sum, int C);
/* A summed RANGE vector into the evaluation's histogram grid. */
int vf_party_share_read_range(const uint64_t *sum, int C, vf_auc_grid *grid, vf_error *err);

#endif
