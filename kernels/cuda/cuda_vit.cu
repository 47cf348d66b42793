// cuda_vit: CLIP's ViT image tower on the GPU, the forward of cpu/clip_vit.c.
//
// T is the matmul-input type: float (FP32 / TF32 contexts) or bf16 (BF16).
// The residual stream x / res1 stays fp32 in every mode; layer-norm outputs,
// q/k/v, attention outputs and the MLP hidden layer are T.  The q, k and v
// projections are one (3C, C) product; biases and residual adds ride in the
// cuBLASLt epilogue:
//   patches (B*NP, Kp) T    = im2col(pixels), rows zero-padded to Kp = 3PP rounded up to 8
//   pe      (B*NP, C) f32   = patches @ patch_w^T
//   x       (B, T, C) f32   = pre_ln([class, pe] + pos)
//   per layer: ln = LN1(x) T;  qkv (B, T, 3C) T = ln @ Wqkv^T + bqkv
//              atty T = attention(q, k, v);  res1 f32 = x + atty @ Wo^T + bo
//              ln = LN2(res1) T;  fch (B, T, F) T = act(ln @ W1^T + b1)
//              x f32 = res1 + fch @ W2^T + b2
//   cls_ln (B, C) T = post_ln(x[:, 0]);  out (B, D) f32 = cls_ln @ proj^T
#include "cuda/cuda_internal.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

template <typename T> struct vit_layer {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    T *qkv_w, *qkv_b, *o_w, *fc1_w, *fc1_b, *fc2_w;
    void *o_b, *fc2_b;  // fp32 (their products write the fp32 residual stream)
};

template <typename T> struct vit_dev {
    vf_clip_vision_config cfg;
    int D, T_, NP, K, Kp;  // Kp: patch row length K padded to 8 (16-byte bf16 rows)
    T *patch_w, *proj;
    float *class_emb, *pos, *pre_w, *pre_b, *post_w, *post_b;
    vit_layer<T> *layers;  // host array of device pointers
    // activations (B_max)
    T *patches, *ln, *qkv, *atty, *fch, *cls_ln;
    float *x_embed, *x, *res1;
};

template <typename T> static void carve_params(vit_dev<T> *v, vf_carver *c) {
    const size_t C = v->cfg.enc.hidden_size, F = v->cfg.enc.intermediate_size;
    v->patch_w = c->take<T>(C * v->Kp);
    v->class_emb = c->take<float>(C);
    v->pos = c->take<float>((size_t)v->T_ * C);
    v->pre_w = c->take<float>(C), v->pre_b = c->take<float>(C);
    v->post_w = c->take<float>(C), v->post_b = c->take<float>(C);
    v->proj = c->take<T>((size_t)v->D * C);
    for (int l = 0; l < v->cfg.enc.num_layers; l++) {
        vit_layer<T> *L = &v->layers[l];
        L->ln1_w = c->take<float>(C), L->ln1_b = c->take<float>(C);
        L->ln2_w = c->take<float>(C), L->ln2_b = c->take<float>(C);
        L->qkv_w = c->take<T>(3 * C * C), L->qkv_b = c->take<T>(3 * C);
        L->o_w = c->take<T>(C * C), L->o_b = c->take<float>(C);
        L->fc1_w = c->take<T>(F * C), L->fc1_b = c->take<T>(F);
        L->fc2_w = c->take<T>(C * F), L->fc2_b = c->take<float>(C);
    }
}

template <typename T> static void carve_acts(vit_dev<T> *v, vf_carver *c, int B) {
    const size_t C = v->cfg.enc.hidden_size, F = v->cfg.enc.intermediate_size, BT = (size_t)B * v->T_;
    v->patches = c->take<T>((size_t)B * v->NP * v->Kp);
    v->ln = c->take<T>(BT * C);
    v->qkv = c->take<T>(BT * 3 * C);
    v->atty = c->take<T>(BT * C);
    v->fch = c->take<T>(BT * F);
    v->cls_ln = c->take<T>((size_t)B * C);
    v->x_embed = c->take<float>(BT * C);
    v->x = c->take<float>(BT * C);
    v->res1 = c->take<float>(BT * C);
}

