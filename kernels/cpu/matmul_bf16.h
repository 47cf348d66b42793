/* matmul_bf16: the image towers' matrix products in bf16 on CPUs that have
 * AVX512_BF16 or AMX-BF16 (issue 18): bf16 inputs, fp32 accumulation; bias,
 * GELU and the residual add are applied to the fp32 sums before the output
 * is written, in bf16 when the next product reads it, else in fp32.  Layer
 * norm and softmax compute in fp32 and write bf16 (cpu/layernorm.h,
 * cpu/attention.h); the fp32 kernels (matmul.h, sgemm) remain the reference
 * and the default.
 *
 * Where the CPU has AMX, the Linear layers run on this project's own tile
 * loop (cpu/matmul_amx.h: measured faster than oneDNN 2.6 there, mostly by
 * its fused GELU); elsewhere, and for shapes that loop does not take,
 * through oneDNN's matmul primitive with post-ops.  This file chooses.
 *
 * Weights are converted to bf16 and packed once, when a tower switches to
 * bf16 (clip/clip_model.h, vf_vision_set_cpu_bf16).  oneDNN primitives are
 * created once per (shape, thread) and cached; a call allocates nothing
 * after that (the convolutions' conversion buffer grows only when a larger
 * shape than any before comes).
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
#include "cpu/clip_shapes.h"

/* 1 when bf16 matmuls can run here; `why` (may be NULL) gets what was found
 * ("AMX-BF16 and AVX512_BF16, oneDNN brg:avx512_core_amx_bf16") or why not
 * ("this CPU has neither AVX512_BF16 nor AMX-BF16").  The first call also
 * runs one small product to check oneDNN works; the answer is cached. */
int vf_cpu_bf16_available(char *why, size_t why_size);

/* 1 when the bf16 path may also run AMX tiles itself (the Linear layers,
 * cpu/matmul_amx.h, and the attention products, cpu/attention_amx.h): vf_cpu_bf16_available, a CPU with
 * AMX-BF16 and AVX512_BF16, the OS granting the tile state, and VFLCLIP_CPU_NO_AMX unset
 * (which tests the oneDNN path on an AMX machine). */
int vf_cpu_bf16_amx(void);

/* out[i] = in[i] rounded to the nearest bf16 (ties to even); NaN stays NaN. */
void vf_bf16_from_f32(uint16_t *out, const float *in, long n);

/* A Linear layer's weight (OC, IC) in bf16, packed (vf_bf16_linear_pack):
 * for the AMX loop of cpu/matmul_amx.h where the CPU has AMX and the shape
 * fits, else in the blocked layout oneDNN's matmul reads without repacking
 * it on every call. */
typedef struct vf_bf16_linear {
    const void *w;
    int IC, OC;
} vf_bf16_linear;

/* Bytes of the packed weight of an (OC, IC) Linear layer; 0 when oneDNN
 * cannot make one here (vf_cpu_bf16_available said no). */
size_t vf_bf16_linear_bytes(int IC, int OC);

/* dst (vf_bf16_linear_bytes) = w (OC, IC) fp32, rounded to bf16 and packed.
 * Returns 0, or -1 when oneDNN failed (out of memory). */
int vf_bf16_linear_pack(void *dst, const float *w, int IC, int OC);

/* out (N, OC) = act(inp (N, IC) @ w^T + bias) [+ resid (N, OC)], inp bf16,
 * accumulated in fp32; out is bf16 (uint16_t) when out_bf16, else fp32.
 * bias (OC) or NULL, act NULL for none, resid fp32 or NULL (only with no
 * act); out must not alias inp or resid.  Call it from outside parallel
 * regions (oneDNN threads it). */
void vf_bf16_linear_forward(const vf_bf16_linear *l, void *out, int out_bf16, const float *resid, const uint16_t *inp,
                            const float *bias, int N, const vf_activation *act);

/* A matrix operand of vf_bf16_gemm_batched: element (i, r, c) of the batch
 * at p[i * batch + r * row + c * col] (in elements). */
typedef struct vf_bf16_strided {
    void *p;
    long batch, row, col;
} vf_bf16_strided;

/* For each i < batch: C_i (M, N) = A_i (M, K) @ B_i (K, N); A and B bf16 (A
 * with col 1), C bf16 when c_bf16 else fp32 (col 1).  The attention products
 * (cpu/attention.h); meant to be called inside a parallel region, where it
 * runs on the calling thread. */
void vf_bf16_gemm_batched(int batch, int M, int K, int N, vf_bf16_strided C, int c_bf16, vf_bf16_strided A,
                          vf_bf16_strided B);

/* C (M, N), rows ldc apart, += A (M, K) bf16 rows K apart @ B (K, N) fp32 rows
 * ldb apart (converted to bf16 here).  The convolutions' product (conv.h);
 * may be called inside a parallel region (then it runs on the calling thread). */
void vf_bf16_gemm_acc(float *C, int ldc, const uint16_t *A, int M, int K, const float *B, int ldb, int N);

#endif
