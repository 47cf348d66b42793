// cuda_ops: the hand-written CUDA kernels of the CLIP towers — layer norm
// (forward, backward), activations (forward, backward), residual add,
// softmax, fused attention (forward; backward for the text tower), ViT patch
// im2col and embeddings, row gather/scatter, attention-pool tokens, average
// pooling — and the fp32 op entry points of cuda_backend.h.
//
// Arithmetic is fp32 everywhere; storage is fp32 or bf16 (vf_ld / vf_st).
// Each kernel mirrors its kernels/cpu namesake, which is the specification.
#include "cuda/cuda_internal.cuh"

#include <math.h>

#define FULL 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

static unsigned blocks_for(long n, int threads) {
    long b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 65535L * 32 ? 65535L * 32 : b);  // grid-stride loops cover the rest
}

// ---- layer norm ------------------------------------------------------------------
// One warp per row; two passes (mean, then centred variance) as the C code.
template <typename TI, typename TO>
__global__ void layernorm_fwd_k(TO *out, int ldo, float *mean, float *rstd, const TI *inp, int ldi, const float *w,
                                const float *b, int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const TI *x = inp + (size_t)row * ldi;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32) s += vf_ld(x + i);
    const float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float d = vf_ld(x + i) - m;
        v += d * d;
    }
    const float r = 1.0f / sqrtf(warp_sum(v) / C + eps);
    TO *y = out + (size_t)row * ldo;
    for (int i = lane; i < C; i += 32) vf_st(y + i, (vf_ld(x + i) - m) * r * w[i] + b[i]);
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = r;
    }
}

template <typename TI, typename TO>
int vf_cu_layernorm(vf_cuda_ctx *ctx, TO *out, int ld_out, float *mean, float *rstd, const TI *inp, int ld_in,
                    const float *w, const float *b, int N, int C, float eps, vf_error *err) {
    layernorm_fwd_k<TI, TO><<<(N + 7) / 8, 256, 0, ctx->stream>>>(out, ld_out, mean, rstd, inp, ld_in, w, b, N, C, eps);
    CU_LAUNCHED();
    return 0;
}
template int vf_cu_layernorm<float, float>(vf_cuda_ctx *, float *, int, float *, float *, const float *, int, const float *,
                                           const float *, int, int, float, vf_error *);
template int vf_cu_layernorm<float, bf16>(vf_cuda_ctx *, bf16 *, int, float *, float *, const float *, int, const float *,
                                          const float *, int, int, float, vf_error *);

// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * weight
__global__ void layernorm_bwd_k(float *dinp, const float *dout, const float *inp, const float *w, const float *mean,
                                const float *rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    float *dx = dinp + (size_t)row * C;
    const float mu = mean[row], rs = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float g = dy[i] * w[i];
        sg += g;
        sgx += g * (x[i] - mu) * rs;
    }
    const float mg = warp_sum(sg) / C, mgx = warp_sum(sgx) / C;
    for (int i = lane; i < C; i += 32) {
        float xhat = (x[i] - mu) * rs;
        dx[i] += rs * (dy[i] * w[i] - mg - xhat * mgx);
    }
}

extern "C" int vf_cuda_layernorm_forward(vf_cuda_ctx *ctx, float *out, float *mean, float *rstd, const float *inp,
                                         const float *weight, const float *bias, int N, int C, float eps, vf_error *err) {
    return vf_cu_layernorm<float, float>(ctx, out, C, mean, rstd, inp, C, weight, bias, N, C, eps, err);
}

extern "C" int vf_cuda_layernorm_backward(vf_cuda_ctx *ctx, float *dinp, const float *dout, const float *inp,
                                          const float *weight, const float *mean, const float *rstd, int N, int C,
                                          vf_error *err) {
    layernorm_bwd_k<<<(N + 7) / 8, 256, 0, ctx->stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    CU_LAUNCHED();
    return 0;
}

// ---- activations, residual ---------------------------------------------------------
__device__ __forceinline__ float act_f(int act, float x) {
    switch (act) {
    case VF_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case VF_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    default: {
        const float s = 0.79788456080286536f;
        return 0.5f * x * (1.0f + tanhf(s * (x + 0.044715f * x * x * x)));
    }
    }
}

