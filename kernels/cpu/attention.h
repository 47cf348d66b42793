/* attention: multi-head scaled dot-product attention forward (the core
 * between the q/k/v projections and the output projection), causal or not.
 * Conventions match cpu/backward.h so the saved probabilities feed
 * vf_attention_backward directly. */
#ifndef VF_CPU_ATTENTION_H
#define VF_CPU_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

/*   att[b,h,t,s] = softmax_s(scale * q[b,t,h,:] . k[b,s,h,:])   (B, NH, T, T)
 *                  over s <= t when causal (masked entries written as 0)
 *   out[b,t,h,:] = sum_s att[b,h,t,s] v[b,s,h,:]                (B, T, C)
 * q, k, v (B, T, C) have rows `ld` floats apart (C for separate buffers);
 * out is dense (B, T, C); att (B, NH, T, T) is kept for the backward pass. */
void vf_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int C, int NH, int ld, float scale, int causal);

/* The same without keeping the probabilities (inference): each thread
 * works in its own slice of scratch, of vf_attention_scratch_floats (for
 * either variant). */
size_t vf_attention_scratch_floats(int T, int C, int NH);
void vf_attention_forward_nosave(float *out, float *scratch, const float *q, const float *k, const float *v,
                                 int B, int T, int C, int NH, int ld, float scale, int causal);

/* The same in bf16 (inference on a CPU with bf16, cpu/matmul_bf16.h): q, k, v
 * are the interleaved (B, T, 3C) bf16 rows of the stacked projection, out
 * (B, T, C) bf16; q k^T and P v are bf16 products with fp32 sums, the scores
 * and the softmax are fp32, P is rounded to bf16 for P v.  scratch as above. */
void vf_attention_forward_bf16(uint16_t *out, float *scratch, const uint16_t *qkv, int B, int T, int C, int NH, float scale,
                               int causal);

#endif
