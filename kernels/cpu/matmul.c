/* matmul: Linear forward via cblas_sgemm (see matmul.h).
 *
 * The rows are split across the OpenMP threads, each running a
 * single-threaded sgemm on its slice.  Letting OpenBLAS thread each call
 * instead puts its pthread pool and OpenMP's pool on the same cores, where
 * they spend a fifth of the time spinning and yielding to each other
 * between the many small ops of a transformer layer. */
#include "cpu/matmul.h"
#include "cpu/cpu_dispatch.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

VF_CPU_DISPATCH static void matmul(float *out, const float *resid, const float *inp, const float *weight, const float *bias, int N, int IC,
                   int OC) {
    const int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel
    {
        const int nt = omp_get_num_threads(), id = omp_get_thread_num();
        const int chunk = ((N + nt - 1) / nt + 15) / 16 * 16; /* whole 16-row panels */
        const int r0 = id * chunk, r1 = r0 + chunk < N ? r0 + chunk : N;
        if (r1 > r0) {
            /* Seed the rows with resid + bias and let sgemm accumulate onto them. */
            float beta = resid || bias ? 1.0f : 0.0f;
            for (int n = r0; n < r1; n++) {
                float *o = out + (long)n * OC;
                const float *r = resid ? resid + (long)n * OC : NULL;
                if (r && bias) {
#pragma omp simd
                    for (int i = 0; i < OC; i++) o[i] = r[i] + bias[i];
                } else if (r || bias) {
                    memcpy(o, r ? r : bias, sizeof(float) * (size_t)OC);
                }
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, OC, IC, 1.0f, inp + (long)r0 * IC, IC, weight, IC,
                        beta, out + (long)r0 * OC, OC);
        }
    }
    openblas_set_num_threads(blas_threads);
}

void vf_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int IC, int OC) {
    matmul(out, NULL, inp, weight, bias, N, IC, OC);
}

void vf_matmul_residual_forward(float *out, const float *resid, const float *inp, const float *weight, const float *bias,
                                int N, int IC, int OC) {
    matmul(out, resid, inp, weight, bias, N, IC, OC);
}