__device__ __forceinline__ float act_grad(int act, float x) {
    switch (act) {
    case VF_ACT_QUICK_GELU: {
        float s = 1.0f / (1.0f + expf(-1.702f * x));
        return s + x * 1.702f * s * (1.0f - s);
    }
    case VF_ACT_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        return cdf + x * 0.39894228040143268f * expf(-0.5f * x * x);
    }
    default: {
        const float k = 0.79788456080286536f;
        float th = tanhf(k * (x + 0.044715f * x * x * x));
        return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * k * (1.0f + 3.0f * 0.044715f * x * x);
    }
    }
}

template <typename T> __global__ void act_fwd_k(int act, T *out, const T *inp, long N) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < N; i += (long)gridDim.x * blockDim.x)
        vf_st(out + i, act_f(act, vf_ld(inp + i)));
}

__global__ void act_bwd_k(int act, float *dinp, const float *inp, const float *dout, long N) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < N; i += (long)gridDim.x * blockDim.x)
        dinp[i] += dout[i] * act_grad(act, inp[i]);
}

__global__ void residual_k(float *out, const float *a, const float *b, long N) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < N; i += (long)gridDim.x * blockDim.x) out[i] = a[i] + b[i];
}

template <typename T>
int vf_cu_activation(vf_cuda_ctx *ctx, vf_activation act, T *out, const T *inp, long N, vf_error *err) {
    act_fwd_k<T><<<blocks_for(N, 256), 256, 0, ctx->stream>>>((int)act, out, inp, N);
    CU_LAUNCHED();
    return 0;
}
template int vf_cu_activation<float>(vf_cuda_ctx *, vf_activation, float *, const float *, long, vf_error *);
template int vf_cu_activation<bf16>(vf_cuda_ctx *, vf_activation, bf16 *, const bf16 *, long, vf_error *);

extern "C" int vf_cuda_activation_forward(vf_cuda_ctx *ctx, vf_activation act, float *out, const float *inp, long N,
                                          vf_error *err) {
    return vf_cu_activation<float>(ctx, act, out, inp, N, err);
}

extern "C" int vf_cuda_activation_backward(vf_cuda_ctx *ctx, vf_activation act, float *dinp, const float *inp,
                                           const float *dout, long N, vf_error *err) {
    act_bwd_k<<<blocks_for(N, 256), 256, 0, ctx->stream>>>((int)act, dinp, inp, dout, N);
    CU_LAUNCHED();
    return 0;
}

extern "C" int vf_cuda_residual_forward(vf_cuda_ctx *ctx, float *out, const float *a, const float *b, long N,
                                        vf_error *err) {
    residual_k<<<blocks_for(N, 256), 256, 0, ctx->stream>>>(out, a, b, N);
    CU_LAUNCHED();
    return 0;
}

// ---- softmax -------------------------------------------------------------------------
__global__ void softmax_k(float *out, const float *inp, int rows, int cols, float scale, int causal) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *x = inp + (size_t)row * cols;
    float *y = out + (size_t)row * cols;
    const int n = causal ? row % cols + 1 : cols;
    float m = -INFINITY;
    for (int i = lane; i < n; i += 32) m = fmaxf(m, scale * x[i]);
    m = warp_max(m);
    float s = 0.0f;
    for (int i = lane; i < n; i += 32) s += expf(scale * x[i] - m);
    const float inv = 1.0f / warp_sum(s);
    for (int i = lane; i < cols; i += 32) y[i] = i < n ? expf(scale * x[i] - m) * inv : 0.0f;
}

extern "C" int vf_cuda_softmax_forward(vf_cuda_ctx *ctx, float *out, const float *inp, int rows, int cols, float scale,
                                       int causal, vf_error *err) {
    softmax_k<<<(rows + 7) / 8, 256, 0, ctx->stream>>>(out, inp, rows, cols, scale, causal);
    CU_LAUNCHED();
    return 0;
}

