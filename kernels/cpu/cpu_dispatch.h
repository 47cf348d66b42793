/* cpu_dispatch: run-time choice of the vector width for the hot loops that
 * this code vectorises itself (`#pragma omp simd` loops; the matrix products
 * are OpenBLAS's, which chooses its own kernels at run time).
 *
 * The default build is portable (x86-64-v2, Makefile OPT).  A function marked
 * VF_CPU_DISPATCH is compiled three times, for x86-64-v4 (AVX-512), x86-64-v3
 * (AVX2 + FMA) and the build's baseline, and the dynamic loader picks one
 * when the program starts (GCC target_clones, an ifunc resolved from cpuid).
 * OpenMP regions inside such a function are cloned with it.  The clones
 * compute the same operations in the same order; like any change of target
 * they may contract a*b+c into an FMA (as -march=native does).
 *
 * Off (plain functions) when the build already targets AVX2 or better
 * (`make NATIVE=1`), with clang (the fuzzers), under the sanitizers, and off
 * x86-64. */
#ifndef VF_CPU_DISPATCH_H
#define VF_CPU_DISPATCH_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__) && !defined(VF_NO_CPU_DISPATCH)
#define VF_CPU_DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VF_CPU_DISPATCH
#endif

#endif
