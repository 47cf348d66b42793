// cuda_runtime: device detection, contexts (streams, cuBLASLt handle and
// workspace), the dlopen'ed cuBLASLt / cuDNN tables, device arenas and the
// plain memory helpers of cuda_backend.h.
#include "cuda/cuda_internal.cuh"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" const char *vf_cuda_precision_name(vf_cuda_precision p) {
    return p == VF_CUDA_BF16 ? "bf16" : p == VF_CUDA_TF32 ? "tf32" : "fp32";
}

extern "C" int vf_cuda_device_count(void) {
    int n = 0;
    // No driver / no device is an error code here, never a crash.
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int vf_cuda_device_describe(int device, char *buf, size_t n, vf_error *err) {
    cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, device));
    snprintf(buf, n, "%s, %d SMs, %.1f GiB, cc %d.%d", p.name, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p.major, p.minor);
    return 0;
}

// ---- dlopen ------------------------------------------------------------------
void *vf_cuda_dlopen_first(const char *const *names) {
    for (int i = 0; names[i]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (h) return h;
    }
    return NULL;
}

static pthread_mutex_t g_dl_lock = PTHREAD_MUTEX_INITIALIZER;
static vf_lt_api g_lt;
static int g_lt_state;  // 0 untried, 1 ok, -1 failed
static char g_lt_msg[512];

#define VF_RESOLVE(f)                                                                                       \
    if (ok && !(api->f = (decltype(api->f))dlsym(h, #f))) {                                                 \
        snprintf(msg, msgn, "%s has no symbol %s", lib, #f);                                                \
        ok = 0;                                                                                             \
    }

static int load_lt(vf_lt_api *api, char *msg, size_t msgn) {
    static const char *const names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so", NULL};
    const char *lib = "libcublasLt";
    void *h = vf_cuda_dlopen_first(names);
    if (!h) return snprintf(msg, msgn, "cannot load libcublasLt.so: %s", dlerror()), -1;
    int ok = 1;
    VF_LT_FUNCS(VF_RESOLVE)
    return ok ? 0 : -1;
}

const vf_lt_api *vf_cuda_lt_api(vf_error *err) {
    pthread_mutex_lock(&g_dl_lock);
    if (!g_lt_state) g_lt_state = load_lt(&g_lt, g_lt_msg, sizeof g_lt_msg) == 0 ? 1 : -1;
    int st = g_lt_state;
    pthread_mutex_unlock(&g_dl_lock);
    if (st < 0) return vf_fail(err, "%s", g_lt_msg), nullptr;
    return &g_lt;
}

// ---- contexts ------------------------------------------------------------------
static int ctx_init(vf_cuda_ctx *c, vf_error *err) {
    CU(cudaSetDevice(c->device));
    CU(cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, c->device));
    CU(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CU(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
    if (!(c->lt = vf_cuda_lt_api(err))) return -1;
    if (c->lt->cublasLtCreate(&c->lt_handle) != CUBLAS_STATUS_SUCCESS)
        return vf_fail(err, "cublasLtCreate failed on device %d", c->device);
    c->lt_workspace_bytes = (size_t)64 << 20;  // Hopper's fastest kernels want 32 MiB+
    CU(cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes));
    return 0;
}

extern "C" int vf_cuda_ctx_create(vf_cuda_ctx **out, int device, vf_cuda_precision prec, vf_error *err) {
    *out = NULL;
    int n = vf_cuda_device_count();
    if (device < 0 || device >= n) return vf_fail(err, "CUDA device %d does not exist (%d found)", device, n);
    vf_cuda_ctx *c = (vf_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return vf_fail(err, "CUDA context: out of memory");
    c->device = device;
    c->prec = prec;
    if (ctx_init(c, err) != 0) {
        vf_cuda_ctx_free(c);
        return vf_error_prefix(err, "CUDA device %d", device);
    }
    *out = c;
    return 0;
}

extern "C" void vf_cuda_ctx_free(vf_cuda_ctx *c) {
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->dnn && c->dnn_free) c->dnn_free(c->dnn);
    if (c->lt_handle) c->lt->cublasLtDestroy(c->lt_handle);
    cudaFree(c->lt_workspace);
    if (c->stream) cudaStreamDestroy(c->stream);
    if (c->copy_stream) cudaStreamDestroy(c->copy_stream);
    free(c);
}

extern "C" vf_cuda_precision vf_cuda_ctx_precision(const vf_cuda_ctx *c) { return c->prec; }

extern "C" int vf_cuda_sync(vf_cuda_ctx *c, vf_error *err) {
    CU(cudaStreamSynchronize(c->stream));
    CU(cudaGetLastError());
    return 0;
}

// ---- memory --------------------------------------------------------------------
int vf_dev_arena_init(vf_dev_arena *a, size_t bytes, vf_error *err) {
    a->size = bytes ? bytes : 256;
    a->used = 0;
    a->base = NULL;
    cudaError_t e = cudaMalloc((void **)&a->base, a->size);
    if (e != cudaSuccess) {
        a->base = NULL;
        return vf_fail(err, "device arena of %.1f MiB: %s", (double)bytes / (1 << 20), cudaGetErrorString(e));
    }
    return 0;
}

void *vf_dev_arena_take(vf_dev_arena *a, size_t bytes) {
    size_t n = vf_dev_round(bytes ? bytes : 1);
    if (a->used + n > a->size) return NULL;
    void *p = a->base + a->used;
    a->used += n;
    return p;
}

void vf_dev_arena_free(vf_dev_arena *a) {
    cudaFree(a->base);
    a->base = NULL;
    a->size = a->used = 0;
}

extern "C" void *vf_cuda_malloc(vf_cuda_ctx *c, size_t bytes, vf_error *err) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) return vf_fail(err, "cudaMalloc(%zu): %s", bytes, cudaGetErrorString(e)), nullptr;
    return p;
}

extern "C" void vf_cuda_free(void *p) { cudaFree(p); }

extern "C" int vf_cuda_upload(vf_cuda_ctx *c, void *dev, const void *host, size_t bytes, vf_error *err) {
    CU(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, c->stream));
    CU(cudaStreamSynchronize(c->stream));
    return 0;
}

extern "C" int vf_cuda_download(vf_cuda_ctx *c, void *host, const void *dev, size_t bytes, vf_error *err) {
    CU(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
    return 0;
}

extern "C" int vf_cuda_memset0(vf_cuda_ctx *c, void *dev, size_t bytes, vf_error *err) {
    CU(cudaMemsetAsync(dev, 0, bytes, c->stream));
    return 0;
}

extern "C" int vf_cuda_time_ms(vf_cuda_ctx *c, int (*fn)(void *, vf_error *), void *arg, float *ms, vf_error *err) {
    cudaEvent_t a = NULL, b = NULL;
    CU(cudaEventCreate(&a));
    cudaError_t e = cudaEventCreate(&b);
    int rc = -1;
    if (e == cudaSuccess) e = cudaEventRecord(a, c->stream);
    if (e == cudaSuccess && (rc = fn(arg, err)) == 0) {
        e = cudaEventRecord(b, c->stream);
        if (e == cudaSuccess) e = cudaEventSynchronize(b);
        if (e == cudaSuccess) e = cudaEventElapsedTime(ms, a, b);
    }
    if (e != cudaSuccess) rc = vf_fail(err, "timing on CUDA events: %s", cudaGetErrorString(e));
    cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    return rc;
}
