// cuda_matmul: every matrix product of the CUDA towers, through cuBLASLt
// (bias and residual fused in its epilogue), and the fp32 Linear forward /
// input-gradient ops of cuda_backend.h.
//
// Row-major (N, OC) outputs are column-major (OC, N) matrices, so
//   D (N, OC) = A (N, K) @ W^T   is   D_cm = op(W_cm) * A_cm
// with W_cm the (K, OC) column-major view of the (OC, K) row-major weight,
// transposed (trans_w) or not (the input-gradient product A @ W).
#include "cuda/cuda_internal.cuh"

#include <string.h>

#define LT(call)                                                                                            \
    do {                                                                                                    \
        cublasStatus_t s_ = (call);                                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                  \
            rc = vf_fail(err, "%s:%d: %s: cuBLAS status %d", __FILE__, __LINE__, #call, (int)s_);           \
            goto done;                                                                                      \
        }                                                                                                   \
    } while (0)

// Largest power of two (<= 256) dividing the address: cuBLASLt's heuristic
// otherwise assumes 256-byte alignment and may pick kernels that need it.
static uint32_t alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a % al)) al >>= 1;
    return al;
}

int vf_cuda_gemm(vf_cuda_ctx *ctx, const vf_gemm *g, vf_error *err) {
    const vf_lt_api *lt = ctx->lt;
    const int m = g->OC, n = g->N, k = g->K;
    const void *Cp = g->Cin ? g->Cin : g->D;
    const float alpha = 1.0f, beta = g->Cin ? g->beta : 0.0f;
    cublasComputeType_t compute = g->at == CUDA_R_32F && ctx->prec == VF_CUDA_FP32 ? CUBLAS_COMPUTE_32F
                                  : g->at == CUDA_R_32F                           ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                                  : CUBLAS_COMPUTE_32F;
    cublasOperation_t ta = g->trans_w ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = g->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    uint32_t al[4] = {alignment(g->W), alignment(g->A), alignment(Cp), alignment(g->D)};
    const uint64_t key[VF_LT_KEY] = {(uint64_t)m, (uint64_t)n, (uint64_t)k, ((uint64_t)g->lda << 32) | (uint64_t)g->ldd,
                                     ((uint64_t)g->at << 48) | ((uint64_t)g->dt << 40) | ((uint64_t)compute << 32) |
                                         ((uint64_t)epi << 12) | ((uint64_t)g->trans_w << 8) |
                                         ((uint64_t)(Cp == g->D) << 1) | (uint64_t)(beta != 0.0f),
                                     ((uint64_t)al[0] << 48) | ((uint64_t)al[1] << 32) | ((uint64_t)al[2] << 16) | al[3]};
    int rc = 0;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t Ad = NULL, Bd = NULL, Cd = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    const cublasLtMatmulAlgo_t *algo = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    LT(lt->cublasLtMatmulDescCreate(&op, compute, CUDA_R_32F));
    LT(lt->cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT(lt->cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT(lt->cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (g->bias) LT(lt->cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias));
    if (g->trans_w) LT(lt->cublasLtMatrixLayoutCreate(&Ad, g->at, k, m, k));
    else LT(lt->cublasLtMatrixLayoutCreate(&Ad, g->at, m, k, m));
    LT(lt->cublasLtMatrixLayoutCreate(&Bd, g->at, k, n, g->lda));
    LT(lt->cublasLtMatrixLayoutCreate(&Cd, g->dt, m, n, g->ldd));
    for (int i = 0; i < ctx->lt_cached; i++)
        if (!memcmp(ctx->lt_cache[i].key, key, sizeof key)) algo = &ctx->lt_cache[i].algo;
    if (!algo) {
        int found = 0;
        LT(lt->cublasLtMatmulPreferenceCreate(&pref));
        LT(lt->cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &ctx->lt_workspace_bytes, sizeof ctx->lt_workspace_bytes));
        cublasLtMatmulPreferenceAttributes_t which[4] = {
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
        for (int i = 0; i < 4; i++) LT(lt->cublasLtMatmulPreferenceSetAttribute(pref, which[i], &al[i], sizeof al[i]));
        LT(lt->cublasLtMatmulAlgoGetHeuristic(ctx->lt_handle, op, Ad, Bd, Cd, Cd, pref, 1, &heur, &found));
        if (found < 1 && g->bias) {
            // no bias epilogue for this type combination: plain product, then the bias on its own
            vf_gemm plain = *g;
            plain.bias = NULL;
            rc = vf_cuda_gemm(ctx, &plain, err);
            if (rc == 0) rc = vf_cu_add_bias(ctx, g->D, g->dt, g->ldd, g->bias, g->N, g->OC, err);
            goto done;
        }
        if (found < 1) {
            rc = vf_fail(err, "cuBLASLt has no algorithm for (%d x %d) = (%d x %d) @ (%d x %d)^%s, types %d->%d", n, m, n, k,
                         m, k, g->trans_w ? "T" : "1", (int)g->at, (int)g->dt);
            goto done;
        }
        algo = &heur.algo;
        if (ctx->lt_cached < VF_LT_CACHE) {
            memcpy(ctx->lt_cache[ctx->lt_cached].key, key, sizeof key);
            ctx->lt_cache[ctx->lt_cached++].algo = heur.algo;
        }
    }
    LT(lt->cublasLtMatmul(ctx->lt_handle, op, &alpha, g->W, Ad, g->A, Bd, &beta, Cp, Cd, g->D, Cd, algo,
                          ctx->lt_workspace, ctx->lt_workspace_bytes, ctx->stream));
done:
    if (pref) lt->cublasLtMatmulPreferenceDestroy(pref);
    if (Cd) lt->cublasLtMatrixLayoutDestroy(Cd);
    if (Bd) lt->cublasLtMatrixLayoutDestroy(Bd);
    if (Ad) lt->cublasLtMatrixLayoutDestroy(Ad);
    if (op) lt->cublasLtMatmulDescDestroy(op);
    return rc;
}

extern "C" int vf_cuda_matmul_forward(vf_cuda_ctx *ctx, float *out, const float *inp, const float *weight, const float *bias,
                                      int N, int IC, int OC, vf_error *err) {
    vf_gemm g = {inp, weight, bias, NULL, out, CUDA_R_32F, CUDA_R_32F, N, IC, OC, IC, OC, 1, 0.0f};
    return vf_cuda_gemm(ctx, &g, err);
}

extern "C" int vf_cuda_matmul_backward_input(vf_cuda_ctx *ctx, float *dinp, const float *dout, const float *weight, int N,
                                             int IC, int OC, vf_error *err) {
    // dinp (N, IC) += dout (N, OC) @ weight (OC, IC): "W" is weight read as (K = OC, IC) row-major
    vf_gemm g = {dout, weight, NULL, dinp, dinp, CUDA_R_32F, CUDA_R_32F, N, OC, IC, OC, IC, 0, 1.0f};
    return vf_cuda_gemm(ctx, &g, err);
}
