/* matmul_bf16: the image towers' matrix products in bf16 on CPUs that have
 * AVX512_BF16 or AMX-BF16 (issue 18), through oneDNN's matmul primitive:
 * bf16 inputs, fp32 accumulation, fp32 output, bias and residual in fp32.
 * Layer norm, softmax, GELU, attention and residual adds stay fp32; the fp32
 * kernels (matmul.h, sgemm) remain the reference and the default.
 *
 * Weights are converted to bf16 once, when a tower switches to bf16
 * (clip/clip_model.h, vf_vision_set_cpu_bf16); activations are converted on
 * each call into a per-thread buffer that grows only when a larger shape
 * than any before comes (the first batch).  oneDNN primitives are created
 * once per (shape, thread) and cached; a call allocates nothing after that.
 *
 * Run-time detection (vf_cpu_bf16_available): cpuid leaf 7 subleaf 1 EAX
 * bit 5 (AVX512_BF16) or leaf 7 EDX bit 22 (AMX-BF16), the OS saving the
 * AVX-512 state (XCR0), and a build with oneDNN (VF_HAVE_DNNL).  The
 * environment variable VFLCLIP_CPU_NO_BF16=1 makes it answer "no", so the
 * fallback can be tested on a CPU that has bf16. */
#ifndef VF_CPU_MATMUL_BF16_H
#define VF_CPU_MATMUL_BF16_H

#include <stddef.h>
#include <stdint.h>

/* 1 when bf16 matmuls can run here; `why` (may be NULL) gets what was found
 * ("AMX-BF16 and AVX512_BF16, oneDNN brg:avx512_core_amx_bf16") or why not
 * ("this CPU has neither AVX512_BF16 nor AMX-BF16").  The first call also
 * runs one small product to check oneDNN works; the answer is cached. */
int vf_cpu_bf16_available(char *why, size_t why_size);

/* out[i] = in[i] rounded to the nearest bf16 (ties to even); NaN stays NaN. */
void vf_bf16_from_f32(uint16_t *out, const float *in, long n);

/* A Linear layer's weight in bf16, PyTorch layout (OC, IC). */
typedef struct vf_bf16_linear {
    const uint16_t *w;
    int IC, OC;
} vf_bf16_linear;

/* out (N, OC) = [resid (N, OC) +] inp (N, IC) @ w^T + bias, bias (OC) or NULL.
 * As vf_matmul_forward / vf_matmul_residual_forward (out must not alias
 * resid or inp); call it from outside parallel regions (oneDNN threads it). */
void vf_bf16_linear_forward(const vf_bf16_linear *l, float *out, const float *resid, const float *inp,
                            const float *bias, int N);

/* A Linear layer in whichever precision it has: the bf16 weight when `l` is
 * not NULL, else the fp32 path of matmul.h, unchanged (weight (OC, IC)). */
void vf_linear_forward(const vf_bf16_linear *l, float *out, const float *resid, const float *inp,
                       const float *weight, const float *bias, int N, int IC, int OC);

/* C (M, N), rows ldc apart, += A (M, K) bf16 rows K apart @ B (K, N) fp32 rows
 * ldb apart (converted to bf16 here).  The convolutions' product (conv.h);
 * may be called inside a parallel region (then it runs on the calling thread). */
void vf_bf16_gemm_acc(float *C, int ldc, const uint16_t *A, int M, int K, const float *B, int ldb, int N);

#endif
