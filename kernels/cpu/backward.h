/* backward: input-gradient backward passes of the transformer layers, plain C
 * (the specification; OpenBLAS for the matmuls).
 *
 * CLIP is frozen during CoOp, so these compute gradients with respect to the
 * layer INPUTS only; no weight or bias gradients exist anywhere.  Every
 * function ACCUMULATES into its input-gradient buffers (+=), so that the two
 * branches of a residual connection simply add up; callers zero the
 * buffers once per backward pass.  Shapes follow llm.c: B batch (prompts),
 * T tokens, C channels, NH heads, BT = B*T rows. */
#ifndef VF_CPU_BACKWARD_H
#define VF_CPU_BACKWARD_H

/* y = (x - mean) * rstd * weight + bias, per row of C.
 * dinp (BT, C) += d/dx of sum(dout * y).  mean/rstd (BT) are the forward's
 * saved statistics; pass NULL for both to recompute them from inp with eps. */
void vf_layernorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                           const float *mean, const float *rstd, float eps, int BT, int C);

/* out (BT, OC) = inp (BT, IC) @ weight^T + bias, weight in PyTorch Linear
 * layout (OC, IC).  dinp (BT, IC) += dout (BT, OC) @ weight (OC, IC). */
void vf_matmul_backward_input(float *dinp, const float *dout, const float *weight, int BT, int IC, int OC);

/* Activations, elementwise over N values of the forward input inp:
 * dinp += act'(inp) * dout. */
void vf_quick_gelu_backward(float *dinp, const float *inp, const float *dout, long N); /* x*sigmoid(1.702x) */
void vf_gelu_backward(float *dinp, const float *inp, const float *dout, long N);       /* exact erf GELU */
void vf_gelu_tanh_backward(float *dinp, const float *inp, const float *dout, long N);  /* tanh approximation */

/* out = a + b: da += dout, db += dout (either may be NULL). */
void vf_residual_backward(float *da, float *db, const float *dout, long N);

/* Rows of a batch of sequences whose gradients are wanted: t in [lo[b], hi[b])
 * of sequence b, stored packed at row off[b] + t - lo[b] of an (R, ...)
 * buffer, off[b] = sum of the earlier sequences' counts.  With causal
 * attention the gradient at row t depends only on rows >= t, so rows below
 * lo can be dropped when their input gradient is not needed, and rows past
 * a sequence's pooled (EOT) row carry no gradient at all. */
typedef struct vf_row_ranges {
    const int *lo, *hi, *off;   // (B) each
} vf_row_ranges;

/* Causal multi-head self-attention core, after the q/k/v projections and
 * before the output projection:
 *   att[b,h,t,s] = softmax_s<=t(scale * q[b,t,h,:] . k[b,s,h,:])   (B, NH, T, T)
 *   out[b,t,h,:] = sum_s att[b,h,t,s] v[b,s,h,:]                    (B, T, C)
 * q, k, v are (B, T, C) with rows `ld` floats apart (C for separate
 * buffers, 3C for a fused qkv buffer).
 * rows == NULL: dout is (B, T, C) and dq, dk, dv use q's layout (stride ld).
 * rows != NULL: only the rows in `rows` are computed; dout, dq, dk, dv are
 * packed (R, C) as vf_row_ranges describes (contributions to rows below lo
 * are dropped; dout rows outside the ranges are taken as zero).
 * att is the forward's saved probabilities (B, NH, T, T), or NULL to
 * recompute them from q and k into `scratch` (B*NH*T*T floats; unused and
 * may be NULL when att is given).  Masked entries (s > t) are never read. */
void vf_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *q, const float *k, const float *v, const float *att,
                           int B, int T, int C, int NH, int ld, float scale, const vf_row_ranges *rows);

#endif