template <typename T>
static int upload(vit_dev<T> *v, const vf_vit_weights *w, vf_cuda_ctx *ctx, float *staging, float *host_qkv, vf_error *err) {
    const size_t C = v->cfg.enc.hidden_size, F = v->cfg.enc.intermediate_size;
    float *padded = (float *)calloc(C * v->Kp, sizeof(float));  // (C, Kp), zero past K
    if (!padded) return vf_fail(err, "CUDA ViT: out of memory");
    for (size_t c = 0; c < C; c++) memcpy(padded + c * v->Kp, w->patch_w + c * v->K, v->K * sizeof(float));
    int rc = vf_cu_put<T>(ctx, v->patch_w, padded, C * v->Kp, staging, err);
    free(padded);
    TRY(rc);
    TRY(vf_cu_put<float>(ctx, v->class_emb, w->class_emb, C, staging, err));
    TRY(vf_cu_put<float>(ctx, v->pos, w->pos_emb, (size_t)v->T_ * C, staging, err));
    TRY(vf_cu_put<float>(ctx, v->pre_w, w->pre_ln_w, C, staging, err));
    TRY(vf_cu_put<float>(ctx, v->pre_b, w->pre_ln_b, C, staging, err));
    TRY(vf_cu_put<float>(ctx, v->post_w, w->post_ln_w, C, staging, err));
    TRY(vf_cu_put<float>(ctx, v->post_b, w->post_ln_b, C, staging, err));
    TRY(vf_cu_put<T>(ctx, v->proj, w->projection, (size_t)v->D * C, staging, err));
    for (int l = 0; l < v->cfg.enc.num_layers; l++) {
        const vf_tfm_layer *h = &w->layers[l];
        vit_layer<T> *L = &v->layers[l];
        TRY(vf_cu_put<float>(ctx, L->ln1_w, h->ln1_w, C, staging, err));
        TRY(vf_cu_put<float>(ctx, L->ln1_b, h->ln1_b, C, staging, err));
        TRY(vf_cu_put<float>(ctx, L->ln2_w, h->ln2_w, C, staging, err));
        TRY(vf_cu_put<float>(ctx, L->ln2_b, h->ln2_b, C, staging, err));
        memcpy(host_qkv, h->q_w, C * C * sizeof(float));  // (3C, C): q rows, then k, then v
        memcpy(host_qkv + C * C, h->k_w, C * C * sizeof(float));
        memcpy(host_qkv + 2 * C * C, h->v_w, C * C * sizeof(float));
        TRY(vf_cu_put<T>(ctx, L->qkv_w, host_qkv, 3 * C * C, staging, err));
        memcpy(host_qkv, h->q_b, C * sizeof(float));
        memcpy(host_qkv + C, h->k_b, C * sizeof(float));
        memcpy(host_qkv + 2 * C, h->v_b, C * sizeof(float));
        TRY(vf_cu_put<T>(ctx, L->qkv_b, host_qkv, 3 * C, staging, err));
        TRY(vf_cu_put<T>(ctx, L->o_w, h->o_w, C * C, staging, err));
        TRY(vf_cu_put<float>(ctx, (float *)L->o_b, h->o_b, C, staging, err));
        TRY(vf_cu_put<T>(ctx, L->fc1_w, h->fc1_w, F * C, staging, err));
        TRY(vf_cu_put<T>(ctx, L->fc1_b, h->fc1_b, F, staging, err));
        TRY(vf_cu_put<T>(ctx, L->fc2_w, h->fc2_w, C * F, staging, err));
        TRY(vf_cu_put<float>(ctx, (float *)L->fc2_b, h->fc2_b, C, staging, err));
    }
    CU(cudaStreamSynchronize(ctx->stream));
    return 0;
}

