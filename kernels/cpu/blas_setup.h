/* blas_setup: makes sure OpenBLAS runs its kernels for this CPU.
 *
 * Debian's OpenBLAS picks its kernels once, when the library loads, from the
 * CPU model; on virtual machines that report a generic model ("Intel Xeon
 * Processor") it falls back to the SSE3 "Prescott" kernels, 2-3x slower than
 * the AVX-512 ones the CPU actually has.  The only switch is the
 * OPENBLAS_CORETYPE environment variable, read at load time, so the fix has
 * to re-execute the program with it set.
 *
 * The same re-execution sets OMP_WAIT_POLICY=passive when it is unset.  Our
 * kernels split work over OpenMP threads and OpenBLAS runs its own pthreads;
 * with libgomp's default spin-waiting, idle OpenMP threads burn the cores
 * OpenBLAS needs (measured on a 2-core machine: one CoOp step 5051 ms spinning
 * vs 605 ms passive).  libgomp reads the variable before main(), hence the
 * re-exec. */
#ifndef VF_CPU_BLAS_SETUP_H
#define VF_CPU_BLAS_SETUP_H

/* When OpenBLAS chose a kernel set older than the CPU supports and
 * OPENBLAS_CORETYPE is unset, sets it (SkylakeX with AVX-512, Haswell with
 * AVX2+FMA); when OMP_WAIT_POLICY is unset, sets it to passive; if either
 * changed, re-executes /proc/self/exe with the same arguments.  Returns
 * (doing nothing) when no change is needed or the re-exec fails.  Call it
 * first thing in main(), before any output or threads. */
void vf_blas_ensure_native_kernels(void);

/* OpenBLAS's kernel set name, e.g. "SkylakeX". */
const char *vf_blas_core_name(void);

#endif
