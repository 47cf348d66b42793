/* cblas_fallback: row-major sgemm for the GPU checker's C reference on a
 * machine without OpenBLAS (see cblas.h beside it).  Transposed operands are
 * first copied untransposed, then C[i, j-block] += A[i, k] * B[k, j-block]
 * over k-blocks, rows and column blocks spread over OpenMP threads. */
#include "cblas.h"

#include <stdlib.h>
#include <string.h>

#define JB 256
#define KB 256

static float *untranspose(const float *X, int ld, int rows, int cols) {
    /* X stored as (cols, rows) with leading dimension ld -> dense (rows, cols) */
    float *out = malloc((size_t)rows * cols * sizeof(float));
    if (!out) return NULL;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) out[(size_t)r * cols + c] = X[(size_t)c * ld + r];
    return out;
}

void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    (void)order; /* kernels/cpu only uses row-major */
    float *At = NULL, *Bt = NULL;
    if (ta == CblasTrans) { At = untranspose(A, lda, M, K); A = At; lda = K; }
    if (tb == CblasTrans) { Bt = untranspose(B, ldb, K, N); B = Bt; ldb = N; }
    if (!A || !B) abort(); /* test-only helper: out of memory */
    const int nj = (N + JB - 1) / JB;
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < M; i++)
        for (int jb = 0; jb < nj; jb++) {
            const int j0 = jb * JB, j1 = j0 + JB < N ? j0 + JB : N;
            float acc[JB];
            memset(acc, 0, sizeof acc);
            for (int k0 = 0; k0 < K; k0 += KB) {
                const int k1 = k0 + KB < K ? k0 + KB : K;
                for (int k = k0; k < k1; k++) {
                    const float a = A[(size_t)i * lda + k];
                    const float *b = B + (size_t)k * ldb;
#pragma omp simd
                    for (int j = j0; j < j1; j++) acc[j - j0] += a * b[j];
                }
            }
            float *c = C + (size_t)i * ldc;
            for (int j = j0; j < j1; j++) c[j] = alpha * acc[j - j0] + (beta == 0.0f ? 0.0f : beta * c[j]);
        }
    free(At);
    free(Bt);
}

int openblas_get_num_threads(void) { return 1; }
void openblas_set_num_threads(int n) { (void)n; }
char *openblas_get_corename(void) { return "fallback"; }
