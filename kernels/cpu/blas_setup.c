/* blas_setup: OpenBLAS kernel selection on generic virtual CPUs (see blas_setup.h). */
#include "cpu/blas_setup.h"

#include <cblas.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *vf_blas_core_name(void) { return openblas_get_corename(); }

static const char *wanted_core(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

/* Kernel sets at least as good as what wanted_core() asks for. */
static int is_modern(const char *core) {
    static const char *modern[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", NULL};
    for (int i = 0; modern[i]; i++)
        if (strcasecmp(core, modern[i]) == 0) return 1;
    return 0;
}

void vf_blas_ensure_native_kernels(void) {
    const char *core = openblas_get_corename(), *want = wanted_core();
    int set_core = !getenv("OPENBLAS_CORETYPE") && want && core && !is_modern(core);
    int set_wait = !getenv("OMP_WAIT_POLICY");
    if (!set_core && !set_wait) return;
    /* Rebuild argv from /proc/self/cmdline (NUL-separated). */
    static char buf[1 << 16];
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0 || n == (ssize_t)sizeof buf - 1) return;
    buf[n] = '\0';
    static char *argv[4096];
    int argc = 0;
    for (ssize_t i = 0; i < n && argc < 4095; i += (ssize_t)strlen(buf + i) + 1) argv[argc++] = buf + i;
    argv[argc] = NULL;
    if (set_core) setenv("OPENBLAS_CORETYPE", want, 1);
    if (set_wait) setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slower kernels. */
}
