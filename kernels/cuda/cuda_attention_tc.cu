// cuda_attention_tc: the image towers' attention on the tensor cores — a
// flash-attention-style bf16 kernel (WMMA 16x16x16, fp32 accumulation,
// online softmax), for head size 64 without a causal mask: every CLIP ViT.
// The warp-per-query kernel in cuda_ops.cu stays the reference-shaped path
// for the text tower and the ResNet attention pool.
//
// Block: 4 warps, 64 queries (16 per warp) of one (batch, head).  Per tile of
// 64 keys staged in shared memory:
//   S (16 x 64)  = Q_w K^T                     tensor cores -> fp32 in smem
//   online softmax over the tile, two lanes per query row; P (bf16) to smem,
//   the running output O (fp32, smem) rescaled by exp(m_old - m_new)
//   O (16 x 64) += P V                         tensor cores
// O lives in shared memory between tiles because WMMA accumulator fragments
// have no portable per-row layout to rescale in registers.
#include "cuda/cuda_internal.cuh"

#include <mma.h>

using namespace nvcuda;

#define TC_HS 64
#define TC_QB 64                 // queries per block
#define TC_KB 64                 // keys per tile
#define TC_LDH (TC_HS + 8)       // bf16 row stride of Q/K/V/P tiles (16-byte multiple, skews banks)
#define TC_LDF (TC_KB + 4)       // fp32 row stride of S and O tiles
static_assert(TC_HS == TC_KB, "S and O tiles share a row stride");

static constexpr size_t tc_smem_bytes() {
    return 3 * (size_t)TC_QB * TC_LDH * sizeof(bf16)      // Q, K, V
           + 4 * (size_t)16 * TC_LDF * sizeof(float)      // S per warp
           + 4 * (size_t)16 * TC_LDH * sizeof(bf16)       // P per warp
           + 4 * (size_t)16 * TC_LDF * sizeof(float);     // O per warp
}

// rows [r0, r0+64) of a (T, ld) bf16 matrix at column offset col into a tile; rows >= T are zero
__device__ __forceinline__ void load_tile(bf16 *tile, const bf16 *src, int ld, int r0, int T) {
    for (int i = threadIdx.x; i < TC_QB * (TC_HS / 8); i += blockDim.x) {
        const int r = i / (TC_HS / 8), c = (i % (TC_HS / 8)) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (r0 + r < T) val = *(const uint4 *)(src + (size_t)(r0 + r) * ld + c);
        *(uint4 *)(tile + r * TC_LDH + c) = val;
    }
}

__global__ void __launch_bounds__(128) attention_tc_k(bf16 *out, int ldo, const bf16 *q, int ldq, const bf16 *k,
                                                      const bf16 *v, int ldk, int Tq, int Tk, float scale) {
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *Ks = Qs + TC_QB * TC_LDH, *Vs = Ks + TC_KB * TC_LDH;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *Ss = (float *)(Vs + TC_KB * TC_LDH) + warp * 16 * TC_LDF;
    bf16 *Ps = (bf16 *)((float *)(Vs + TC_KB * TC_LDH) + 4 * 16 * TC_LDF) + warp * 16 * TC_LDH;
    float *Os = (float *)((bf16 *)((float *)(Vs + TC_KB * TC_LDH) + 4 * 16 * TC_LDF) + 4 * 16 * TC_LDH) + warp * 16 * TC_LDF;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * TC_QB;
    const bf16 *qb = q + (size_t)b * Tq * ldq + h * TC_HS;
    const bf16 *kb = k + (size_t)b * Tk * ldk + h * TC_HS, *vb = v + (size_t)b * Tk * ldk + h * TC_HS;
    load_tile(Qs, qb, ldq, q0, Tq);
    // lane owns row r = lane / 2 of the warp's 16, columns [half * 32, half * 32 + 32)
    const int r = lane / 2, half = lane % 2;
    for (int c = 0; c < 32; c++) Os[r * TC_LDF + half * 32 + c] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < Tk; k0 += TC_KB) {
        __syncthreads();  // previous tile's K/V fully consumed
        load_tile(Ks, kb, ldk, k0, Tk);
        load_tile(Vs, vb, ldk, k0, Tk);
        __syncthreads();
        // S = Q_w K^T
        for (int j = 0; j < TC_KB / 16; j++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < TC_HS / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> bt;  // K^T: element (d, key) = Ks[key][d]
                wmma::load_matrix_sync(a, Qs + warp * 16 * TC_LDH + kk * 16, TC_LDH);
                wmma::load_matrix_sync(bt, Ks + j * 16 * TC_LDH + kk * 16, TC_LDH);
                wmma::mma_sync(acc, a, bt, acc);
            }
            wmma::store_matrix_sync(Ss + j * 16, acc, TC_LDF, wmma::mem_row_major);
        }
        __syncwarp();
        // online softmax on the warp's rows
        const int valid = min(TC_KB, Tk - k0);
        float *srow = Ss + r * TC_LDF + half * 32;
        float tmax = -INFINITY;
        for (int c = 0; c < 32; c++) {
            float s = half * 32 + c < valid ? srow[c] * scale : -INFINITY;
            srow[c] = s;
            tmax = fmaxf(tmax, s);
        }
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        const float mnew = fmaxf(m, tmax), corr = __expf(m - mnew);
        float sum = 0.0f;
        bf16 *prow = Ps + r * TC_LDH + half * 32;
        float *orow = Os + r * TC_LDF + half * 32;
        for (int c = 0; c < 32; c++) {
            float p = srow[c] == -INFINITY ? 0.0f : __expf(srow[c] - mnew);
            bf16 pb = __float2bfloat16(p);
            prow[c] = pb;
            sum += __bfloat162float(pb);  // normalise by what the tensor cores actually sum
            orow[c] *= corr;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * corr + sum;
        m = mnew;
        __syncwarp();
        // O += P V
        for (int j = 0; j < TC_HS / 16; j++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, Os + j * 16, TC_LDF, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < TC_KB / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> bv;
                wmma::load_matrix_sync(a, Ps + kk * 16, TC_LDH);
                wmma::load_matrix_sync(bv, Vs + kk * 16 * TC_LDH + j * 16, TC_LDH);
                wmma::mma_sync(acc, a, bv, acc);
            }
            wmma::store_matrix_sync(Os + j * 16, acc, TC_LDF, wmma::mem_row_major);
        }
        __syncwarp();
    }
    const int t = q0 + warp * 16 + r;
    if (t >= Tq) return;
    bf16 *o = out + ((size_t)b * Tq + t) * ldo + h * TC_HS + half * 32;
    const float inv = 1.0f / l;
    for (int c = 0; c < 32; c++) o[c] = __float2bfloat16(Os[r * TC_LDF + half * 32 + c] * inv);
}

