// cuda_vision: what every CUDA image tower shares — the encode pipeline that
// overlaps the upload of the next slice of images (copy stream, pinned
// double buffers) with the current slice's forward (compute stream), the
// fp32 -> T weight upload, and the accessors of cuda_backend.h.
#include "cuda/cuda_internal.cuh"

#include <stdlib.h>
#include <string.h>

size_t vf_cuda_vision_staging_bytes(int max_batch, int image_size, int out_dim) {
    return 2 * vf_dev_round((size_t)max_batch * 3 * image_size * image_size * sizeof(float)) +
           2 * vf_dev_round((size_t)max_batch * out_dim * sizeof(float));
}

int vf_cuda_vision_init_staging(vf_cuda_vision *m, vf_error *err) {
    const size_t in = (size_t)m->max_batch * 3 * m->image_size * m->image_size, out = (size_t)m->max_batch * m->out_dim;
    for (int i = 0; i < 2; i++) {
        m->d_pixels[i] = (float *)vf_dev_arena_take(&m->acts, in * sizeof(float));
        m->d_out[i] = (float *)vf_dev_arena_take(&m->acts, out * sizeof(float));
        if (!m->d_pixels[i] || !m->d_out[i]) return vf_fail(err, "CUDA image tower: staging arena sizing bug");
        CU(cudaMallocHost((void **)&m->h_pixels[i], in * sizeof(float)));
        CU(cudaMallocHost((void **)&m->h_out[i], out * sizeof(float)));
        CU(cudaEventCreateWithFlags(&m->uploaded[i], cudaEventDisableTiming));
        CU(cudaEventCreateWithFlags(&m->done[i], cudaEventDisableTiming));
    }
    return 0;
}

