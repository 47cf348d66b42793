/* device: the run-time choice of compute backend, `--device cuda|cpu|auto`
 * (and `device = ...` in the daemons' configs), and the image tower on the
 * chosen device.
 *
 *   auto  the first CUDA GPU when this build has CUDA and the machine has a
 *         usable GPU and driver, else the CPU; the choice is logged
 *         (event=device ...) so a run always says where it computed.
 *   cuda  the GPU or an error saying why not (no CUDA in this build, no
 *         driver / device).
 *   cpu   the plain C kernels, always available.
 * A build without nvcc (no VF_HAVE_CUDA) behaves like a machine without a
 * GPU.  Precision (`--precision fp32|tf32|bf16`) only matters on CUDA: the
 * CPU computes in fp32.  bf16 is the default for image encoding on the GPU
 * (cosine >= 0.999 to fp32, checked by tests/gpu), fp32 everywhere else. */
#ifndef VF_DEVICE_H
#define VF_DEVICE_H

#include "clip/clip_model.h"
#include "util/vf_error.h"

typedef enum vf_device_kind { VF_DEVICE_AUTO = 0, VF_DEVICE_CPU = 1, VF_DEVICE_CUDA = 2 } vf_device_kind;
typedef enum vf_device_precision { VF_PREC_FP32 = 0, VF_PREC_TF32 = 1, VF_PREC_BF16 = 2 } vf_device_precision;

/* "auto" | "cpu" | "cuda" (`what` names the option or config key in errors). */
int vf_device_kind_parse(const char *s, const char *what, vf_device_kind *out, vf_error *err);
/* "fp32" | "tf32" | "bf16" */
int vf_device_precision_parse(const char *s, const char *what, vf_device_precision *out, vf_error *err);
const char *vf_device_kind_name(vf_device_kind k);
const char *vf_device_precision_name(vf_device_precision p);

/* Number of CUDA GPUs this process can use: 0 in a build without CUDA or on
 * a machine without a driver or GPU.  Never fails. */
int vf_device_cuda_count(void);

typedef struct vf_device {
    vf_device_kind kind;          /* VF_DEVICE_CPU or VF_DEVICE_CUDA once opened */
    vf_device_precision precision;
    char description[192];        /* "cpu" or "NVIDIA H200, 132 SMs, ..." */
    void *cuda_ctx;               /* vf_cuda_ctx * on CUDA */
} vf_device;

/* Resolves `requested` (auto picks CUDA device 0 when there is one) and opens
 * it; logs the choice.  cuda without a usable GPU is an error. */
int vf_device_open(vf_device *d, vf_device_kind requested, vf_device_precision precision, vf_error *err);
void vf_device_close(vf_device *d);

/* An image tower running on a device: CUDA uploads the tower's weights once
 * (the host tower must outlive it); CPU calls vf_vision_encode. */
typedef struct vf_device_vision {
    vf_device *dev;
    vf_vision_tower *tower;
    void *cuda;                   /* vf_cuda_vision * on CUDA */
} vf_device_vision;

int vf_device_vision_open(vf_device_vision *dv, vf_device *dev, vf_vision_tower *tower, vf_error *err);
/* As vf_vision_encode: out (B, D) from preprocessed pixels (B, 3, S, S), any B. */
int vf_device_vision_encode(vf_device_vision *dv, const float *pixels, int B, float *out, vf_error *err);
void vf_device_vision_close(vf_device_vision *dv);

#endif
