/* loss: the CoOp training loss, seed paper eq. 1,
 *   L = mean_i -log softmax_{y_i}(s * cos(z_i, t_k)),   s = exp(logit_scale),
 * over N image embeddings z (N, D) and C class text features t (C, D), with
 * its gradient with respect to the (unnormalised) text features, through the
 * L2 normalisation.  The image tower is frozen, so no image gradient. */
#ifndef VF_COOP_LOSS_H
#define VF_COOP_LOSS_H

/* Floats of scratch vf_coop_loss needs for N images, C classes, width D. */
long vf_coop_loss_scratch_floats(int N, int C, int D);

/* image (N,D) and text (C,D) unnormalised; labels in [0, C).  Returns the
 * mean loss; fills logits (N,C) = s * cos if non-NULL and dtext (C,D) =
 * dL/dtext if non-NULL (overwritten, not accumulated).  scratch holds
 * vf_coop_loss_scratch_floats(N,C,D) floats; nothing is allocated.
 * Returns NAN (and leaves dtext untouched) when a label is out of range or a
 * feature vector has zero norm; callers treat a non-finite loss as an error. */
float vf_coop_loss(const float *image, const int *labels, int N, const float *text, int C, int D, float logit_scale,
                   float *logits, float *dtext, float *scratch);

/* Row-wise L2 normalisation out (R,D) = x / |x|; norms (R) receives |x|
 * (may be NULL).  Returns -1 if a row has zero norm, else 0. */
int vf_l2_normalize_rows(float *out, float *norms, const float *x, int R, int D);

#endif
