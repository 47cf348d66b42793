/* version: the one version constant of vflclip and the `--version` report
 * every program prints (vflclip, vflclip-aggregator, vflclip-image-party,
 * vflclip-knowledge-party): version, git revision captured at build time,
 * build options, OpenBLAS's kernel set and whether CUDA is usable here. */
#ifndef VF_DAEMON_VERSION_H
#define VF_DAEMON_VERSION_H

#include <stdio.h>

/* The software version: Hello.software_version, the Admin status reply and
 * run_settings.json carry it. */
#define VF_VERSION "vflclip 0.2"

/* `git describe --always --dirty` of the tree at build time (the Makefile
 * passes it as VF_GIT_REV), "unknown" when built outside a git checkout. */
const char *vf_version_git_revision(void);
/* Compiler optimisation flags (-O level, -march), CUDA kernels and oneDNN
 * compiled in or not, e.g. "-O3 -march=x86-64-v2 -mtune=generic; CUDA kernels no; oneDNN yes". */
const char *vf_version_build_options(void);
/* Prints the report, one "field: value" per line:
 *   PROGRAM vflclip 0.2
 *   version: vflclip 0.2
 *   git revision: 0050ced-dirty
 *   build options: ...
 *   BLAS core: OpenBLAS <core> (<openblas_get_config()>)
 *   CUDA: yes, N GPU(s) | no, <why>
 * It asks OpenBLAS and the CUDA driver at run time; call it after
 * vf_blas_ensure_native_kernels() so the core reported is the one in use. */
void vf_version_print(FILE *out, const char *program);

#endif