bool vf_cu_attention_tc_fits(int hs, int causal, int ldq, int ldk, int ldo) {
    // 16-byte row loads need every row start 8-element aligned
    return hs == TC_HS && !causal && ldq % 8 == 0 && ldk % 8 == 0 && ldo % 8 == 0;
}

int vf_cu_attention_tc(vf_cuda_ctx *ctx, bf16 *out, int ldo, const bf16 *q, int ldq, const bf16 *k, const bf16 *v, int ldk,
                       int B, int Tq, int Tk, int NH, float scale, vf_error *err) {
    static int attr_set;  // per process; the attribute is per function and device-independent here
    if (!attr_set) {
        CU(cudaFuncSetAttribute(attention_tc_k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)tc_smem_bytes()));
        attr_set = 1;
    }
    if (((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)out) % 16)
        return vf_fail(err, "tensor-core attention: q/k/v/out must be 16-byte aligned");
    dim3 grid((Tq + TC_QB - 1) / TC_QB, NH, B);
    attention_tc_k<<<grid, 128, tc_smem_bytes(), ctx->stream>>>(out, ldo, q, ldq, k, v, ldk, Tq, Tk, scale);
    CU_LAUNCHED();
    return 0;
}

// Test hook (cuda_backend.h): fp32 in and out, bf16 inside.  Allocates.
extern "C" int vf_cuda_attention_forward_bf16(vf_cuda_ctx *ctx, float *out, const float *qkv, int B, int T, int C, int NH,
                                              float scale, int causal, vf_error *err) {
    const size_t n3 = (size_t)B * T * 3 * C, n = (size_t)B * T * C;
    bf16 *in16 = NULL, *out16 = NULL;
    int rc = -1;
    if (cudaMalloc((void **)&in16, n3 * sizeof(bf16)) != cudaSuccess || cudaMalloc((void **)&out16, n * sizeof(bf16)) != cudaSuccess) {
        vf_fail(err, "bf16 attention test buffers: %s", cudaGetErrorString(cudaGetLastError()));
    } else if (vf_cu_f32_to_bf16(ctx, in16, qkv, (long)n3, err) == 0 &&
               vf_cu_attention<bf16>(ctx, out16, C, in16, 3 * C, in16 + C, in16 + 2 * C, 3 * C, B, T, T, NH, C / NH, scale,
                                     causal, err) == 0 &&
               vf_cu_bf16_to_f32(ctx, out, out16, (long)n, err) == 0) {
        rc = cudaStreamSynchronize(ctx->stream) == cudaSuccess ? 0 : vf_fail(err, "bf16 attention: %s",
                                                                             cudaGetErrorString(cudaGetLastError()));
    }
    cudaFree(in16);
    cudaFree(out16);
    return rc;
}
