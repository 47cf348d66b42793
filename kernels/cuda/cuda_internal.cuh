// cuda_internal: what the kernels/cuda/*.cu files share — the context, error
// macros, the dlopen'ed cuBLASLt / cuDNN entry points, bf16/fp32 load-store
// helpers and the internal (typed, fusing) op entry points the towers use.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <library_types.h>
#include <cublasLt.h>
#include <stdint.h>

#ifndef VF_HAVE_CUDA  // the Makefile passes it to cc, not to nvcc
#define VF_HAVE_CUDA 1
#endif
extern "C" {
#include "cuda/cuda_backend.h"
}

typedef __nv_bfloat16 bf16;

// ---- errors ------------------------------------------------------------------
#define CU(call)                                                                                            \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) return vf_fail(err, "%s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
    } while (0)
// After a kernel launch: launch-configuration errors surface here.
#define CU_LAUNCHED() CU(cudaGetLastError())
#define TRY(...)                                                                                            \
    do {                                                                                                    \
        if ((__VA_ARGS__) != 0) return -1;                                                                  \
    } while (0)

// ---- dlopen'ed libraries -----------------------------------------------------
// Function pointers with the exact types of the headers' declarations.
#define VF_LT_FUNCS(X)                                                                                      \
    X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtMatmulDescCreate) X(cublasLtMatmulDescDestroy)           \
    X(cublasLtMatmulDescSetAttribute) X(cublasLtMatrixLayoutCreate) X(cublasLtMatrixLayoutDestroy)          \
    X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceDestroy)                                    \
    X(cublasLtMatmulPreferenceSetAttribute) X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmul)
#define VF_DECLARE_PTR(f) decltype(&::f) f;
struct vf_lt_api { VF_LT_FUNCS(VF_DECLARE_PTR) };
// Open once per process; NULL (and err filled) when the library is missing.
const vf_lt_api *vf_cuda_lt_api(vf_error *err);
// dlopen of the first of names that loads (RTLD_NOW | RTLD_GLOBAL); NULL if none.
void *vf_cuda_dlopen_first(const char *const *names);

// ---- context -----------------------------------------------------------------
#define VF_LT_CACHE 96
#define VF_LT_KEY 6  // m, n, k, lda|ldd, types|flags, alignments
struct vf_lt_algo_entry {
    uint64_t key[VF_LT_KEY];
    cublasLtMatmulAlgo_t algo;
};
struct vf_cuda_ctx {
    int device;
    vf_cuda_precision prec;
    cudaStream_t stream, copy_stream;
    int sm_count;
    const vf_lt_api *lt;
    cublasLtHandle_t lt_handle;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    vf_lt_algo_entry lt_cache[VF_LT_CACHE];
    int lt_cached;
    // cuDNN state, owned by cuda_resnet.cu (the only user, and the only file that
    // needs cudnn.h): NULL until a ResNet needs it.
    void *dnn;
    void (*dnn_free)(void *dnn);
};

// ---- device arena: one cudaMalloc, carved 256-byte aligned ---------------------
struct vf_dev_arena {
    char *base;
    size_t size, used;
};
static inline size_t vf_dev_round(size_t b) { return (b + 255) & ~(size_t)255; }
int vf_dev_arena_init(vf_dev_arena *a, size_t bytes, vf_error *err);
void *vf_dev_arena_take(vf_dev_arena *a, size_t bytes);
void vf_dev_arena_free(vf_dev_arena *a);

