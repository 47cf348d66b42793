/* avx512_math: e^x on 16 floats for the AVX-512 kernels that run only where
 * AMX-BF16 is (matmul_amx.c's GELU, attention_amx.c's softmax): 2^n by
 * vscalefps times a degree-6 polynomial of the fraction, relative error
 * below 1e-7 over the clamp [-87, 88] (NaN comes out as a clamp bound; the
 * callers' inputs are finite).  cpu/fastmath.h's vf_expf is the portable one. */
#ifndef VF_CPU_AVX512_MATH_H
#define VF_CPU_AVX512_MATH_H

#include "cpu/amx_tiles.h"

#ifdef VF_AMX_BUILD
#include <immintrin.h>

VF_AMX_TARGET static inline __m512 vf_exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(1.5403530e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

#endif
