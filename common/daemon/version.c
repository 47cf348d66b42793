/* version: the `--version` report (see version.h). */
#include "daemon/version.h"
#include "cpu/blas_setup.h"
#include "device/device.h"

#include <cblas.h>

#ifndef VF_GIT_REV
#define VF_GIT_REV "unknown"
#endif
#ifndef VF_BUILD_OPT
#define VF_BUILD_OPT "unknown"
#endif
#ifdef VF_HAVE_CUDA
#define VF_BUILD_CUDA "yes (nvcc)"
#else
#define VF_BUILD_CUDA "no"
#endif
#ifdef VF_HAVE_DNNL
#define VF_BUILD_DNNL "yes"
#else
#define VF_BUILD_DNNL "no"
#endif

const char *vf_version_git_revision(void) { return VF_GIT_REV[0] ? VF_GIT_REV : "unknown"; }

const char *vf_version_build_options(void) { return VF_BUILD_OPT "; CUDA kernels " VF_BUILD_CUDA "; oneDNN " VF_BUILD_DNNL; }

void vf_version_print(FILE *out, const char *program) {
    const char *core = vf_blas_core_name(), *config = openblas_get_config();
    fprintf(out, "%s %s\n", program, VF_VERSION);
    fprintf(out, "version: %s\n", VF_VERSION);
    fprintf(out, "git revision: %s\n", vf_version_git_revision());
    fprintf(out, "build options: %s\n", vf_version_build_options());
    fprintf(out, "BLAS core: OpenBLAS %s (%s)\n", core ? core : "?", config ? config : "?");
#ifdef VF_HAVE_CUDA
    int n = vf_device_cuda_count();
    if (n > 0) fprintf(out, "CUDA: yes, %d GPU%s\n", n, n == 1 ? "" : "s");
    else fprintf(out, "CUDA: no, no usable GPU or driver on this machine (built with CUDA kernels)\n");
#else
    fprintf(out, "CUDA: no, built without CUDA kernels (no nvcc at build time)\n");
#endif
}
