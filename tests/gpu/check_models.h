/* check_models: whole CUDA towers against the C towers, and the GPU benchmarks
 * (see check_models.c).  Results go through check.h's report lines. */
#ifndef VF_GPU_CHECK_MODELS_H
#define VF_GPU_CHECK_MODELS_H

#include <stdint.h>
#include "check.h"
#include "cuda/cuda_backend.h"

/* Image embeddings of B random images at random weights: fp32 1e-4 relative, tf32/bf16 cosine >= 0.999. */
void vf_gpu_check_vit(const char *label, const vf_clip_vision_config *cfg, int proj_dim, int B, uint64_t seed);
void vf_gpu_check_resnet(const char *label, const vf_resnet_config *cfg, int B, uint64_t seed);
/* One CoOp step (7 classes, 16 shared context vectors, 24 tokens, 32 images): dL/dctx vs C, and step times. */
void vf_gpu_check_coop(const char *label, const vf_clip_text_config *cfg, int proj_dim, uint64_t seed);
/* bf16 images/s and TFLOP/s for batch B; dir (or NULL) receives the files bench_torch.py reads. */
void vf_gpu_bench_vit(const char *label, const vf_clip_vision_config *cfg, int proj_dim, int B, double peak_tflops,
                      const char *dir, uint64_t seed);

/* Without a GPU: the bench-vit files with the C tower's embeddings (see check_models.c). */
int vf_gpu_export_vit(const vf_clip_vision_config *cfg, int proj_dim, int B, const char *dir, uint64_t seed);

#endif
