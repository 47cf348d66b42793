/* bench_embed: CPU image-embedding throughput of the vision tower, model
 * load excluded.  usage: bench_embed MODEL_DIR PIXELS.npy BATCH REPEATS [fp32|bf16]
 * PIXELS is (N, 3, H, W) preprocessed; each repeat encodes all N images in
 * batches of BATCH, in fp32 (the default) or with bf16 matmuls (a CPU with
 * AVX512_BF16/AMX: clip_model.h, vf_vision_set_cpu_bf16).  Prints one line: images_per_s=<x> and writes the
 * embeddings of the last repeat to $VF_BENCH_OUT when set (to check them). */
#include "clip/clip_model.h"
#include "cpu/blas_setup.h"
#include "formats/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv) {
    vf_blas_ensure_native_kernels();
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: bench_embed MODEL_DIR PIXELS.npy BATCH REPEATS [fp32|bf16]\n");
        return 2;
    }
    const char *precision = argc == 6 ? argv[5] : "fp32";
    if (strcmp(precision, "fp32") && strcmp(precision, "bf16")) { fprintf(stderr, "bench_embed: precision %s\n", precision); return 2; }
    int batch = atoi(argv[3]), repeats = atoi(argv[4]);
    vf_error err = {{0}};
    vf_vision_tower tower;
    float *px = NULL;
    int ndim;
    int64_t shape[VF_NPY_MAX_DIMS];
    if (batch < 1 || repeats < 1) { fprintf(stderr, "bench_embed: BATCH and REPEATS must be positive\n"); return 2; }
    if (vf_vision_load(&tower, argv[1], batch, &err) != 0 || vf_npy_read_f32(argv[2], &px, &ndim, shape, &err) != 0) {
        fprintf(stderr, "bench_embed: %s\n", err.msg);
        return 1;
    }
    if (vf_vision_set_cpu_bf16(&tower, !strcmp(precision, "bf16"), &err) != 0) {
        fprintf(stderr, "bench_embed: %s\n", err.msg);
        return 3;
    }
    if (ndim != 4 || shape[1] != 3 || shape[2] != tower.image_size || shape[3] != tower.image_size) {
        fprintf(stderr, "bench_embed: %s must be (N, 3, %d, %d)\n", argv[2], tower.image_size, tower.image_size);
        return 1;
    }
    int n = (int)shape[0];
    float *out = malloc(sizeof(float) * (size_t)n * tower.embed_dim);
    if (!out || vf_vision_encode(&tower, px, batch < n ? batch : n, out, &err) != 0) { /* warm-up */
        fprintf(stderr, "bench_embed: %s\n", err.msg);
        return 1;
    }
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    for (int r = 0; r < repeats; r++)
        if (vf_vision_encode(&tower, px, n, out, &err) != 0) { fprintf(stderr, "bench_embed: %s\n", err.msg); return 1; }
    double dt = clock_s(CLOCK_MONOTONIC) - t0, cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("images_per_s=%.3f images=%d repeats=%d seconds=%.3f cpu_seconds=%.3f blas_core=%s precision=%s\n",
           (double)n * repeats / dt, n, repeats, dt, cpu, vf_blas_core_name(), precision);
    const char *dump = getenv("VF_BENCH_OUT");
    if (dump && vf_npy_write_f32(dump, out, 2, (const int64_t[]){n, tower.embed_dim}, &err) != 0) {
        fprintf(stderr, "bench_embed: %s\n", err.msg);
        return 1;
    }
    free(out);
    free(px);
    vf_vision_free(&tower);
    return 0;
}
