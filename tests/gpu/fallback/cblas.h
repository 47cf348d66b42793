/* cblas.h (fallback): the part of the CBLAS interface kernels/cpu uses, for
 * building tests/gpu/gpu_check on a GPU machine that has no OpenBLAS
 * (tests/gpu/build.sh adds this folder to the include path only then).
 * cblas_fallback.c implements it with a plain blocked OpenMP loop: correct,
 * several times slower than OpenBLAS, and only ever used as the C reference. */
#ifndef VF_FALLBACK_CBLAS_H
#define VF_FALLBACK_CBLAS_H

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };
typedef enum CBLAS_ORDER CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE CBLAS_TRANSPOSE;

void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int n);
char *openblas_get_corename(void);

#endif