template <typename T> static int vit_forward(vf_cuda_vision *m, const float *pixels, int B, float *out, vf_error *err) {
    vit_dev<T> *v = (vit_dev<T> *)m->impl;
    vf_cuda_ctx *ctx = m->ctx;
    const vf_clip_encoder_config *e = &v->cfg.enc;
    const int C = e->hidden_size, F = e->intermediate_size, NH = e->num_heads, Tn = v->T_, BT = B * Tn;
    const float eps = e->layer_norm_eps, scale = 1.0f / sqrtf((float)(C / NH));
    const cudaDataType_t t = vf_cuda_type<T>::id, f32 = CUDA_R_32F;
    TRY(vf_cu_im2col<T>(ctx, v->patches, v->Kp, pixels, B, v->cfg.image_size, v->cfg.patch_size, err));  // (B, NP, Kp)
    vf_gemm pe = {v->patches, v->patch_w, NULL, NULL, v->res1, t, f32, B * v->NP, v->Kp, C, v->Kp, C, 1, 0.0f};
    TRY(vf_cuda_gemm(ctx, &pe, err));                                                               // (B, NP, C)
    TRY(vf_cu_vit_embed(ctx, v->x_embed, v->res1, v->class_emb, v->pos, B, Tn, C, err));            // (B, T, C)
    vf_prof_mark(m, VF_PROF_EMBED);
    TRY(vf_cu_layernorm<float, float>(ctx, v->x, C, NULL, NULL, v->x_embed, C, v->pre_w, v->pre_b, BT, C, eps, err));
    vf_prof_mark(m, VF_PROF_LAYERNORM);
    for (int l = 0; l < e->num_layers; l++) {
        const vit_layer<T> *L = &v->layers[l];
        TRY(vf_cu_layernorm<float, T>(ctx, v->ln, C, NULL, NULL, v->x, C, L->ln1_w, L->ln1_b, BT, C, eps, err));
        vf_prof_mark(m, VF_PROF_LAYERNORM);
        vf_gemm qkv = {v->ln, L->qkv_w, L->qkv_b, NULL, v->qkv, t, t, BT, C, 3 * C, C, 3 * C, 1, 0.0f};
        TRY(vf_cuda_gemm(ctx, &qkv, err));                                                          // (B, T, 3C)
        vf_prof_mark(m, VF_PROF_MATMUL);
        TRY(vf_cu_attention<T>(ctx, v->atty, C, v->qkv, 3 * C, v->qkv + C, v->qkv + 2 * C, 3 * C, B, Tn, Tn, NH, C / NH,
                               scale, 0, err));                                                     // (B, T, C)
        vf_prof_mark(m, VF_PROF_ATTENTION);
        vf_gemm o = {v->atty, L->o_w, L->o_b, v->x, v->res1, t, f32, BT, C, C, C, C, 1, 1.0f};
        TRY(vf_cuda_gemm(ctx, &o, err));                                                            // res1 = x + o
        vf_prof_mark(m, VF_PROF_MATMUL);
        TRY(vf_cu_layernorm<float, T>(ctx, v->ln, C, NULL, NULL, v->res1, C, L->ln2_w, L->ln2_b, BT, C, eps, err));
        vf_prof_mark(m, VF_PROF_LAYERNORM);
        vf_gemm fc1 = {v->ln, L->fc1_w, L->fc1_b, NULL, v->fch, t, t, BT, C, F, C, F, 1, 0.0f};
        TRY(vf_cuda_gemm(ctx, &fc1, err));                                                          // (B, T, F)
        vf_prof_mark(m, VF_PROF_MATMUL);
        TRY(vf_cu_activation<T>(ctx, e->act, v->fch, v->fch, (long)BT * F, err));
        vf_prof_mark(m, VF_PROF_ACTIVATION);
        vf_gemm fc2 = {v->fch, L->fc2_w, L->fc2_b, v->res1, v->x, t, f32, BT, F, C, F, C, 1, 1.0f};
        TRY(vf_cuda_gemm(ctx, &fc2, err));                                                          // x = res1 + mlp
        vf_prof_mark(m, VF_PROF_MATMUL);
    }
    TRY(vf_cu_layernorm<float, T>(ctx, v->cls_ln, C, NULL, NULL, v->x, Tn * C, v->post_w, v->post_b, B, C, eps, err));
    vf_prof_mark(m, VF_PROF_LAYERNORM);
    vf_gemm proj = {v->cls_ln, v->proj, NULL, NULL, out, t, f32, B, C, v->D, C, v->D, 1, 0.0f};
    TRY(vf_cuda_gemm(ctx, &proj, err));                                                             // (B, D)
    vf_prof_mark(m, VF_PROF_MATMUL);
    return 0;
}

