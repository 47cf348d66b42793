/* device: backend selection and the image tower on the chosen device (see
 * device.h).  All CUDA calls sit behind VF_HAVE_CUDA; a CUDA build on a
 * machine without a driver sees 0 devices and runs on the CPU. */
#include "device/device.h"

#include <stdio.h>
#include <string.h>

#include "cpu/matmul_bf16.h"
#include "util/log.h"
#ifdef VF_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

static const char *const kind_names[] = {"auto", "cpu", "cuda"};
static const char *const prec_names[] = {"fp32", "tf32", "bf16", "auto", "default"};

const char *vf_device_kind_name(vf_device_kind k) { return (unsigned)k < 3 ? kind_names[k] : "?"; }
const char *vf_device_precision_name(vf_device_precision p) { return (unsigned)p < 5 ? prec_names[p] : "?"; }

int vf_device_kind_parse(const char *s, const char *what, vf_device_kind *out, vf_error *err) {
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, kind_names[i])) return *out = (vf_device_kind)i, 0;
    return vf_fail(err, "%s: '%s' is not a device (cuda, cpu or auto)", what, s ? s : "");
}

int vf_device_precision_parse(const char *s, const char *what, vf_device_precision *out, vf_error *err) {
    for (int i = 0; i < 5; i++)
        if (s && !strcmp(s, prec_names[i])) return *out = (vf_device_precision)i, 0;
    return vf_fail(err, "%s: '%s' is not a precision (fp32, bf16, auto, tf32 or default)", what, s ? s : "");
}

int vf_device_cuda_count(void) {
#ifdef VF_HAVE_CUDA
    return vf_cuda_device_count();
#else
    return 0;
#endif
}

/* The CPU's precision for `want` (device.h); why says what decided it. */
static int cpu_precision(vf_device_precision want, vf_device_kind requested, vf_device_precision *got, char *why,
                         size_t why_size, vf_error *err) {
    *got = VF_PREC_FP32;
    if (want == VF_PREC_FP32 || want == VF_PREC_DEFAULT || want == VF_PREC_TF32) {
        snprintf(why, why_size, "%s", want == VF_PREC_FP32 ? "asked for" : want == VF_PREC_TF32 ? "the CPU has no tf32"
                                                                                                : "the CPU's default (--precision auto or bf16 for bf16)");
        return 0;
    }
    char hw[192];
    if (vf_cpu_bf16_available(hw, sizeof hw)) {
        *got = VF_PREC_BF16;
        snprintf(why, why_size, "%s", hw);
        return 0;
    }
    if (want == VF_PREC_BF16 && requested == VF_DEVICE_CPU)
        return vf_fail(err, "precision bf16 on the CPU: %s (use fp32, or auto to fall back)", hw);
    snprintf(why, why_size, "no bf16: %s", hw);
    return 0;
}

static int open_cpu(vf_device *d, vf_device_kind requested, vf_device_precision precision, const char *device_why,
                    vf_error *err) {
    char why[256];
    d->kind = VF_DEVICE_CPU;
    if (cpu_precision(precision, requested, &d->precision, why, sizeof why, err)) return -1;
    snprintf(d->description, sizeof d->description, "cpu");
    vf_log(d->precision == VF_PREC_FP32 && precision == VF_PREC_BF16 ? VF_WARN : VF_INFO,
           "event=device device=cpu requested=%s%s%s%s precision=%s requested_precision=%s precision_why=\"%s\"",
           vf_device_kind_name(requested), device_why ? " reason=\"" : "", device_why ? device_why : "", device_why ? "\"" : "",
           vf_device_precision_name(d->precision), vf_device_precision_name(precision), why);
    return 0;
}

int vf_device_open(vf_device *d, vf_device_kind requested, vf_device_precision precision, vf_error *err) {
    memset(d, 0, sizeof *d);
    if (requested == VF_DEVICE_CPU) return open_cpu(d, requested, precision, NULL, err);
#ifdef VF_HAVE_CUDA
    int n = vf_cuda_device_count();
    if (n > 0) {
        vf_cuda_ctx *ctx = NULL;
        const vf_device_precision gpu = precision == VF_PREC_AUTO || precision == VF_PREC_DEFAULT ? VF_PREC_BF16 : precision;
        if (vf_cuda_ctx_create(&ctx, 0, (vf_cuda_precision)gpu, err) != 0) {
            if (requested == VF_DEVICE_CUDA) return -1;
            return open_cpu(d, requested, precision, err ? err->msg : "CUDA context failed", err);
        }
        d->kind = VF_DEVICE_CUDA;
        d->precision = precision = gpu;
        d->cuda_ctx = ctx;
        if (vf_cuda_device_describe(0, d->description, sizeof d->description, NULL) != 0)
            snprintf(d->description, sizeof d->description, "CUDA device 0");
        vf_log(VF_INFO, "event=device device=cuda requested=%s gpu=\"%s\" precision=%s", vf_device_kind_name(requested),
               d->description, vf_device_precision_name(precision));
        return 0;
    }
    const char *why = "no CUDA GPU or driver on this machine";
#else
    const char *why = "this build has no CUDA (nvcc was not found when it was built)";
#endif
    if (requested == VF_DEVICE_CUDA) return vf_fail(err, "--device cuda: %s", why);
    return open_cpu(d, requested, precision, why, err);
}

void vf_device_close(vf_device *d) {
#ifdef VF_HAVE_CUDA
    if (d->cuda_ctx) vf_cuda_ctx_free((vf_cuda_ctx *)d->cuda_ctx);
#endif
    memset(d, 0, sizeof *d);
}

int vf_device_vision_open(vf_device_vision *dv, vf_device *dev, vf_vision_tower *tower, vf_error *err) {
    memset(dv, 0, sizeof *dv);
    dv->dev = dev;
    dv->tower = tower;
    if (dev->kind != VF_DEVICE_CUDA) return vf_vision_set_cpu_bf16(tower, dev->precision == VF_PREC_BF16, err);
#ifdef VF_HAVE_CUDA
    vf_cuda_vision *m = NULL;
    vf_cuda_ctx *ctx = (vf_cuda_ctx *)dev->cuda_ctx;
    int rc = tower->kind == VF_VISION_VIT ? vf_cuda_vit_create(&m, ctx, &tower->u.vit.w, tower->max_batch, err)
                                          : vf_cuda_resnet_create(&m, ctx, &tower->u.resnet.net, tower->max_batch, err);
    if (rc != 0) return -1;
    dv->cuda = m;
    return 0;
#else
    return vf_fail(err, "device: CUDA chosen in a build without CUDA");
#endif
}

int vf_device_vision_encode(vf_device_vision *dv, const float *pixels, int B, float *out, vf_error *err) {
#ifdef VF_HAVE_CUDA
    if (dv->cuda) return vf_cuda_vision_encode((vf_cuda_vision *)dv->cuda, pixels, B, out, err);
#endif
    return vf_vision_encode(dv->tower, pixels, B, out, err);
}

void vf_device_vision_close(vf_device_vision *dv) {
#ifdef VF_HAVE_CUDA
    if (dv->cuda) vf_cuda_vision_free((vf_cuda_vision *)dv->cuda);
#endif
    memset(dv, 0, sizeof *dv);
}