// ---- fused attention forward -----------------------------------------------------------
// Grid (query tiles of QW, heads, batch); one warp per query row, online
// softmax over key tiles of KT staged in shared memory.  For the scores a
// lane owns keys (lane, lane+32, ...); for the weighted sum of values it owns
// head dimensions (lane, lane+32, ...).  K rows are padded by one float so
// the per-lane key reads hit distinct banks.
#define ATT_QW 8
template <typename T, int HS, int KT>
__global__ void __launch_bounds__(ATT_QW * 32) attention_fwd_k(T *out, int ldo, const T *q, int ldq, const T *k,
                                                               const T *v, int ldk, int Tq, int Tk, float scale,
                                                               int causal) {
    extern __shared__ float sm[];
    float *Ks = sm;                    // (KT, HS+1)
    float *Vs = Ks + KT * (HS + 1);    // (KT, HS)
    constexpr int KPL = KT / 32, DPL = HS / 32;
    const int b = blockIdx.z, h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int t = blockIdx.x * ATT_QW + warp;
    const bool active = t < Tq;
    float qr[HS];
    const T *qrow = q + ((size_t)b * Tq + (active ? t : 0)) * ldq + h * HS;
#pragma unroll
    for (int d = 0; d < HS; d++) qr[d] = active ? vf_ld(qrow + d) * scale : 0.0f;
    float acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    float mrun = -INFINITY, lrun = 0.0f;
    const int last_q = min(Tq, (int)(blockIdx.x + 1) * ATT_QW) - 1;
    const int kend = causal ? min(Tk, last_q + 1) : Tk;
    for (int k0 = 0; k0 < kend; k0 += KT) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < KT * HS; idx += blockDim.x) {
            int kk = idx / HS, d = idx % HS, s = k0 + kk;
            float kv = 0.0f, vv = 0.0f;
            if (s < Tk) {
                size_t off = ((size_t)b * Tk + s) * ldk + (size_t)h * HS + d;
                kv = vf_ld(k + off);
                vv = vf_ld(v + off);
            }
            Ks[kk * (HS + 1) + d] = kv;
            Vs[kk * HS + d] = vv;
        }
        __syncthreads();
        if (!active) continue;
        float sc[KPL], cmax = -INFINITY;
#pragma unroll
        for (int j = 0; j < KPL; j++) {
            int kk = lane + 32 * j, s = k0 + kk;
            float dot = -INFINITY;
            if (s < Tk && (!causal || s <= t)) {
                const float *kr = Ks + kk * (HS + 1);
                dot = 0.0f;
#pragma unroll
                for (int d = 0; d < HS; d++) dot += qr[d] * kr[d];
            }
            sc[j] = dot;
            cmax = fmaxf(cmax, dot);
        }
        cmax = warp_max(cmax);
        if (cmax == -INFINITY) continue;  // every key of this tile is masked for this query
        const float mnew = fmaxf(mrun, cmax), corr = expf(mrun - mnew);
        float psum = 0.0f;
#pragma unroll
        for (int j = 0; j < KPL; j++) {
            sc[j] = sc[j] == -INFINITY ? 0.0f : expf(sc[j] - mnew);
            psum += sc[j];
        }
        lrun = lrun * corr + warp_sum(psum);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] *= corr;
#pragma unroll
        for (int j = 0; j < KPL; j++)
            for (int src = 0; src < 32; src++) {
                const float p = __shfl_sync(FULL, sc[j], src);
                const float *vr = Vs + (src + 32 * j) * HS + lane;
#pragma unroll
                for (int i = 0; i < DPL; i++) acc[i] += p * vr[32 * i];
            }
        mrun = mnew;
    }
    if (!active) return;
    T *o = out + ((size_t)b * Tq + t) * ldo + (size_t)h * HS + lane;
#pragma unroll
    for (int i = 0; i < DPL; i++) vf_st(o + 32 * i, acc[i] / lrun);
}

template <typename T, int HS>
static int launch_attention(vf_cuda_ctx *ctx, T *out, int ldo, const T *q, int ldq, const T *k, const T *v, int ldk,
                            int B, int Tq, int Tk, int NH, float scale, int causal, vf_error *err) {
    constexpr int KT = HS <= 64 ? 64 : 32;
    const size_t smem = sizeof(float) * (KT * (HS + 1) + KT * HS);
    dim3 grid((Tq + ATT_QW - 1) / ATT_QW, NH, B);
    attention_fwd_k<T, HS, KT><<<grid, ATT_QW * 32, smem, ctx->stream>>>(out, ldo, q, ldq, k, v, ldk, Tq, Tk, scale, causal);
    CU_LAUNCHED();
    return 0;
}