template <typename T> static void vit_destroy(vf_cuda_vision *m) {
    vit_dev<T> *v = (vit_dev<T> *)m->impl;
    if (v) free(v->layers);
    free(v);
}

template <typename T>
static int vit_create(vf_cuda_vision *m, const vf_vit_weights *w, vf_error *err) {
    vf_cuda_ctx *ctx = m->ctx;
    vit_dev<T> *v = (vit_dev<T> *)calloc(1, sizeof *v);
    if (!v) return vf_fail(err, "CUDA ViT: out of memory");
    m->impl = v;
    m->forward = vit_forward<T>;
    m->destroy = vit_destroy<T>;
    v->cfg = w->cfg;
    v->D = w->projection_dim;
    const int G = w->cfg.image_size / w->cfg.patch_size, L = w->cfg.enc.num_layers;
    v->NP = G * G, v->T_ = G * G + 1, v->K = 3 * w->cfg.patch_size * w->cfg.patch_size, v->Kp = (v->K + 7) & ~7;
    const size_t C = w->cfg.enc.hidden_size, F = w->cfg.enc.intermediate_size;
    if (!(v->layers = (vit_layer<T> *)calloc(L ? L : 1, sizeof *v->layers))) return vf_fail(err, "CUDA ViT: out of memory");
    vf_carver count = {NULL, 0, 0};
    carve_params(v, &count);
    TRY(vf_dev_arena_init(&m->params, count.bytes, err));
    vf_carver take = {&m->params, 0, 0};
    carve_params(v, &take);
    vf_carver acount = {NULL, 0, 0};
    carve_acts(v, &acount, m->max_batch);
    TRY(vf_dev_arena_init(&m->acts, acount.bytes + vf_cuda_vision_staging_bytes(m->max_batch, m->image_size, m->out_dim), err));
    vf_carver atake = {&m->acts, 0, 0};
    carve_acts(v, &atake, m->max_batch);
    if (take.failed || atake.failed) return vf_fail(err, "CUDA ViT: arena sizing bug");
    TRY(vf_cuda_vision_init_staging(m, err));
    // Staging for the bf16 conversion: the largest tensor uploaded.
    size_t big = 3 * C * C;
    const size_t sizes[] = {F * C, C * v->Kp, (size_t)v->T_ * C, (size_t)v->D * C};
    for (size_t s : sizes) big = s > big ? s : big;
    float *staging = NULL, *host_qkv = (float *)malloc(3 * C * C * sizeof(float));
    if (!host_qkv) return vf_fail(err, "CUDA ViT: out of memory");
    cudaError_t e = cudaMalloc((void **)&staging, big * sizeof(float));
    int rc = e == cudaSuccess ? upload(v, w, ctx, staging, host_qkv, err)
                              : vf_fail(err, "CUDA ViT: upload staging: %s", cudaGetErrorString(e));
    cudaFree(staging);
    free(host_qkv);
    return rc;
}

extern "C" int vf_cuda_vit_create(vf_cuda_vision **out, vf_cuda_ctx *ctx, const vf_vit_weights *w, int max_batch,
                                  vf_error *err) {
    *out = NULL;
    const vf_clip_vision_config *c = &w->cfg;
    if (max_batch < 1) return vf_fail(err, "CUDA ViT: max batch %d must be positive", max_batch);
    if (c->enc.num_heads < 1 || c->enc.hidden_size % c->enc.num_heads)
        return vf_fail(err, "CUDA ViT: %d heads do not divide width %d", c->enc.num_heads, c->enc.hidden_size);
    vf_cuda_vision *m = (vf_cuda_vision *)calloc(1, sizeof *m);
    if (!m) return vf_fail(err, "CUDA ViT: out of memory");
    m->ctx = ctx;
    m->max_batch = max_batch;
    m->image_size = c->image_size;
    m->out_dim = w->projection_dim;
    int rc = ctx->prec == VF_CUDA_BF16 ? vit_create<bf16>(m, w, err) : vit_create<float>(m, w, err);
    if (rc != 0) {
        vf_cuda_vision_free(m);
        return vf_error_prefix(err, "CUDA ViT (%s, batch %d)", vf_cuda_precision_name(ctx->prec), max_batch);
    }
    *out = m;
    return 0;
}
