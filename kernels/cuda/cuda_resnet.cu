// cuda_resnet: CLIP's ModifiedResNet image tower on the GPU, the forward of
// cpu/resnet.c.  Convolutions go through cuDNN's fused
// conv + bias (+ residual) + ReLU (BatchNorm was folded into weight and bias
// at load time, as on the CPU); pooling and the attention pool are ours.
// Activations are NCHW here (the CPU keeps CNHW so that a convolution is one
// sgemm; cuDNN prefers the batch outermost).  fp32 storage; FP32 contexts
// forbid TF32 in cuDNN (CUDNN_FMA_MATH), TF32 and BF16 contexts allow it.
#include "cuda/cuda_internal.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if __has_include(<cudnn.h>)
#include <cudnn.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

// ---- cuDNN, opened with dlopen on first use ------------------------------------------
#define VF_DNN_FUNCS(X)                                                                                     \
    X(cudnnCreate) X(cudnnDestroy) X(cudnnSetStream) X(cudnnGetErrorString) X(cudnnCreateTensorDescriptor)  \
    X(cudnnSetTensor4dDescriptor) X(cudnnDestroyTensorDescriptor) X(cudnnCreateFilterDescriptor)            \
    X(cudnnSetFilter4dDescriptor) X(cudnnDestroyFilterDescriptor) X(cudnnCreateConvolutionDescriptor)       \
    X(cudnnSetConvolution2dDescriptor) X(cudnnSetConvolutionMathType) X(cudnnDestroyConvolutionDescriptor)  \
    X(cudnnCreateActivationDescriptor) X(cudnnSetActivationDescriptor) X(cudnnDestroyActivationDescriptor)  \
    X(cudnnGetConvolutionForwardAlgorithm_v7) X(cudnnGetConvolutionForwardWorkspaceSize)                    \
    X(cudnnConvolutionBiasActivationForward)
struct vf_dnn_api { VF_DNN_FUNCS(VF_DECLARE_PTR) };
struct dnn_state {  // per context (vf_cuda_ctx.dnn)
    const vf_dnn_api *api;
    cudnnHandle_t handle;
};

static pthread_mutex_t g_dnn_lock = PTHREAD_MUTEX_INITIALIZER;
static vf_dnn_api g_dnn;
static int g_dnn_state;  // 0 untried, 1 ok, -1 failed
static char g_dnn_msg[512];

