/* activation: GELU variants and residual add (see activation.h). */
#include "cpu/activation.h"
#include "cpu/cpu_dispatch.h"
#include "cpu/fastmath.h"

#include <math.h>

VF_CPU_DISPATCH void vf_quick_gelu_forward(float *out, const float *inp, long N) {
    /* Chunks of 4096 so that the inner loop is a plain vectorisable one. */
#pragma omp parallel for schedule(static)
    for (long c = 0; c < N; c += 4096) {
        const int n = N - c < 4096 ? (int)(N - c) : 4096;
        const float *x = inp + c;
        float *y = out + c;
#pragma omp simd
        for (int i = 0; i < n; i++) y[i] = x[i] / (1.0f + vf_expf(-1.702f * x[i]));
    }
}

VF_CPU_DISPATCH void vf_gelu_forward(float *out, const float *inp, long N) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
}

VF_CPU_DISPATCH void vf_gelu_tanh_forward(float *out, const float *inp, long N) {
    const float s = 0.79788456080286536f; /* sqrt(2/pi) */
#pragma omp parallel for schedule(static)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(s * (x + 0.044715f * x * x * x)));
    }
}

void vf_activation_forward(vf_activation act, float *out, const float *inp, long N) {
    switch (act) {
    case VF_ACT_QUICK_GELU: vf_quick_gelu_forward(out, inp, N); break;
    case VF_ACT_GELU: vf_gelu_forward(out, inp, N); break;
    case VF_ACT_GELU_TANH: vf_gelu_tanh_forward(out, inp, N); break;
    }
}

VF_CPU_DISPATCH void vf_residual_forward(float *out, const float *a, const float *b, long N) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < N; i++) out[i] = a[i] + b[i];
}

const char *vf_activation_name(vf_activation act) {
    switch (act) {
    case VF_ACT_QUICK_GELU: return "quick_gelu";
    case VF_ACT_GELU: return "gelu";
    case VF_ACT_GELU_TANH: return "gelu_pytorch_tanh";
    }
    return "?";
}
