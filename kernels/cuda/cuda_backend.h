/* cuda_backend: the C-callable face of the CUDA kernels (kernels/cuda/ *.cu files).
 *
 * Everything here exists only when the build found nvcc (VF_HAVE_CUDA); C
 * code calls it inside #ifdef VF_HAVE_CUDA and otherwise stays on the CPU.
 * A build with CUDA still runs on machines without a GPU or driver:
 * vf_cuda_device_count() then returns 0.  cuBLASLt and cuDNN are opened with
 * dlopen the first time a context needs them, so programs that never touch
 * the GPU do not pay the seconds it takes to load those libraries.
 *
 * The C code in kernels/cpu/ is the specification: every op below computes
 * what its namesake there computes, on device pointers, and tests/gpu/
 * checks each one against it.  Precision:
 *   VF_CUDA_FP32  fp32 storage, fp32 matmuls (no TF32): matches C to ~1e-5
 *   VF_CUDA_TF32  fp32 storage, TF32 tensor-core matmuls
 *   VF_CUDA_BF16  image towers: bf16 weights and matmul inputs, fp32
 *                 accumulation, fp32 residual stream; the text tower and the
 *                 ResNet convolutions use TF32 in this mode (see each).
 *
 * Ops take device pointers and run on the context's compute stream; they
 * return 0 or -1 with the CUDA/cuBLAS error in err. */
#ifndef VF_CUDA_BACKEND_H
#define VF_CUDA_BACKEND_H

#ifdef VF_HAVE_CUDA

#include <stddef.h>
#include "cpu/clip_shapes.h"
#include "cpu/clip_text.h"
#include "cpu/clip_vit.h"
#include "cpu/resnet.h"
#include "util/vf_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vf_cuda_precision { VF_CUDA_FP32 = 0, VF_CUDA_TF32 = 1, VF_CUDA_BF16 = 2 } vf_cuda_precision;
const char *vf_cuda_precision_name(vf_cuda_precision p);

/* ---- devices and contexts ------------------------------------------------ */
/* Number of usable CUDA devices; 0 without a driver or GPU (never fails). */
int vf_cuda_device_count(void);
/* "NVIDIA H200, 132 SMs, 139.8 GiB, cc 9.0" into buf. */
int vf_cuda_device_describe(int device, char *buf, size_t n, vf_error *err);

typedef struct vf_cuda_ctx vf_cuda_ctx;
/* One device, one compute stream and one copy stream, a cuBLASLt handle and
 * workspace; cuDNN is opened lazily by the ResNet. */
int vf_cuda_ctx_create(vf_cuda_ctx **ctx, int device, vf_cuda_precision prec, vf_error *err);
void vf_cuda_ctx_free(vf_cuda_ctx *ctx);
vf_cuda_precision vf_cuda_ctx_precision(const vf_cuda_ctx *ctx);
int vf_cuda_sync(vf_cuda_ctx *ctx, vf_error *err);

/* Device memory (plain cudaMalloc; for tests and the checker, models use
 * their own arenas) and copies on the compute stream (synchronous). */
void *vf_cuda_malloc(vf_cuda_ctx *ctx, size_t bytes, vf_error *err);
void vf_cuda_free(void *dev);
int vf_cuda_upload(vf_cuda_ctx *ctx, void *dev, const void *host, size_t bytes, vf_error *err);
int vf_cuda_download(vf_cuda_ctx *ctx, void *host, const void *dev, size_t bytes, vf_error *err);
int vf_cuda_memset0(vf_cuda_ctx *ctx, void *dev, size_t bytes, vf_error *err);

/* Events for timing: milliseconds the compute stream spends in fn(arg). */
int vf_cuda_time_ms(vf_cuda_ctx *ctx, int (*fn)(void *arg, vf_error *err), void *arg, float *ms, vf_error *err);

/* ---- fp32 ops (namesakes in kernels/cpu; shapes as there) ------------------------ */
int vf_cuda_layernorm_forward(vf_cuda_ctx *ctx, float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, int N, int C, float eps, vf_error *err);
/* dinp += (like vf_layernorm_backward; mean/rstd required). */
int vf_cuda_layernorm_backward(vf_cuda_ctx *ctx, float *dinp, const float *dout, const float *inp, const float *weight,
                               const float *mean, const float *rstd, int N, int C, vf_error *err);
int vf_cuda_activation_forward(vf_cuda_ctx *ctx, vf_activation act, float *out, const float *inp, long N, vf_error *err);
/* dinp += act'(inp) * dout */
int vf_cuda_activation_backward(vf_cuda_ctx *ctx, vf_activation act, float *dinp, const float *inp, const float *dout,
                                long N, vf_error *err);
int vf_cuda_residual_forward(vf_cuda_ctx *ctx, float *out, const float *a, const float *b, long N, vf_error *err);
/* Row softmax of scale * inp (rows, cols); causal: row r keeps cols <= r % T
 * (T = cols), the rest written 0. */
int vf_cuda_softmax_forward(vf_cuda_ctx *ctx, float *out, const float *inp, int rows, int cols, float scale, int causal,
                            vf_error *err);
/* Fused attention (vf_attention_forward without att): q, k, v rows `ld`
 * floats apart, out dense (B, T, C). */
