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
 * GPU.
 *
 * Precision (`--precision fp32|bf16|auto|tf32`, `[encode] precision`) of the
 * image tower's matrix products:
 *   (not given)  "default": bf16 on CUDA (cosine >= 0.999 to fp32, checked by
 *                tests/gpu), fp32 on the CPU, the reference;
 *   auto         bf16 on CUDA and on a CPU with AVX512_BF16 or AMX-BF16
 *                (cpu/matmul_bf16.h, oneDNN), else fp32; the device log line
 *                says which and why;
 *   bf16         bf16, or on a CPU without it an error (with --device cpu) or
 *                fp32 saying why (--device auto, which accepted a fallback);
 *   fp32, tf32   as named on CUDA; the CPU computes tf32 as fp32.
 * VFLCLIP_CPU_NO_BF16=1 in the environment makes the CPU look as if it had
 * no bf16 (for tests of the fallback). */
#ifndef VF_DEVICE_H
#define VF_DEVICE_H

#include "clip/clip_model.h"
#include "util/vf_error.h"

typedef enum vf_device_kind { VF_DEVICE_AUTO = 0, VF_DEVICE_CPU = 1, VF_DEVICE_CUDA = 2 } vf_device_kind;
typedef enum vf_device_precision {
    VF_PREC_FP32 = 0, VF_PREC_TF32 = 1, VF_PREC_BF16 = 2,
    VF_PREC_AUTO = 3,    /* bf16 wherever the device has it, else fp32 */
    VF_PREC_DEFAULT = 4, /* bf16 on CUDA, fp32 on the CPU */
} vf_device_precision;

/* "auto" | "cpu" | "cuda" (`what` names the option or config key in errors). */
int vf_device_kind_parse(const char *s, const char *what, vf_device_kind *out, vf_error *err);
/* "fp32" | "tf32" | "bf16" | "auto" | "default" */
int vf_device_precision_parse(const char *s, const char *what, vf_device_precision *out, vf_error *err);
const char *vf_device_kind_name(vf_device_kind k);
const char *vf_device_precision_name(vf_device_precision p);

/* Number of CUDA GPUs this process can use: 0 in a build without CUDA or on
 * a machine without a driver or GPU.  Never fails. */
int vf_device_cuda_count(void);

typedef struct vf_device {
    vf_device_kind kind;          /* VF_DEVICE_CPU or VF_DEVICE_CUDA once opened */
    vf_device_precision precision;  /* as resolved: fp32, tf32 or bf16 */
    char description[192];        /* "cpu" or "NVIDIA H200, 132 SMs, ..." */
    void *cuda_ctx;               /* vf_cuda_ctx * on CUDA */
} vf_device;

/* Resolves `requested` (auto picks CUDA device 0 when there is one) and the
 * precision, opens the device and logs both in one line (event=device).
 * cuda without a usable GPU is an error, and so is bf16 with --device cpu on
 * a CPU without bf16. */
int vf_device_open(vf_device *d, vf_device_kind requested, vf_device_precision precision, vf_error *err);
void vf_device_close(vf_device *d);

/* An image tower running on a device: CUDA uploads the tower's weights once
 * (the host tower must outlive it); CPU calls vf_vision_encode, in bf16
 * (vf_vision_set_cpu_bf16) when the device's precision is bf16. */
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