template <typename T>
int vf_cu_attention(vf_cuda_ctx *ctx, T *out, int ldo, const T *q, int ldq, const T *k, const T *v, int ldk, int B,
                    int Tq, int Tk, int NH, int hs, float scale, int causal, vf_error *err) {
    if (causal && Tq != Tk) return vf_fail(err, "attention: causal needs as many queries as keys (%d vs %d)", Tq, Tk);
    if (NH > 65535 || B > 65535) return vf_fail(err, "attention: %d heads x batch %d exceeds the grid", NH, B);
    if constexpr (sizeof(T) == 2) {
        if (vf_cu_attention_tc_fits(hs, causal, ldq, ldk, ldo))
            return vf_cu_attention_tc(ctx, out, ldo, q, ldq, k, v, ldk, B, Tq, Tk, NH, scale, err);
    }
    switch (hs) {
    case 32: return launch_attention<T, 32>(ctx, out, ldo, q, ldq, k, v, ldk, B, Tq, Tk, NH, scale, causal, err);
    case 64: return launch_attention<T, 64>(ctx, out, ldo, q, ldq, k, v, ldk, B, Tq, Tk, NH, scale, causal, err);
    case 96: return launch_attention<T, 96>(ctx, out, ldo, q, ldq, k, v, ldk, B, Tq, Tk, NH, scale, causal, err);
    case 128: return launch_attention<T, 128>(ctx, out, ldo, q, ldq, k, v, ldk, B, Tq, Tk, NH, scale, causal, err);
    default: return vf_fail(err, "attention: head size %d is not supported on CUDA (32, 64, 96 or 128)", hs);
    }
}
template int vf_cu_attention<float>(vf_cuda_ctx *, float *, int, const float *, int, const float *, const float *, int,
                                    int, int, int, int, int, float, int, vf_error *);
template int vf_cu_attention<bf16>(vf_cuda_ctx *, bf16 *, int, const bf16 *, int, const bf16 *, const bf16 *, int, int,
                                   int, int, int, int, float, int, vf_error *);

extern "C" int vf_cuda_attention_forward(vf_cuda_ctx *ctx, float *out, const float *q, const float *k, const float *v,
                                         int B, int T, int C, int NH, int ld, float scale, int causal, vf_error *err) {
    if (NH < 1 || C % NH) return vf_fail(err, "attention: %d heads do not divide width %d", NH, C);
    return vf_cu_attention<float>(ctx, out, C, q, ld, k, v, ld, B, T, T, NH, C / NH, scale, causal, err);
}

// ---- attention backward (fp32, text tower sizes) -----------------------------------------
// Three passes per (b, h): (1) a warp per query row recomputes the softmax
// row P[t,:] and dS[t,s] = P[t,s] (dP[t,s] - sum_s' P dP) scale, dP = dout.v;
// (2) dq[t] += dS[t,:] k; (3) dk[s] += dS[:,s]^T q, dv[s] += P[:,s]^T dout.
// Each warp writes only its own row, so nothing races.
__global__ void attention_bwd_rows_k(float *P, float *dS, const float *dout, const float *q, const float *k,
                                     const float *v, int B, int T, int C, int NH, int ld, float scale, int causal) {
    const int hs = C / NH;
    long row = blockIdx.x * (long)(blockDim.x / 32) + threadIdx.x / 32;  // (b, h, t)
    const int lane = threadIdx.x % 32;
    if (row >= (long)B * NH * T) return;
    const int t = row % T, h = (row / T) % NH, b = row / ((long)T * NH);
    const float *qt = q + ((size_t)b * T + t) * ld + h * hs, *dot_ = dout + ((size_t)b * T + t) * C + h * hs;
    float *p = P + row * T, *ds = dS + row * T;
    const int n = causal ? t + 1 : T;
    float m = -INFINITY;
    for (int s = lane; s < n; s += 32) {
        const float *ks = k + ((size_t)b * T + s) * ld + h * hs;
        float d = 0.0f;
        for (int i = 0; i < hs; i++) d += qt[i] * ks[i];
        p[s] = d * scale;
        m = fmaxf(m, p[s]);
    }
    m = warp_max(m);
    float sum = 0.0f;
    for (int s = lane; s < n; s += 32) sum += (p[s] = expf(p[s] - m));
    const float inv = 1.0f / warp_sum(sum);
    float rowdot = 0.0f;
    for (int s = lane; s < T; s += 32) {
        if (s >= n) {
            p[s] = 0.0f;
            ds[s] = 0.0f;
            continue;
        }
        p[s] *= inv;
        const float *vs = v + ((size_t)b * T + s) * ld + h * hs;
        float d = 0.0f;
        for (int i = 0; i < hs; i++) d += dot_[i] * vs[i];
        ds[s] = d;
        rowdot += p[s] * d;
    }
    rowdot = warp_sum(rowdot);
    for (int s = lane; s < n; s += 32) ds[s] = p[s] * (ds[s] - rowdot) * scale;
}