template <typename T> int vf_cu_put(vf_cuda_ctx *ctx, T *dst, const float *host, size_t n, float *staging, vf_error *err) {
    if constexpr (sizeof(T) == sizeof(float)) {
        CU(cudaMemcpyAsync(dst, host, n * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
    } else {
        CU(cudaMemcpyAsync(staging, host, n * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
        TRY(vf_cu_f32_to_bf16(ctx, (bf16 *)dst, staging, (long)n, err));
        CU(cudaStreamSynchronize(ctx->stream));  // staging is reused by the next put
    }
    return 0;
}
template int vf_cu_put<float>(vf_cuda_ctx *, float *, const float *, size_t, float *, vf_error *);
template int vf_cu_put<bf16>(vf_cuda_ctx *, bf16 *, const float *, size_t, float *, vf_error *);

extern "C" int vf_cuda_vision_forward_device(vf_cuda_vision *m, const float *dev_pixels, int B, float *dev_out,
                                             vf_error *err) {
    if (B < 1 || B > m->max_batch) return vf_fail(err, "CUDA image tower: batch %d outside 1..%d", B, m->max_batch);
    return m->forward(m, dev_pixels, B, dev_out, err);
}

// Slice i uses buffer i % 2.  Before refilling a buffer the host waits for
// its previous slice's download, which also means that slice's forward is
// done with the device input, and copies that slice's embeddings out.
extern "C" int vf_cuda_vision_encode(vf_cuda_vision *m, const float *pixels, int B, float *out, vf_error *err) {
    vf_cuda_ctx *ctx = m->ctx;
    const size_t image = (size_t)3 * m->image_size * m->image_size, D = m->out_dim;
    for (long i = 0; i < (long)B * image; i++)
        if (!isfinite(pixels[i])) return vf_fail(err, "image %ld: pixel %ld is not finite", i / (long)image, i % (long)image);
    int pending_off[2] = {-1, -1}, pending_n[2] = {0, 0};
    const int nslices = (B + m->max_batch - 1) / m->max_batch;
    for (int s = 0; s <= nslices + 1; s++) {
        const int buf = s % 2;
        if (pending_off[buf] >= 0) {
            CU(cudaEventSynchronize(m->done[buf]));
            memcpy(out + (size_t)pending_off[buf] * D, m->h_out[buf], (size_t)pending_n[buf] * D * sizeof(float));
            pending_off[buf] = -1;
        }
        if (s >= nslices) continue;
        const int off = s * m->max_batch, n = B - off < m->max_batch ? B - off : m->max_batch;
        memcpy(m->h_pixels[buf], pixels + (size_t)off * image, (size_t)n * image * sizeof(float));
        CU(cudaMemcpyAsync(m->d_pixels[buf], m->h_pixels[buf], (size_t)n * image * sizeof(float), cudaMemcpyHostToDevice,
                           ctx->copy_stream));
        CU(cudaEventRecord(m->uploaded[buf], ctx->copy_stream));
        CU(cudaStreamWaitEvent(ctx->stream, m->uploaded[buf], 0));
        TRY(m->forward(m, m->d_pixels[buf], n, m->d_out[buf], err));
        CU(cudaMemcpyAsync(m->h_out[buf], m->d_out[buf], (size_t)n * D * sizeof(float), cudaMemcpyDeviceToHost, ctx->stream));
        CU(cudaEventRecord(m->done[buf], ctx->stream));
        pending_off[buf] = off;
        pending_n[buf] = n;
    }
    CU(cudaStreamSynchronize(ctx->stream));
    return 0;
}

extern "C" const char *vf_cuda_prof_kind_name(int k) {
    static const char *const names[VF_PROF_KINDS] = {"embed", "layernorm", "matmul", "attention", "activation", "conv_pool"};
    return k >= 0 && k < VF_PROF_KINDS ? names[k] : "?";
}

extern "C" int vf_cuda_vision_profile(vf_cuda_vision *m, const float *dev_pixels, int B, float *dev_out,
                                      double ms[VF_PROF_KINDS], vf_error *err) {
    vf_cuda_prof *p = (vf_cuda_prof *)calloc(1, sizeof *p);
    if (!p) return vf_fail(err, "profile: out of memory");
    int made = 0, rc = 0;
    for (; made < VF_PROF_MAX && rc == 0; made++)
        if (cudaEventCreate(&p->ev[made]) != cudaSuccess) rc = vf_fail(err, "profile: cudaEventCreate failed");
    if (rc == 0) {
        m->prof = p;
        vf_prof_mark(m, -1);
        rc = vf_cuda_vision_forward_device(m, dev_pixels, B, dev_out, err);
        m->prof = NULL;
    }
    if (rc == 0 && cudaStreamSynchronize(m->ctx->stream) != cudaSuccess)
        rc = vf_fail(err, "profile: %s", cudaGetErrorString(cudaGetLastError()));
    for (int k = 0; k < VF_PROF_KINDS; k++) ms[k] = 0;
    for (int i = 1; rc == 0 && i < p->n; i++) {
        float t = 0;
        if (cudaEventElapsedTime(&t, p->ev[i - 1], p->ev[i]) == cudaSuccess && p->kind[i] >= 0) ms[p->kind[i]] += t;
    }
    for (int i = 0; i < made; i++) if (p->ev[i]) cudaEventDestroy(p->ev[i]);
    free(p);
    return rc;
}

extern "C" int vf_cuda_vision_max_batch(const vf_cuda_vision *m) { return m->max_batch; }
extern "C" int vf_cuda_vision_out_dim(const vf_cuda_vision *m) { return m->out_dim; }

extern "C" void vf_cuda_vision_free(vf_cuda_vision *m) {
    if (!m) return;
    if (m->ctx) cudaStreamSynchronize(m->ctx->stream);
    if (m->destroy) m->destroy(m);
    for (int i = 0; i < 2; i++) {
        cudaFreeHost(m->h_pixels[i]);
        cudaFreeHost(m->h_out[i]);
        if (m->uploaded[i]) cudaEventDestroy(m->uploaded[i]);
        if (m->done[i]) cudaEventDestroy(m->done[i]);
    }
    vf_dev_arena_free(&m->params);
    vf_dev_arena_free(&m->acts);
    free(m);
}