int vf_cuda_attention_forward(vf_cuda_ctx *ctx, float *out, const float *q, const float *k, const float *v, int B, int T,
                              int C, int NH, int ld, float scale, int causal, vf_error *err);
/* Test hook for the bf16 path (tensor cores where it fits): qkv fused
 * (B, T, 3C) fp32 in, out (B, T, C) fp32, bf16 inside; allocates. */
int vf_cuda_attention_forward_bf16(vf_cuda_ctx *ctx, float *out, const float *qkv, int B, int T, int C, int NH,
                                   float scale, int causal, vf_error *err);
/* Attention backward (dq, dk, dv += ...), causal or not, probabilities
 * recomputed; scratch holds vf_cuda_attention_backward_scratch(B,T,NH) floats. */
size_t vf_cuda_attention_backward_scratch(int B, int T, int NH);
int vf_cuda_attention_backward(vf_cuda_ctx *ctx, float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *q, const float *k, const float *v, int B, int T, int C, int NH, int ld,
                               float scale, int causal, vf_error *err);
/* out (N, OC) = inp (N, IC) @ weight^T + bias (NULL: none), per the context's
 * precision (fp32 or TF32; BF16 contexts use TF32 here). */
int vf_cuda_matmul_forward(vf_cuda_ctx *ctx, float *out, const float *inp, const float *weight, const float *bias, int N,
                           int IC, int OC, vf_error *err);
/* dinp (N, IC) += dout (N, OC) @ weight (OC, IC) */
int vf_cuda_matmul_backward_input(vf_cuda_ctx *ctx, float *dinp, const float *dout, const float *weight, int N, int IC,
                                  int OC, vf_error *err);
/* patches (B, NP, 3*P*P) from pixels (B, 3, H, H), as clip_vit.c's im2col. */
int vf_cuda_patch_im2col(vf_cuda_ctx *ctx, float *patches, const float *pixels, int B, int H, int P, vf_error *err);
/* out = relu?(conv(x) + bias [+ residual]) through cuDNN, NCHW (the CPU op
 * is CNHW: the checker converts).  x (B, cin, H, W), out (B, cout, Ho, Wo). */
int vf_cuda_conv2d_forward(vf_cuda_ctx *ctx, const vf_conv2d *c_dev, const float *x, int B, int H, int W,
                           const float *residual, int relu, float *out, vf_error *err);
/* NCHW average pooling, kernel = stride = k: x (planes, H, W) -> (planes, H/k, W/k). */
int vf_cuda_avgpool2d_forward(vf_cuda_ctx *ctx, const float *x, int planes, int H, int W, int k, float *out, vf_error *err);

/* ---- whole towers ---------------------------------------------------------- */
/* Image towers: weights uploaded once (bf16 copies in BF16 mode), one device
 * activation arena for max_batch images, pinned staging buffers; encoding
 * never allocates.  encode() takes host pixels (B, 3, S, S), any B, and
 * overlaps the upload of the next slice with the current one's compute;
 * forward_device() runs one slice already on the device (benchmarks). */
typedef struct vf_cuda_vision vf_cuda_vision;
int vf_cuda_vit_create(vf_cuda_vision **m, vf_cuda_ctx *ctx, const vf_vit_weights *w, int max_batch, vf_error *err);
int vf_cuda_resnet_create(vf_cuda_vision **m, vf_cuda_ctx *ctx, const vf_resnet *r, int max_batch, vf_error *err);
int vf_cuda_vision_encode(vf_cuda_vision *m, const float *pixels, int B, float *out, vf_error *err);
int vf_cuda_vision_forward_device(vf_cuda_vision *m, const float *dev_pixels, int B, float *dev_out, vf_error *err);
/* Diagnostics: one forward_device split by kind of op (CUDA events between
 * ops, so slightly slower than a plain forward): ms[k] for the kinds below. */
enum { VF_PROF_EMBED, VF_PROF_LAYERNORM, VF_PROF_MATMUL, VF_PROF_ATTENTION, VF_PROF_ACTIVATION, VF_PROF_CONV, VF_PROF_KINDS };
const char *vf_cuda_prof_kind_name(int kind);
int vf_cuda_vision_profile(vf_cuda_vision *m, const float *dev_pixels, int B, float *dev_out, double ms[VF_PROF_KINDS],
                           vf_error *err);
int vf_cuda_vision_max_batch(const vf_cuda_vision *m);
int vf_cuda_vision_out_dim(const vf_cuda_vision *m);
void vf_cuda_vision_free(vf_cuda_vision *m);

/* Text tower (fp32 storage; fp32 or TF32 matmuls), forward keeping every
 * activation and the input-embedding backward, as cpu/clip_text*.h.  Host
 * buffers in and out; the EOT positions are checked like the C forward. */
typedef struct vf_cuda_text vf_cuda_text;
int vf_cuda_text_create(vf_cuda_text **m, vf_cuda_ctx *ctx, const vf_clip_text_weights *w, int B_max, int T_max,
                        vf_error *err);
int vf_cuda_text_forward(vf_cuda_text *m, const float *emb, const int *eot, int B, int T, float *out, vf_error *err);
int vf_cuda_text_backward(vf_cuda_text *m, const float *dout, float *demb, vf_error *err);
void vf_cuda_text_free(vf_cuda_text *m);

#ifdef __cplusplus
}
#endif

#endif /* VF_HAVE_CUDA */
#endif