static int load_dnn(void) {
    static const char *const names[] = {"libcudnn.so.9", "libcudnn.so", NULL};
    void *h = vf_cuda_dlopen_first(names);
    if (!h) return snprintf(g_dnn_msg, sizeof g_dnn_msg, "cannot load libcudnn.so.9 (the ResNet towers need cuDNN): %s", dlerror()), -1;
#define VF_DNN_RESOLVE(f)                                                                                   \
    if (!(g_dnn.f = (decltype(g_dnn.f))dlsym(h, #f)))                                                       \
        return snprintf(g_dnn_msg, sizeof g_dnn_msg, "libcudnn has no symbol %s", #f), -1;
    VF_DNN_FUNCS(VF_DNN_RESOLVE)
#undef VF_DNN_RESOLVE
    return 0;
}

static void dnn_free(void *p) {
    dnn_state *d = (dnn_state *)p;
    d->api->cudnnDestroy(d->handle);
    free(d);
}

// The context's cuDNN handle on its compute stream, made on first use.
static const vf_dnn_api *ctx_dnn(vf_cuda_ctx *ctx, vf_error *err) {
    if (ctx->dnn) return ((dnn_state *)ctx->dnn)->api;
    pthread_mutex_lock(&g_dnn_lock);
    if (!g_dnn_state) g_dnn_state = load_dnn() == 0 ? 1 : -1;
    int st = g_dnn_state;
    pthread_mutex_unlock(&g_dnn_lock);
    if (st < 0) return vf_fail(err, "%s", g_dnn_msg), nullptr;
    dnn_state *d = (dnn_state *)calloc(1, sizeof *d);
    if (!d) return vf_fail(err, "cuDNN: out of memory"), nullptr;
    d->api = &g_dnn;
    cudnnStatus_t s = g_dnn.cudnnCreate(&d->handle);
    if (s == CUDNN_STATUS_SUCCESS) s = g_dnn.cudnnSetStream(d->handle, ctx->stream);
    if (s != CUDNN_STATUS_SUCCESS) {
        vf_fail(err, "cudnnCreate/cudnnSetStream: %s", g_dnn.cudnnGetErrorString(s));
        free(d);
        return nullptr;
    }
    ctx->dnn = d;
    ctx->dnn_free = dnn_free;
    return d->api;
}
static cudnnHandle_t ctx_handle(vf_cuda_ctx *ctx) { return ((dnn_state *)ctx->dnn)->handle; }

#define DNN(call)                                                                                           \
    do {                                                                                                    \
        cudnnStatus_t s_ = (call);                                                                          \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                                     \
            return vf_fail(err, "%s:%d: %s: %s", __FILE__, __LINE__, #call, dnn->cudnnGetErrorString(s_));  \
    } while (0)

// One convolution with its cuDNN descriptors, re-planned when (B, H) changes.
struct dconv {
    int cin, cout, k, stride, pad;
    float *w, *b;  // device
    cudnnTensorDescriptor_t xd, yd, bd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnActivationDescriptor_t relu, identity;
    cudnnConvolutionFwdAlgo_t algo_relu, algo_id;
    int planned_B, planned_H;
};

static int dconv_init(vf_cuda_ctx *ctx, dconv *c, const vf_conv2d *src, float *w, float *b, vf_error *err) {
    const vf_dnn_api *dnn = ctx_dnn(ctx, err);
    if (!dnn) return -1;
    if (src->kh != src->kw) return vf_fail(err, "CUDA conv: %dx%d kernels are not square", src->kh, src->kw);
    c->cin = src->cin, c->cout = src->cout, c->k = src->kh, c->stride = src->stride, c->pad = src->pad;
    c->w = w, c->b = b, c->planned_B = c->planned_H = -1;
    DNN(dnn->cudnnCreateTensorDescriptor(&c->xd));
    DNN(dnn->cudnnCreateTensorDescriptor(&c->yd));
    DNN(dnn->cudnnCreateTensorDescriptor(&c->bd));
    DNN(dnn->cudnnCreateFilterDescriptor(&c->wd));
    DNN(dnn->cudnnCreateConvolutionDescriptor(&c->cd));
    DNN(dnn->cudnnCreateActivationDescriptor(&c->relu));
    DNN(dnn->cudnnCreateActivationDescriptor(&c->identity));
    DNN(dnn->cudnnSetTensor4dDescriptor(c->bd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, c->cout, 1, 1));
    DNN(dnn->cudnnSetFilter4dDescriptor(c->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, c->cout, c->cin, c->k, c->k));
    DNN(dnn->cudnnSetConvolution2dDescriptor(c->cd, c->pad, c->pad, c->stride, c->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                             CUDNN_DATA_FLOAT));
    DNN(dnn->cudnnSetConvolutionMathType(c->cd, ctx->prec == VF_CUDA_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
    DNN(dnn->cudnnSetActivationDescriptor(c->relu, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    DNN(dnn->cudnnSetActivationDescriptor(c->identity, CUDNN_ACTIVATION_IDENTITY, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    return 0;
}

static void dconv_destroy(const vf_dnn_api *dnn, dconv *c) {
    if (!dnn) return;
    if (c->xd) dnn->cudnnDestroyTensorDescriptor(c->xd);
    if (c->yd) dnn->cudnnDestroyTensorDescriptor(c->yd);
    if (c->bd) dnn->cudnnDestroyTensorDescriptor(c->bd);
    if (c->wd) dnn->cudnnDestroyFilterDescriptor(c->wd);
    if (c->cd) dnn->cudnnDestroyConvolutionDescriptor(c->cd);
    if (c->relu) dnn->cudnnDestroyActivationDescriptor(c->relu);
    if (c->identity) dnn->cudnnDestroyActivationDescriptor(c->identity);
}

// Sets the tensor shapes for (B, H) and picks the fastest algorithm (cuDNN's
// heuristic) whose workspace fits ws_bytes; the identity activation is only
// supported by IMPLICIT_PRECOMP_GEMM.  *ws_need gets the largest workspace seen.
static int dconv_plan(vf_cuda_ctx *ctx, dconv *c, int B, int H, size_t ws_bytes, size_t *ws_need, vf_error *err) {
    const vf_dnn_api *dnn = ((dnn_state *)ctx->dnn)->api;
    if (c->planned_B == B && c->planned_H == H) return 0;
    const int Ho = vf_conv_out_size(H, c->k, c->stride, c->pad);
    DNN(dnn->cudnnSetTensor4dDescriptor(c->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, B, c->cin, H, H));
    DNN(dnn->cudnnSetTensor4dDescriptor(c->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, B, c->cout, Ho, Ho));
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    int n = 0;
    DNN(dnn->cudnnGetConvolutionForwardAlgorithm_v7(ctx_handle(ctx), c->xd, c->wd, c->cd, c->yd, 8, &n, perf));
    c->algo_relu = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    for (int i = 0; i < n; i++) {
        // fp32 mode promises the C result to 1e-4: no Winograd / FFT transforms, direct GEMM-type sums only
        const cudnnConvolutionFwdAlgo_t a = perf[i].algo;
        if (ctx->prec == VF_CUDA_FP32 && a != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM &&
            a != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM && a != CUDNN_CONVOLUTION_FWD_ALGO_GEMM)
            continue;
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= ws_bytes) {
            c->algo_relu = a;
            break;
        }
    }
    c->algo_id = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    size_t need = 0;
    DNN(dnn->cudnnGetConvolutionForwardWorkspaceSize(ctx_handle(ctx), c->xd, c->wd, c->cd, c->yd, c->algo_relu, &need));
    if (need > *ws_need) *ws_need = need;
    DNN(dnn->cudnnGetConvolutionForwardWorkspaceSize(ctx_handle(ctx), c->xd, c->wd, c->cd, c->yd, c->algo_id, &need));
    if (need > *ws_need) *ws_need = need;
    c->planned_B = B, c->planned_H = H;
    return 0;
}

// out = relu?(conv(x) + bias [+ residual]), NCHW; planned for (B, H) beforehand.
static int dconv_run(vf_cuda_ctx *ctx, const dconv *c, const float *x, const float *residual, int relu, float *out,
                     void *ws, size_t ws_bytes, vf_error *err) {
    const vf_dnn_api *dnn = ((dnn_state *)ctx->dnn)->api;
    const float one = 1.0f, alpha2 = residual ? 1.0f : 0.0f;
    DNN(dnn->cudnnConvolutionBiasActivationForward(ctx_handle(ctx), &one, c->xd, x, c->wd, c->w, c->cd,
                                                   relu ? c->algo_relu : c->algo_id, ws, ws_bytes, &alpha2, c->yd,
                                                   residual ? residual : out, c->bd, c->b, relu ? c->relu : c->identity,
                                                   c->yd, out));
    return 0;
}

extern "C" int vf_cuda_conv2d_forward(vf_cuda_ctx *ctx, const vf_conv2d *src, const float *x, int B, int H, int W,
                                      const float *residual, int relu, float *out, vf_error *err) {
    if (H != W) return vf_fail(err, "CUDA conv: %dx%d input is not square", H, W);
    dconv c;
    memset(&c, 0, sizeof c);
    size_t need = 0;
    void *ws = NULL;
    const size_t ws_bytes = (size_t)256 << 20;
    int rc = dconv_init(ctx, &c, src, src->weight, src->bias, err);
    if (rc == 0) rc = dconv_plan(ctx, &c, B, H, ws_bytes, &need, err);
    if (rc == 0 && need && cudaMalloc(&ws, need) != cudaSuccess) rc = vf_fail(err, "CUDA conv: workspace of %zu bytes", need);
    if (rc == 0) rc = dconv_run(ctx, &c, x, residual, relu, out, ws, need, err);
    if (rc == 0 && cudaStreamSynchronize(ctx->stream) != cudaSuccess) rc = vf_fail(err, "CUDA conv: %s", cudaGetErrorString(cudaGetLastError()));
    cudaFree(ws);
    dconv_destroy(ctx->dnn ? ((dnn_state *)ctx->dnn)->api : NULL, &c);
    return rc;
}

// ---- the tower ---------------------------------------------------------------------
struct dblock {
    int inplanes, planes, stride, has_downsample;
    dconv conv1, conv2, conv3, downsample;
};

struct resnet_dev {
    vf_resnet_config cfg;
    dconv stem[3];
    int n_blocks;
    dblock *blocks;
    // attention pool
    int grid, C, heads, out_dim;
    float *pos, *kv_w, *kv_b, *q_w, *q_b, *c_w, *c_b;  // kv_w (2C, C): k rows then v rows
    // activations (max_batch), NCHW
    float *x, *y, *t1, *t2, *pooled, *shortcut, *tokens, *q, *kv, *attended;
    void *ws;
    size_t ws_bytes;
};

static size_t conv_params(const vf_conv2d *c) { return (size_t)c->cout * c->cin * c->kh * c->kw; }

static int conv_upload(vf_cuda_ctx *ctx, dconv *d, const vf_conv2d *src, vf_carver *pc, vf_error *err) {
    float *w = pc->take<float>(conv_params(src)), *b = pc->take<float>(src->cout);
    if (!w || !b) return vf_fail(err, "CUDA ResNet: parameter arena sizing bug");
    CU(cudaMemcpyAsync(w, src->weight, conv_params(src) * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
    CU(cudaMemcpyAsync(b, src->bias, src->cout * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
    return dconv_init(ctx, d, src, w, b, err);
}

static size_t param_bytes(const vf_resnet *r) {
    vf_carver c = {NULL, 0, 0};
    for (int i = 0; i < 3; i++) c.take<float>(conv_params(&r->stem[i])), c.take<float>(r->stem[i].cout);
    for (int n = 0; n < r->n_blocks; n++) {
        const vf_bottleneck *b = &r->blocks[n];
        const vf_conv2d *cs[4] = {&b->conv1, &b->conv2, &b->conv3, &b->downsample};
        for (int i = 0; i < (b->has_downsample ? 4 : 3); i++) c.take<float>(conv_params(cs[i])), c.take<float>(cs[i]->cout);
    }
    const vf_attnpool *p = &r->attnpool;
    const size_t C = p->embed_dim, T = (size_t)p->grid * p->grid + 1;
    c.take<float>(T * C), c.take<float>(2 * C * C), c.take<float>(2 * C), c.take<float>(C * C), c.take<float>(C);
    c.take<float>((size_t)p->output_dim * C), c.take<float>(p->output_dim);
    return c.bytes;
}

// Largest per-buffer needs over the whole forward, as resnet.c's plan_acts (NCHW sizes are the same).
static void act_sizes(const vf_resnet *r, int B, size_t s[6]) {
    memset(s, 0, 6 * sizeof *s);  // x, t1, t2, pooled, shortcut, (unused)
#define GROW(i, v) s[i] = (v) > s[i] ? (v) : s[i]
    int S = r->cfg.image_size, H = vf_conv_out_size(S, 3, 2, 1);
    GROW(1, (size_t)B * r->stem[0].cout * H * H);
    GROW(2, (size_t)B * r->stem[1].cout * H * H);
    GROW(0, (size_t)B * r->stem[2].cout * H * H);
    H /= 2;
    for (int n = 0; n < r->n_blocks; n++) {
        const vf_bottleneck *b = &r->blocks[n];
        const int Ho = H / b->stride;
        GROW(0, (size_t)B * b->inplanes * H * H);
        GROW(1, (size_t)B * b->planes * H * H);
        GROW(2, (size_t)B * b->planes * H * H);
        if (b->stride > 1) GROW(3, (size_t)B * b->planes * Ho * Ho), GROW(1, (size_t)B * b->inplanes * Ho * Ho);
        if (b->has_downsample) GROW(4, (size_t)B * b->planes * 4 * Ho * Ho);
        GROW(0, (size_t)B * b->planes * 4 * Ho * Ho);
        H = Ho;
    }
#undef GROW
}

static void carve_acts(resnet_dev *d, const vf_resnet *r, int B, vf_carver *c) {
    size_t s[6];
    act_sizes(r, B, s);
    const size_t C = d->C, T = (size_t)d->grid * d->grid + 1;
    d->x = c->take<float>(s[0]), d->y = c->take<float>(s[0]), d->t1 = c->take<float>(s[1]), d->t2 = c->take<float>(s[2]);
    d->pooled = c->take<float>(s[3] ? s[3] : 1), d->shortcut = c->take<float>(s[4] ? s[4] : 1);
    d->tokens = c->take<float>((size_t)B * T * C), d->q = c->take<float>((size_t)B * C);
    d->kv = c->take<float>((size_t)B * T * 2 * C), d->attended = c->take<float>((size_t)B * C);
}

static int plan_all(vf_cuda_ctx *ctx, resnet_dev *d, int B, size_t ws_bytes, size_t *need, vf_error *err) {
    const int S = d->cfg.image_size;
    int H = vf_conv_out_size(S, 3, 2, 1);
    TRY(dconv_plan(ctx, &d->stem[0], B, S, ws_bytes, need, err));
    TRY(dconv_plan(ctx, &d->stem[1], B, H, ws_bytes, need, err));
    TRY(dconv_plan(ctx, &d->stem[2], B, H, ws_bytes, need, err));
    H /= 2;
    for (int n = 0; n < d->n_blocks; n++) {
        dblock *b = &d->blocks[n];
        const int Ho = H / b->stride;
        TRY(dconv_plan(ctx, &b->conv1, B, H, ws_bytes, need, err));
        TRY(dconv_plan(ctx, &b->conv2, B, H, ws_bytes, need, err));
        TRY(dconv_plan(ctx, &b->conv3, B, Ho, ws_bytes, need, err));
        if (b->has_downsample) TRY(dconv_plan(ctx, &b->downsample, B, Ho, ws_bytes, need, err));
        H = Ho;
    }
    return 0;
}

static int resnet_forward(vf_cuda_vision *m, const float *pixels, int B, float *out, vf_error *err) {
    resnet_dev *d = (resnet_dev *)m->impl;
    vf_cuda_ctx *ctx = m->ctx;
    size_t need = 0;
    TRY(plan_all(ctx, d, B, d->ws_bytes, &need, err));  // no-op unless B changed
    const int S = d->cfg.image_size;
    int H = vf_conv_out_size(S, 3, 2, 1);
    TRY(dconv_run(ctx, &d->stem[0], pixels, NULL, 1, d->t1, d->ws, d->ws_bytes, err));  // (B, w/2, S/2, S/2)
    TRY(dconv_run(ctx, &d->stem[1], d->t1, NULL, 1, d->t2, d->ws, d->ws_bytes, err));
    TRY(dconv_run(ctx, &d->stem[2], d->t2, NULL, 1, d->y, d->ws, d->ws_bytes, err));    // (B, w, S/2, S/2)
    TRY(vf_cuda_avgpool2d_forward(ctx, d->y, B * d->stem[2].cout, H, H, 2, d->x, err));  // (B, w, S/4, S/4)
    H /= 2;
    float *x = d->x, *y = d->y;
    for (int n = 0; n < d->n_blocks; n++) {
        const dblock *b = &d->blocks[n];
        const int Ho = H / b->stride;
        TRY(dconv_run(ctx, &b->conv1, x, NULL, 1, d->t1, d->ws, d->ws_bytes, err));       // (B, planes, H, H)
        TRY(dconv_run(ctx, &b->conv2, d->t1, NULL, 1, d->t2, d->ws, d->ws_bytes, err));
        const float *mid = d->t2, *shortcut = x;
        if (b->stride > 1) {
            TRY(vf_cuda_avgpool2d_forward(ctx, d->t2, B * b->planes, H, H, b->stride, d->pooled, err));
            mid = d->pooled;
        }
        if (b->has_downsample) {
            const float *src = x;
            if (b->stride > 1) {
                TRY(vf_cuda_avgpool2d_forward(ctx, x, B * b->inplanes, H, H, b->stride, d->t1, err));
                src = d->t1;
            }
            TRY(dconv_run(ctx, &b->downsample, src, NULL, 0, d->shortcut, d->ws, d->ws_bytes, err));
            shortcut = d->shortcut;
        }
        TRY(dconv_run(ctx, &b->conv3, mid, shortcut, 1, y, d->ws, d->ws_bytes, err));     // (B, 4 planes, Ho, Ho)
        float *t = x;
        x = y, y = t;
        H = Ho;
    }
    vf_prof_mark(m, VF_PROF_CONV);
    // attention pool: tokens (B, T, C); k, v for every token, q for the mean token only
    const int C = d->C, HW = d->grid * d->grid, T = HW + 1, hd = C / d->heads;
    TRY(vf_cu_attnpool_tokens(ctx, d->tokens, x, d->pos, B, C, HW, err));
    vf_prof_mark(m, VF_PROF_EMBED);
    vf_gemm kv = {d->tokens, d->kv_w, d->kv_b, NULL, d->kv, CUDA_R_32F, CUDA_R_32F, B * T, C, 2 * C, C, 2 * C, 1, 0.0f};
    TRY(vf_cuda_gemm(ctx, &kv, err));                                                     // (B, T, 2C)
    vf_gemm q = {d->tokens, d->q_w, d->q_b, NULL, d->q, CUDA_R_32F, CUDA_R_32F, B, C, C, T * C, C, 1, 0.0f};
    TRY(vf_cuda_gemm(ctx, &q, err));                                                      // (B, C)
    vf_prof_mark(m, VF_PROF_MATMUL);
    TRY(vf_cu_attention<float>(ctx, d->attended, C, d->q, C, d->kv, d->kv + C, 2 * C, B, 1, T, d->heads, hd,
                               1.0f / sqrtf((float)hd), 0, err));                         // (B, C)
    vf_prof_mark(m, VF_PROF_ATTENTION);
    vf_gemm cp = {d->attended, d->c_w, d->c_b, NULL, out, CUDA_R_32F, CUDA_R_32F, B, C, d->out_dim, C, d->out_dim, 1, 0.0f};
    TRY(vf_cuda_gemm(ctx, &cp, err));                                                     // (B, out_dim)
    vf_prof_mark(m, VF_PROF_MATMUL);
    return 0;
}

static void resnet_destroy(vf_cuda_vision *m) {
    resnet_dev *d = (resnet_dev *)m->impl;
    if (!d) return;
    const vf_dnn_api *dnn = m->ctx->dnn ? ((dnn_state *)m->ctx->dnn)->api : NULL;
    for (int i = 0; i < 3; i++) dconv_destroy(dnn, &d->stem[i]);
    for (int n = 0; d->blocks && n < d->n_blocks; n++) {
        dconv_destroy(dnn, &d->blocks[n].conv1);
        dconv_destroy(dnn, &d->blocks[n].conv2);
        dconv_destroy(dnn, &d->blocks[n].conv3);
        dconv_destroy(dnn, &d->blocks[n].downsample);
    }
    cudaFree(d->ws);
    free(d->blocks);
    free(d);
}

static int put(vf_cuda_ctx *ctx, float *dst, const float *src, size_t n, vf_error *err) {
    if (!dst) return vf_fail(err, "CUDA ResNet: parameter arena sizing bug");
    CU(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
    return 0;
}

static int resnet_create(vf_cuda_vision *m, const vf_resnet *r, vf_error *err) {
    vf_cuda_ctx *ctx = m->ctx;
    resnet_dev *d = (resnet_dev *)calloc(1, sizeof *d);
    if (!d) return vf_fail(err, "CUDA ResNet: out of memory");
    m->impl = d;
    m->forward = resnet_forward;
    m->destroy = resnet_destroy;
    d->cfg = r->cfg;
    d->n_blocks = r->n_blocks;
    const vf_attnpool *p = &r->attnpool;
    d->grid = p->grid, d->C = p->embed_dim, d->heads = p->heads, d->out_dim = p->output_dim;
    if (!(d->blocks = (dblock *)calloc(r->n_blocks, sizeof *d->blocks))) return vf_fail(err, "CUDA ResNet: out of memory");
    TRY(vf_dev_arena_init(&m->params, param_bytes(r), err));
    vf_carver pc = {&m->params, 0, 0};
    for (int i = 0; i < 3; i++) TRY(conv_upload(ctx, &d->stem[i], &r->stem[i], &pc, err));
    for (int n = 0; n < r->n_blocks; n++) {
        const vf_bottleneck *b = &r->blocks[n];
        dblock *db = &d->blocks[n];
        db->inplanes = b->inplanes, db->planes = b->planes, db->stride = b->stride, db->has_downsample = b->has_downsample;
        TRY(conv_upload(ctx, &db->conv1, &b->conv1, &pc, err));
        TRY(conv_upload(ctx, &db->conv2, &b->conv2, &pc, err));
        TRY(conv_upload(ctx, &db->conv3, &b->conv3, &pc, err));
        if (b->has_downsample) TRY(conv_upload(ctx, &db->downsample, &b->downsample, &pc, err));
    }
    const size_t C = d->C, T = (size_t)d->grid * d->grid + 1;
    d->pos = pc.take<float>(T * C), d->kv_w = pc.take<float>(2 * C * C), d->kv_b = pc.take<float>(2 * C);
    d->q_w = pc.take<float>(C * C), d->q_b = pc.take<float>(C);
    d->c_w = pc.take<float>((size_t)d->out_dim * C), d->c_b = pc.take<float>(d->out_dim);
    TRY(put(ctx, d->pos, p->pos, T * C, err));
    TRY(put(ctx, d->kv_w, p->k_w, C * C, err));
    TRY(put(ctx, d->kv_w ? d->kv_w + C * C : NULL, p->v_w, C * C, err));
    TRY(put(ctx, d->kv_b, p->k_b, C, err));
    TRY(put(ctx, d->kv_b ? d->kv_b + C : NULL, p->v_b, C, err));
    TRY(put(ctx, d->q_w, p->q_w, C * C, err));
    TRY(put(ctx, d->q_b, p->q_b, C, err));
    TRY(put(ctx, d->c_w, p->c_w, (size_t)d->out_dim * C, err));
    TRY(put(ctx, d->c_b, p->c_b, d->out_dim, err));
    // activations, then the cuDNN workspace the plans for max_batch ask for (capped at 1 GiB)
    vf_carver ac = {NULL, 0, 0};
    carve_acts(d, r, m->max_batch, &ac);
    TRY(vf_dev_arena_init(&m->acts, ac.bytes + vf_cuda_vision_staging_bytes(m->max_batch, m->image_size, m->out_dim), err));
    vf_carver at = {&m->acts, 0, 0};
    carve_acts(d, r, m->max_batch, &at);
    if (at.failed || pc.failed) return vf_fail(err, "CUDA ResNet: arena sizing bug");
    TRY(vf_cuda_vision_init_staging(m, err));
    size_t need = 0;
    TRY(plan_all(ctx, d, m->max_batch, (size_t)1 << 30, &need, err));
    d->ws_bytes = need;
    if (need) CU(cudaMalloc(&d->ws, need));
    CU(cudaStreamSynchronize(ctx->stream));
    return 0;
}

extern "C" int vf_cuda_resnet_create(vf_cuda_vision **out, vf_cuda_ctx *ctx, const vf_resnet *r, int max_batch,
                                     vf_error *err) {
    *out = NULL;
    if (max_batch < 1) return vf_fail(err, "CUDA ResNet: max batch %d must be positive", max_batch);
    vf_cuda_vision *m = (vf_cuda_vision *)calloc(1, sizeof *m);
    if (!m) return vf_fail(err, "CUDA ResNet: out of memory");
    m->ctx = ctx;
    m->max_batch = max_batch;
    m->image_size = r->cfg.image_size;
    m->out_dim = r->attnpool.output_dim;
    if (resnet_create(m, r, err) != 0) {
        vf_cuda_vision_free(m);
        return vf_error_prefix(err, "CUDA ResNet (batch %d)", max_batch);
    }
    *out = m;
    return 0;
}

#else  // no cudnn.h when this was built: the ResNet towers say so at run time

extern "C" int vf_cuda_conv2d_forward(vf_cuda_ctx *ctx, const vf_conv2d *src, const float *x, int B, int H, int W,
                                      const float *residual, int relu, float *out, vf_error *err) {
    return vf_fail(err, "CUDA conv: this build has no cuDNN (cudnn.h was not found when it was built)");
}

extern "C" int vf_cuda_resnet_create(vf_cuda_vision **out, vf_cuda_ctx *ctx, const vf_resnet *r, int max_batch,
                                     vf_error *err) {
    *out = NULL;
    return vf_fail(err, "CUDA ResNet: this build has no cuDNN (cudnn.h was not found when it was built)");
}

#endif