// ---- typed load/store: fp32 arithmetic on fp32 or bf16 storage ---------------
__device__ __forceinline__ float vf_ld(const float *p) { return *p; }
__device__ __forceinline__ float vf_ld(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void vf_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void vf_st(bf16 *p, float v) { *p = __float2bfloat16(v); }
template <typename T> struct vf_cuda_type;
template <> struct vf_cuda_type<float> { static constexpr cudaDataType_t id = CUDA_R_32F; };
template <> struct vf_cuda_type<bf16> { static constexpr cudaDataType_t id = CUDA_R_16BF; };

// ---- matmul (cuda_matmul.cu) ---------------------------------------------------
// Row-major D (N, OC) [ld ldd] = A (N, K) [ld lda] @ W^T (W (OC, K) [ld K]) + bias (OC) + beta * Cin
// (Cin same shape and type as D, may equal D; NULL with beta 0).  types: A and
// W share at, D/Cin/bias share dt.  trans_w = 0 instead computes A @ W with
// W (K, OC) row-major — the input-gradient product.  compute: the context's
// precision decides fp32 / TF32; bf16 inputs always accumulate in fp32.
struct vf_gemm {
    const void *A, *W, *bias, *Cin;
    void *D;
    cudaDataType_t at, dt;
    int N, K, OC, lda, ldd, trans_w;
    float beta;
};
int vf_cuda_gemm(vf_cuda_ctx *ctx, const vf_gemm *g, vf_error *err);
// D (N, OC) rows ldd apart += bias (OC) of D's type (the fallback when cuBLASLt has no bias epilogue).
int vf_cu_add_bias(vf_cuda_ctx *ctx, void *D, cudaDataType_t dt, int ldd, const void *bias, int N, int OC, vf_error *err);

// ---- typed ops (cuda_ops.cu), used by the towers --------------------------------
// LayerNorm rows of inp (row stride ld_in) -> out (row stride ld_out).
template <typename TI, typename TO>
int vf_cu_layernorm(vf_cuda_ctx *ctx, TO *out, int ld_out, float *mean, float *rstd, const TI *inp, int ld_in,
                    const float *w, const float *b, int N, int C, float eps, vf_error *err);
// In place act(x) over N elements.
template <typename T> int vf_cu_activation(vf_cuda_ctx *ctx, vf_activation act, T *out, const T *inp, long N, vf_error *err);
// Fused attention: q/k/v rows ldq/ldk apart (k and v share ldk), out rows ldo
// apart; Tq queries attend to Tk keys (Tq == Tk when causal).
template <typename T>
int vf_cu_attention(vf_cuda_ctx *ctx, T *out, int ldo, const T *q, int ldq, const T *k, const T *v, int ldk, int B,
                    int Tq, int Tk, int NH, int hs, float scale, int causal, vf_error *err);
// patches (B, NP, ld): 3*P*P values per row, zero-padded up to ld
template <typename T>
int vf_cu_im2col(vf_cuda_ctx *ctx, T *patches, int ld, const float *pixels, int B, int H, int P, vf_error *err);
// x (B, T, C) = [class_emb, pe (B, T-1, C)] + pos (T, C)
int vf_cu_vit_embed(vf_cuda_ctx *ctx, float *x, const float *pe, const float *class_emb, const float *pos, int B, int T,
                    int C, vf_error *err);
// x (B, T, C) = emb + pos[0:T]
int vf_cu_add_positions(vf_cuda_ctx *ctx, float *x, const float *emb, const float *pos, int B, int T, int C, vf_error *err);
// rows (B, C) <-> x (B, T, C) at idx (B, device)
int vf_cu_gather_rows(vf_cuda_ctx *ctx, float *rows, const float *x, const int *idx, int B, int T, int C, vf_error *err);
int vf_cu_scatter_rows(vf_cuda_ctx *ctx, float *x, const float *rows, const int *idx, int B, int T, int C, vf_error *err);
int vf_cu_f32_to_bf16(vf_cuda_ctx *ctx, bf16 *out, const float *inp, long N, vf_error *err);
int vf_cu_bf16_to_f32(vf_cuda_ctx *ctx, float *out, const bf16 *inp, long N, vf_error *err);
// Tensor-core attention (cuda_attention_tc.cu): bf16, head size 64, no mask;
// vf_cu_attention<bf16> uses it whenever it fits.
bool vf_cu_attention_tc_fits(int hs, int causal, int ldq, int ldk, int ldo);
int vf_cu_attention_tc(vf_cuda_ctx *ctx, bf16 *out, int ldo, const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldk,
                       int B, int Tq, int Tk, int NH, float scale, vf_error *err);
// ResNet attention pool front: tokens (B, T, C), T = HW + 1, from x (B, C, HW):
// token 0 is the spatial mean; + pos (T, C).
int vf_cu_attnpool_tokens(vf_cuda_ctx *ctx, float *tokens, const float *x, const float *pos, int B, int C, int HW,
                          vf_error *err);

// ---- image towers (cuda_vision.cu: the shared encode pipeline) -------------------
// A tower fills forward/destroy/impl, the parameter and activation arenas;
// vf_cuda_vision_init_staging adds the pinned/device double buffers encode uses.
struct vf_cuda_vision {
    vf_cuda_ctx *ctx;
    int max_batch, image_size, out_dim;
    int (*forward)(vf_cuda_vision *m, const float *dev_pixels, int B, float *dev_out, vf_error *err);
    void (*destroy)(vf_cuda_vision *m);
    void *impl;
    vf_dev_arena params, acts;
    float *d_pixels[2], *d_out[2];  // in the acts arena
    float *h_pixels[2], *h_out[2];  // pinned host memory
    cudaEvent_t uploaded[2], done[2];
    struct vf_cuda_prof *prof;      // set only during vf_cuda_vision_profile
};
// Profiling marks: an event after each op, tagged with the op's kind.
#define VF_PROF_MAX 1024
struct vf_cuda_prof {
    cudaEvent_t ev[VF_PROF_MAX];
    int kind[VF_PROF_MAX], n;
};
static inline void vf_prof_mark(vf_cuda_vision *m, int kind) {
    vf_cuda_prof *p = m->prof;
    if (!p || p->n >= VF_PROF_MAX) return;
    cudaEventRecord(p->ev[p->n], m->ctx->stream);
    p->kind[p->n++] = kind;
}
// Carves the device double buffers from m->acts (sized with vf_cuda_vision_staging_bytes)
// and allocates the pinned ones.
size_t vf_cuda_vision_staging_bytes(int max_batch, int image_size, int out_dim);
int vf_cuda_vision_init_staging(vf_cuda_vision *m, vf_error *err);

// Uploads host fp32 n floats to dst as T (bf16 through a device staging buffer
// of at least n floats).
template <typename T> int vf_cu_put(vf_cuda_ctx *ctx, T *dst, const float *host, size_t n, float *staging, vf_error *err);

// Two-pass arena carving: count (arena NULL) then take, same calls.
struct vf_carver {
    vf_dev_arena *arena;  // NULL while counting
    size_t bytes;
    int failed;
    template <typename T> T *take(size_t n) {
        bytes += vf_dev_round(n * sizeof(T));
        if (!arena) return NULL;
        T *p = (T *)vf_dev_arena_take(arena, n * sizeof(T));
        if (!p) failed = 1;
        return p;
    }
};
