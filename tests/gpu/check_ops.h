/* check_ops: every CUDA op against its kernels/cpu namesake (see check_ops.c). */
#ifndef VF_GPU_CHECK_OPS_H
#define VF_GPU_CHECK_OPS_H

#include <stdint.h>
#include "check.h"
#include "cuda/cuda_backend.h"

/* Runs every op check on an fp32 context; returns the number of failures. */
int vf_gpu_check_ops(vf_cuda_ctx *ctx, uint64_t seed);

#endif
