/* matmul: Linear forward via cblas_sgemm (see matmul.h). */
#include "cpu/matmul.h"

#include <cblas.h>
#include <string.h>

void vf_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int IC, int OC) {
    float beta = 0.0f;
    if (bias) {
        /* Seed every row with the bias and let sgemm accumulate onto it. */
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (long)n * OC, bias, sizeof(float) * (size_t)OC);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC, beta, out, OC);
}