__global__ void attention_bwd_dq_k(float *dq, const float *dS, const float *k, int B, int T, int C, int NH, int ld) {
    const int hs = C / NH;
    long row = blockIdx.x * (long)(blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= (long)B * NH * T) return;
    const int t = row % T, h = (row / T) % NH, b = row / ((long)T * NH);
    const float *ds = dS + row * T;
    float *dqt = dq + ((size_t)b * T + t) * ld + h * hs;
    for (int i = lane; i < hs; i += 32) {
        float a = 0.0f;
        for (int s = 0; s < T; s++) a += ds[s] * k[((size_t)b * T + s) * ld + h * hs + i];
        dqt[i] += a;
    }
}

__global__ void attention_bwd_dkv_k(float *dk, float *dv, const float *P, const float *dS, const float *q,
                                    const float *dout, int B, int T, int C, int NH, int ld) {
    const int hs = C / NH;
    long row = blockIdx.x * (long)(blockDim.x / 32) + threadIdx.x / 32;  // (b, h, s)
    const int lane = threadIdx.x % 32;
    if (row >= (long)B * NH * T) return;
    const int s = row % T, h = (row / T) % NH, b = row / ((long)T * NH);
    const float *Pbh = P + (row - s) * T, *dSbh = dS + (row - s) * T;  // (T, T) of this (b, h)
    float *dks = dk + ((size_t)b * T + s) * ld + h * hs, *dvs = dv + ((size_t)b * T + s) * ld + h * hs;
    for (int i = lane; i < hs; i += 32) {
        float ak = 0.0f, av = 0.0f;
        for (int t = 0; t < T; t++) {
            ak += dSbh[(size_t)t * T + s] * q[((size_t)b * T + t) * ld + h * hs + i];
            av += Pbh[(size_t)t * T + s] * dout[((size_t)b * T + t) * C + h * hs + i];
        }
        dks[i] += ak;
        dvs[i] += av;
    }
}

extern "C" size_t vf_cuda_attention_backward_scratch(int B, int T, int NH) { return 2 * (size_t)B * NH * T * T; }

extern "C" int vf_cuda_attention_backward(vf_cuda_ctx *ctx, float *dq, float *dk, float *dv, float *scratch,
                                          const float *dout, const float *q, const float *k, const float *v, int B, int T,
                                          int C, int NH, int ld, float scale, int causal, vf_error *err) {
    if (NH < 1 || C % NH) return vf_fail(err, "attention backward: %d heads do not divide width %d", NH, C);
    const long rows = (long)B * NH * T;
    float *P = scratch, *dS = scratch + (size_t)rows * T;
    const unsigned grid = (unsigned)((rows + 7) / 8);
    attention_bwd_rows_k<<<grid, 256, 0, ctx->stream>>>(P, dS, dout, q, k, v, B, T, C, NH, ld, scale, causal);
    CU_LAUNCHED();
    attention_bwd_dq_k<<<grid, 256, 0, ctx->stream>>>(dq, dS, k, B, T, C, NH, ld);
    CU_LAUNCHED();
    attention_bwd_dkv_k<<<grid, 256, 0, ctx->stream>>>(dk, dv, P, dS, q, dout, B, T, C, NH, ld);
    CU_LAUNCHED();
    return 0;
}

