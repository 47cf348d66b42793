/* attention: multi-head scaled dot-product attention forward (the core
 * between the q/k/v projections and the output projection), causal or not.
 * Conventions match cpu/backward.h so the saved probabilities feed
 * vf_attention_backward directly. */
#ifndef VF_CPU_ATTENTION_H
#define VF_CPU_ATTENTION_H

/*   att[b,h,t,s] = softmax_s(scale * q[b,t,h,:] . k[b,s,h,:])   (B, NH, T, T)
 *                  over s <= t when causal (masked entries written as 0)
 *   out[b,t,h,:] = sum_s att[b,h,t,s] v[b,s,h,:]                (B, T, C)
 * q, k, v (B, T, C) have rows `ld` floats apart (C for separate buffers);
 * out is dense (B, T, C).  att may be NULL when nothing needs the
 * probabilities afterwards (inference): they then live on the stack. */
void vf_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int C, int NH, int ld, float scale, int causal);

#endif
