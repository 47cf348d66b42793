/* matmul: the Linear layer forward through OpenBLAS sgemm (all cores). */
#ifndef VF_CPU_MATMUL_H
#define VF_CPU_MATMUL_H

/* out (N, OC) = inp (N, IC) @ weight^T + bias; weight in PyTorch Linear
 * layout (OC, IC); bias (OC) or NULL.  Rows are split over the OpenMP
 * threads, each running a single-threaded sgemm (OpenBLAS's own threads are
 * switched off for the call), so call it from outside parallel regions. */
void vf_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int IC, int OC);

/* out (N, OC) = resid (N, OC) + inp @ weight^T + bias: a Linear layer and
 * the residual add after it in one pass over out.  out must not alias resid. */
void vf_matmul_residual_forward(float *out, const float *resid, const float *inp, const float *weight, const float *bias,
                                int N, int IC, int OC);

#endif