// ---- ViT embeddings ----------------------------------------------------------------------
// patches (B, NP, ld), each row 3*P*P values in the conv weight's (c, ky, kx)
// order, then zeros up to ld (bf16 rows padded to 16 bytes for the tensor cores)
template <typename T> __global__ void im2col_k(T *patches, int ld, const float *pixels, int B, int H, int P) {
    const int G = H / P, NP = G * G, K = 3 * P * P;
    const long n = (long)B * NP * ld;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int col = i % ld, p = (i / ld) % NP, b = i / ((long)ld * NP);
        if (col >= K) {
            vf_st(patches + i, 0.0f);
            continue;
        }
        int c = col / (P * P), ky = (col / P) % P, kx = col % P, py = p / G, px = p % G;
        vf_st(patches + i, pixels[(((size_t)b * 3 + c) * H + py * P + ky) * H + px * P + kx]);
    }
}

template <typename T>
int vf_cu_im2col(vf_cuda_ctx *ctx, T *patches, int ld, const float *pixels, int B, int H, int P, vf_error *err) {
    long n = (long)B * (H / P) * (H / P) * ld;
    im2col_k<T><<<blocks_for(n, 256), 256, 0, ctx->stream>>>(patches, ld, pixels, B, H, P);
    CU_LAUNCHED();
    return 0;
}
template int vf_cu_im2col<float>(vf_cuda_ctx *, float *, int, const float *, int, int, int, vf_error *);
template int vf_cu_im2col<bf16>(vf_cuda_ctx *, bf16 *, int, const float *, int, int, int, vf_error *);

extern "C" int vf_cuda_patch_im2col(vf_cuda_ctx *ctx, float *patches, const float *pixels, int B, int H, int P,
                                    vf_error *err) {
    return vf_cu_im2col<float>(ctx, patches, 3 * P * P, pixels, B, H, P, err);
}

__global__ void vit_embed_k(float *x, const float *pe, const float *cls, const float *pos, int B, int T, int C) {
    const long n = (long)B * T * C;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int c = i % C, t = (i / C) % T, b = i / ((long)C * T);
        float src = t == 0 ? cls[c] : pe[((size_t)b * (T - 1) + t - 1) * C + c];
        x[i] = src + pos[(size_t)t * C + c];
    }
}

int vf_cu_vit_embed(vf_cuda_ctx *ctx, float *x, const float *pe, const float *class_emb, const float *pos, int B, int T,
                    int C, vf_error *err) {
    vit_embed_k<<<blocks_for((long)B * T * C, 256), 256, 0, ctx->stream>>>(x, pe, class_emb, pos, B, T, C);
    CU_LAUNCHED();
    return 0;
}

__global__ void add_pos_k(float *x, const float *emb, const float *pos, int B, int T, int C) {
    const long n = (long)B * T * C;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        x[i] = emb[i] + pos[((i / C) % T) * C + i % C];
}

int vf_cu_add_positions(vf_cuda_ctx *ctx, float *x, const float *emb, const float *pos, int B, int T, int C, vf_error *err) {
    add_pos_k<<<blocks_for((long)B * T * C, 256), 256, 0, ctx->stream>>>(x, emb, pos, B, T, C);
    CU_LAUNCHED();
    return 0;
}

// D (N, OC) rows ldd apart += bias (OC): for cuBLASLt type combinations that have no bias epilogue
template <typename T> __global__ void add_bias_k(T *D, int ldd, const T *bias, int N, int OC) {
    const long n = (long)N * OC;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        T *d = D + (i / OC) * (long)ldd + i % OC;
        vf_st(d, vf_ld(d) + vf_ld(bias + i % OC));
    }
}

int vf_cu_add_bias(vf_cuda_ctx *ctx, void *D, cudaDataType_t dt, int ldd, const void *bias, int N, int OC, vf_error *err) {
    if (dt == CUDA_R_16BF) add_bias_k<bf16><<<blocks_for((long)N * OC, 256), 256, 0, ctx->stream>>>((bf16 *)D, ldd, (const bf16 *)bias, N, OC);
    else add_bias_k<float><<<blocks_for((long)N * OC, 256), 256, 0, ctx->stream>>>((float *)D, ldd, (const float *)bias, N, OC);
    CU_LAUNCHED();
    return 0;
}

// ---- rows, conversions, pooling ---------------------------------------------------------------
__global__ void gather_rows_k(float *rows, const float *x, const int *idx, int B, int T, int C, int scatter) {
    const long n = (long)B * C;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int b = i / C, c = i % C;
        size_t at = ((size_t)b * T + idx[b]) * C + c;
        if (scatter) ((float *)x)[at] = rows[i];
        else rows[i] = x[at];
    }
}

int vf_cu_gather_rows(vf_cuda_ctx *ctx, float *rows, const float *x, const int *idx, int B, int T, int C, vf_error *err) {
    gather_rows_k<<<blocks_for((long)B * C, 256), 256, 0, ctx->stream>>>(rows, x, idx, B, T, C, 0);
    CU_LAUNCHED();
    return 0;
}

int vf_cu_scatter_rows(vf_cuda_ctx *ctx, float *x, const float *rows, const int *idx, int B, int T, int C, vf_error *err) {
    gather_rows_k<<<blocks_for((long)B * C, 256), 256, 0, ctx->stream>>>((float *)rows, x, idx, B, T, C, 1);
    CU_LAUNCHED();
    return 0;
}

__global__ void f32_to_bf16_k(bf16 *out, const float *inp, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(inp[i]);
}

int vf_cu_f32_to_bf16(vf_cuda_ctx *ctx, bf16 *out, const float *inp, long N, vf_error *err) {
    f32_to_bf16_k<<<blocks_for(N, 256), 256, 0, ctx->stream>>>(out, inp, N);
    CU_LAUNCHED();
    return 0;
}

__global__ void bf16_to_f32_k(float *out, const bf16 *inp, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = __bfloat162float(inp[i]);
}

int vf_cu_bf16_to_f32(vf_cuda_ctx *ctx, float *out, const bf16 *inp, long N, vf_error *err) {
    bf16_to_f32_k<<<blocks_for(N, 256), 256, 0, ctx->stream>>>(out, inp, N);
    CU_LAUNCHED();
    return 0;
}

// tokens (B, T, C): [mean over the grid, grid...] + pos, from x (B, C, HW).
// A warp per (b, c): the mean in fp32 like the C code's double sum (HW <= 196).
__global__ void attnpool_tokens_k(float *tokens, const float *x, const float *pos, int B, int C, int HW) {
    long wid = blockIdx.x * (long)(blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32, T = HW + 1;
    if (wid >= (long)B * C) return;
    const int b = wid / C, c = wid % C;
    const float *src = x + ((size_t)b * C + c) * HW;
    float *tok = tokens + (size_t)b * T * C + c;
    float s = 0.0f;
    for (int i = lane; i < HW; i += 32) {
        s += src[i];
        tok[(size_t)(1 + i) * C] = src[i] + pos[(size_t)(1 + i) * C + c];
    }
    s = warp_sum(s);
    if (lane == 0) tok[0] = s / HW + pos[c];
}

int vf_cu_attnpool_tokens(vf_cuda_ctx *ctx, float *tokens, const float *x, const float *pos, int B, int C, int HW,
                          vf_error *err) {
    attnpool_tokens_k<<<(unsigned)(((long)B * C + 7) / 8), 256, 0, ctx->stream>>>(tokens, x, pos, B, C, HW);
    CU_LAUNCHED();
    return 0;
}

// torch.nn.AvgPool2d(k): floor on odd sizes, no padding
__global__ void avgpool_k(const float *x, int planes, int H, int W, int k, float *out) {
    const int Ho = H / k, Wo = W / k;
    const long n = (long)planes * Ho * Wo;
    const float inv = 1.0f / (k * k);
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int ox = i % Wo, oy = (i / Wo) % Ho;
        long p = i / ((long)Wo * Ho);
        const float *src = x + (size_t)p * H * W + (size_t)oy * k * W + (size_t)ox * k;
        float s = 0.0f;
        for (int dy = 0; dy < k; dy++)
            for (int dx = 0; dx < k; dx++) s += src[(size_t)dy * W + dx];
        out[i] = s * inv;
    }
}

extern "C" int vf_cuda_avgpool2d_forward(vf_cuda_ctx *ctx, const float *x, int planes, int H, int W, int k, float *out,
                                         vf_error *err) {
    avgpool_k<<<blocks_for((long)planes * (H / k) * (W / k), 256), 256, 0, ctx->stream>>>(x, planes, H, W, k, out);
    CU_LAUNCHED();
    return 0;
}
