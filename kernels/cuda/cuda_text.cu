// cuda_text: CLIP's causal text tower on the GPU — the forward of
// cpu/clip_text.c keeping every activation, and the input-embedding backward
// of cpu/clip_text_backward.c (CLIP is frozen: no weight gradients).  fp32
// storage; matmuls fp32 or TF32 by the context (BF16 contexts use TF32: the
// CoOp step is a few prompts of a few dozen tokens, precision is cheap).
// q/k/v are one (3C, C) product, so their input gradient is one product too.
#include "cuda/cuda_internal.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct text_layer {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b, *qkv_w, *qkv_b, *o_w, *o_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
};
struct text_layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *res1, *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_act;
};

struct vf_cuda_text {
    vf_cuda_ctx *ctx;
    vf_clip_text_config cfg;
    int D, B_max, T_max, B, T;
    vf_dev_arena params, acts;
    float *pos, *final_w, *final_b, *proj;
    text_layer *layers;     // host arrays of device pointers
    text_layer_acts *la;
    float **hidden;         // (L+1) of (B, T, C)
    int *eot;               // (B)
    float *emb, *pooled, *pooled_ln, *pooled_mean, *pooled_rstd, *out;
    // backward
    float *dout, *dpooled_ln, *dpooled, *dx_a, *dx_b, *demb, *dres1, *dln, *datty, *dqkv, *dfch_act, *dfch, *att_scratch;
};

static void carve_params(vf_cuda_text *m, vf_carver *c) {
    const size_t C = m->cfg.enc.hidden_size, F = m->cfg.enc.intermediate_size;
    m->pos = c->take<float>((size_t)m->cfg.max_positions * C);
    m->final_w = c->take<float>(C), m->final_b = c->take<float>(C);
    m->proj = c->take<float>((size_t)m->D * C);
    for (int l = 0; l < m->cfg.enc.num_layers; l++) {
        text_layer *L = &m->layers[l];
        L->ln1_w = c->take<float>(C), L->ln1_b = c->take<float>(C), L->ln2_w = c->take<float>(C), L->ln2_b = c->take<float>(C);
        L->qkv_w = c->take<float>(3 * C * C), L->qkv_b = c->take<float>(3 * C);
        L->o_w = c->take<float>(C * C), L->o_b = c->take<float>(C);
        L->fc1_w = c->take<float>(F * C), L->fc1_b = c->take<float>(F);
        L->fc2_w = c->take<float>(C * F), L->fc2_b = c->take<float>(C);
    }
}

static void carve_acts(vf_cuda_text *m, vf_carver *c) {
    const vf_clip_encoder_config *e = &m->cfg.enc;
    const size_t C = e->hidden_size, F = e->intermediate_size, B = m->B_max, BT = B * m->T_max;
    for (int l = 0; l <= e->num_layers; l++) m->hidden[l] = c->take<float>(BT * C);
    for (int l = 0; l < e->num_layers; l++) {
        text_layer_acts *a = &m->la[l];
        a->ln1 = c->take<float>(BT * C), a->ln1_mean = c->take<float>(BT), a->ln1_rstd = c->take<float>(BT);
        a->qkv = c->take<float>(BT * 3 * C), a->atty = c->take<float>(BT * C), a->res1 = c->take<float>(BT * C);
        a->ln2 = c->take<float>(BT * C), a->ln2_mean = c->take<float>(BT), a->ln2_rstd = c->take<float>(BT);
        a->fch = c->take<float>(BT * F), a->fch_act = c->take<float>(BT * F);
    }
    m->eot = c->take<int>(B);
    m->emb = c->take<float>(BT * C);
    m->pooled = c->take<float>(B * C), m->pooled_ln = c->take<float>(B * C);
    m->pooled_mean = c->take<float>(B), m->pooled_rstd = c->take<float>(B);
    m->out = c->take<float>(B * m->D), m->dout = c->take<float>(B * m->D);
    m->dpooled_ln = c->take<float>(B * C), m->dpooled = c->take<float>(B * C);
    m->dx_a = c->take<float>(BT * C), m->dx_b = c->take<float>(BT * C), m->demb = c->take<float>(BT * C);
    m->dres1 = c->take<float>(BT * C), m->dln = c->take<float>(BT * C), m->datty = c->take<float>(BT * C);
    m->dqkv = c->take<float>(BT * 3 * C), m->dfch_act = c->take<float>(BT * F), m->dfch = c->take<float>(BT * F);
    m->att_scratch = c->take<float>(vf_cuda_attention_backward_scratch(m->B_max, m->T_max, e->num_heads));
}

static int put(vf_cuda_ctx *ctx, float *dst, const float *src, size_t n, vf_error *err) {
    CU(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
    return 0;
}

static int upload(vf_cuda_text *m, const vf_clip_text_weights *w, vf_error *err) {
    vf_cuda_ctx *ctx = m->ctx;
    const size_t C = m->cfg.enc.hidden_size, F = m->cfg.enc.intermediate_size;
    TRY(put(ctx, m->pos, w->position_embedding, (size_t)m->cfg.max_positions * C, err));
    TRY(put(ctx, m->final_w, w->final_ln_w, C, err));
    TRY(put(ctx, m->final_b, w->final_ln_b, C, err));
    TRY(put(ctx, m->proj, w->projection, (size_t)m->D * C, err));
    for (int l = 0; l < m->cfg.enc.num_layers; l++) {
        const vf_tfm_layer *h = &w->layers[l];
        const text_layer *L = &m->layers[l];
        TRY(put(ctx, L->ln1_w, h->ln1_w, C, err));
        TRY(put(ctx, L->ln1_b, h->ln1_b, C, err));
        TRY(put(ctx, L->ln2_w, h->ln2_w, C, err));
        TRY(put(ctx, L->ln2_b, h->ln2_b, C, err));
        TRY(put(ctx, L->qkv_w, h->q_w, C * C, err));  // (3C, C): q rows, k rows, v rows
        TRY(put(ctx, L->qkv_w + C * C, h->k_w, C * C, err));
        TRY(put(ctx, L->qkv_w + 2 * C * C, h->v_w, C * C, err));
        TRY(put(ctx, L->qkv_b, h->q_b, C, err));
        TRY(put(ctx, L->qkv_b + C, h->k_b, C, err));
        TRY(put(ctx, L->qkv_b + 2 * C, h->v_b, C, err));
        TRY(put(ctx, L->o_w, h->o_w, C * C, err));
        TRY(put(ctx, L->o_b, h->o_b, C, err));
        TRY(put(ctx, L->fc1_w, h->fc1_w, F * C, err));
        TRY(put(ctx, L->fc1_b, h->fc1_b, F, err));
        TRY(put(ctx, L->fc2_w, h->fc2_w, C * F, err));
        TRY(put(ctx, L->fc2_b, h->fc2_b, C, err));
    }
    CU(cudaStreamSynchronize(ctx->stream));
    return 0;
}

extern "C" void vf_cuda_text_free(vf_cuda_text *m) {
    if (!m) return;
    if (m->ctx) cudaStreamSynchronize(m->ctx->stream);
    vf_dev_arena_free(&m->params);
    vf_dev_arena_free(&m->acts);
    free(m->layers);
    free(m->la);
    free(m->hidden);
    free(m);
}

static int text_create(vf_cuda_text *m, const vf_clip_text_weights *w, vf_error *err) {
    const int L = m->cfg.enc.num_layers;
    m->layers = (text_layer *)calloc(L + 1, sizeof *m->layers);
    m->la = (text_layer_acts *)calloc(L + 1, sizeof *m->la);
    m->hidden = (float **)calloc(L + 1, sizeof *m->hidden);
    if (!m->layers || !m->la || !m->hidden) return vf_fail(err, "CUDA text tower: out of memory");
    vf_carver pc = {NULL, 0, 0}, ac = {NULL, 0, 0};
    carve_params(m, &pc);
    carve_acts(m, &ac);
    TRY(vf_dev_arena_init(&m->params, pc.bytes, err));
    TRY(vf_dev_arena_init(&m->acts, ac.bytes, err));
    vf_carver pt = {&m->params, 0, 0}, at = {&m->acts, 0, 0};
    carve_params(m, &pt);
    carve_acts(m, &at);
    if (pt.failed || at.failed) return vf_fail(err, "CUDA text tower: arena sizing bug");
    return upload(m, w, err);
}

extern "C" int vf_cuda_text_create(vf_cuda_text **out, vf_cuda_ctx *ctx, const vf_clip_text_weights *w, int B_max,
                                   int T_max, vf_error *err) {
    *out = NULL;
    const vf_clip_encoder_config *e = &w->cfg.enc;
    if (B_max < 1 || T_max < 1 || T_max > w->cfg.max_positions)
        return vf_fail(err, "CUDA text tower: batch %d / length %d out of range (length 1..%d)", B_max, T_max,
                       w->cfg.max_positions);
    if (e->num_heads < 1 || e->hidden_size % e->num_heads)
        return vf_fail(err, "CUDA text tower: %d heads do not divide width %d", e->num_heads, e->hidden_size);
    vf_cuda_text *m = (vf_cuda_text *)calloc(1, sizeof *m);
    if (!m) return vf_fail(err, "CUDA text tower: out of memory");
    m->ctx = ctx;
    m->cfg = w->cfg;
    m->D = w->projection_dim;
    m->B_max = B_max;
    m->T_max = T_max;
    if (text_create(m, w, err) != 0) {
        vf_cuda_text_free(m);
        return vf_error_prefix(err, "CUDA text tower (batch %d x %d)", B_max, T_max);
    }
    *out = m;
    return 0;
}

static vf_gemm linear(const float *A, const float *W, const float *bias, const float *res, float *D, int N, int K, int OC) {
    vf_gemm g = {A, W, bias, res, D, CUDA_R_32F, CUDA_R_32F, N, K, OC, K, OC, 1, res ? 1.0f : 0.0f};
    return g;
}
// D (N, OC) = A (N, K) @ W, W (K, OC) row-major: the input gradient of a Linear whose weight is W.
static vf_gemm linear_grad(const float *A, const float *W, float *D, int N, int K, int OC) {
    vf_gemm g = {A, W, NULL, NULL, D, CUDA_R_32F, CUDA_R_32F, N, K, OC, K, OC, 0, 0.0f};
    return g;
}

extern "C" int vf_cuda_text_forward(vf_cuda_text *m, const float *emb, const int *eot, int B, int T, float *out,
                                    vf_error *err) {
    vf_cuda_ctx *ctx = m->ctx;
    const vf_clip_encoder_config *e = &m->cfg.enc;
    const int C = e->hidden_size, F = e->intermediate_size, NH = e->num_heads, L = e->num_layers, BT = B * T;
    const float eps = e->layer_norm_eps, scale = 1.0f / sqrtf((float)(C / NH));
    if (B <= 0 || B > m->B_max || T <= 0 || T > m->T_max)
        return vf_fail(err, "CUDA text forward: batch %d x length %d exceeds the activations' %d x %d", B, T, m->B_max, m->T_max);
    for (int b = 0; b < B; b++)
        if (eot[b] < 0 || eot[b] >= T)
            return vf_fail(err, "CUDA text forward: EOT position %d of sequence %d is outside 0..%d", eot[b], b, T - 1);
    CU(cudaMemcpyAsync(m->emb, emb, (size_t)BT * C * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
    CU(cudaMemcpyAsync(m->eot, eot, (size_t)B * sizeof(int), cudaMemcpyHostToDevice, ctx->stream));
    TRY(vf_cu_add_positions(ctx, m->hidden[0], m->emb, m->pos, B, T, C, err));  // (B, T, C)
    for (int l = 0; l < L; l++) {
        const text_layer *W = &m->layers[l];
        const text_layer_acts *a = &m->la[l];
        float *x = m->hidden[l], *y = m->hidden[l + 1];
        TRY(vf_cu_layernorm<float, float>(ctx, a->ln1, C, a->ln1_mean, a->ln1_rstd, x, C, W->ln1_w, W->ln1_b, BT, C, eps, err));
        vf_gemm g = linear(a->ln1, W->qkv_w, W->qkv_b, NULL, a->qkv, BT, C, 3 * C);  // (B, T, 3C)
        TRY(vf_cuda_gemm(ctx, &g, err));
        TRY(vf_cu_attention<float>(ctx, a->atty, C, a->qkv, 3 * C, a->qkv + C, a->qkv + 2 * C, 3 * C, B, T, T, NH, C / NH,
                                   scale, 1, err));                                  // (B, T, C)
        g = linear(a->atty, W->o_w, W->o_b, x, a->res1, BT, C, C);                 // res1 = x + o
        TRY(vf_cuda_gemm(ctx, &g, err));
        TRY(vf_cu_layernorm<float, float>(ctx, a->ln2, C, a->ln2_mean, a->ln2_rstd, a->res1, C, W->ln2_w, W->ln2_b, BT, C, eps,
                                          err));
        g = linear(a->ln2, W->fc1_w, W->fc1_b, NULL, a->fch, BT, C, F);            // (B, T, F)
        TRY(vf_cuda_gemm(ctx, &g, err));
        TRY(vf_cu_activation<float>(ctx, e->act, a->fch_act, a->fch, (long)BT * F, err));
        g = linear(a->fch_act, W->fc2_w, W->fc2_b, a->res1, y, BT, F, C);          // y = res1 + mlp
        TRY(vf_cuda_gemm(ctx, &g, err));
    }
    TRY(vf_cu_gather_rows(ctx, m->pooled, m->hidden[L], m->eot, B, T, C, err));   // (B, C)
    TRY(vf_cu_layernorm<float, float>(ctx, m->pooled_ln, C, m->pooled_mean, m->pooled_rstd, m->pooled, C, m->final_w,
                                      m->final_b, B, C, eps, err));
    vf_gemm g = linear(m->pooled_ln, m->proj, NULL, NULL, m->out, B, C, m->D);     // (B, D)
    TRY(vf_cuda_gemm(ctx, &g, err));
    CU(cudaMemcpyAsync(out, m->out, (size_t)B * m->D * sizeof(float), cudaMemcpyDeviceToHost, ctx->stream));
    CU(cudaStreamSynchronize(ctx->stream));
    m->B = B;
    m->T = T;
    return 0;
}

// dx_in (B, T, C) = d layer(x_in) given dx_out, as vf_tfm_layer_backward.
static int layer_backward(vf_cuda_text *m, int l, const float *x_in, const float *dx_out, float *dx_in, vf_error *err) {
    vf_cuda_ctx *ctx = m->ctx;
    const vf_clip_encoder_config *e = &m->cfg.enc;
    const int B = m->B, T = m->T, BT = B * T, C = e->hidden_size, F = e->intermediate_size, NH = e->num_heads;
    const float scale = 1.0f / sqrtf((float)(C / NH));
    const text_layer *W = &m->layers[l];
    const text_layer_acts *a = &m->la[l];
    const size_t nC = (size_t)BT * C * sizeof(float), nF = (size_t)BT * F * sizeof(float);
    // out = res1 + fc2(act(fc1(ln2(res1))))
    CU(cudaMemcpyAsync(m->dres1, dx_out, nC, cudaMemcpyDeviceToDevice, ctx->stream));
    vf_gemm g = linear_grad(dx_out, W->fc2_w, m->dfch_act, BT, C, F);              // (B, T, F)
    TRY(vf_cuda_gemm(ctx, &g, err));
    CU(cudaMemsetAsync(m->dfch, 0, nF, ctx->stream));
    TRY(vf_cuda_activation_backward(ctx, e->act, m->dfch, a->fch, m->dfch_act, (long)BT * F, err));
    g = linear_grad(m->dfch, W->fc1_w, m->dln, BT, F, C);                          // (B, T, C)
    TRY(vf_cuda_gemm(ctx, &g, err));
    TRY(vf_cuda_layernorm_backward(ctx, m->dres1, m->dln, a->res1, W->ln2_w, a->ln2_mean, a->ln2_rstd, BT, C, err));
    // res1 = x_in + out_proj(attention(qkv(ln1(x_in))))
    CU(cudaMemcpyAsync(dx_in, m->dres1, nC, cudaMemcpyDeviceToDevice, ctx->stream));
    g = linear_grad(m->dres1, W->o_w, m->datty, BT, C, C);                         // (B, T, C)
    TRY(vf_cuda_gemm(ctx, &g, err));
    CU(cudaMemsetAsync(m->dqkv, 0, 3 * nC, ctx->stream));
    TRY(vf_cuda_attention_backward(ctx, m->dqkv, m->dqkv + C, m->dqkv + 2 * C, m->att_scratch, m->datty, a->qkv,
                                   a->qkv + C, a->qkv + 2 * C, B, T, C, NH, 3 * C, scale, 1, err));
    g = linear_grad(m->dqkv, W->qkv_w, m->dln, BT, 3 * C, C);                      // (B, T, C)
    TRY(vf_cuda_gemm(ctx, &g, err));
    return vf_cuda_layernorm_backward(ctx, dx_in, m->dln, x_in, W->ln1_w, a->ln1_mean, a->ln1_rstd, BT, C, err);
}

extern "C" int vf_cuda_text_backward(vf_cuda_text *m, const float *dout, float *demb, vf_error *err) {
    vf_cuda_ctx *ctx = m->ctx;
    const vf_clip_encoder_config *e = &m->cfg.enc;
    const int B = m->B, T = m->T, C = e->hidden_size, L = e->num_layers;
    if (B <= 0 || T <= 0) return vf_fail(err, "CUDA text backward: no forward pass to differentiate");
    CU(cudaMemcpyAsync(m->dout, dout, (size_t)B * m->D * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
    vf_gemm g = linear_grad(m->dout, m->proj, m->dpooled_ln, B, m->D, C);          // (B, C)
    TRY(vf_cuda_gemm(ctx, &g, err));
    CU(cudaMemsetAsync(m->dpooled, 0, (size_t)B * C * sizeof(float), ctx->stream));
    TRY(vf_cuda_layernorm_backward(ctx, m->dpooled, m->dpooled_ln, m->pooled, m->final_w, m->pooled_mean, m->pooled_rstd,
                                   B, C, err));
    float *dx = m->dx_a, *dx_next = m->dx_b;                                         // (B, T, C)
    CU(cudaMemsetAsync(dx, 0, (size_t)B * T * C * sizeof(float), ctx->stream));
    TRY(vf_cu_scatter_rows(ctx, dx, m->dpooled, m->eot, B, T, C, err));
    for (int l = L - 1; l >= 0; l--) {
        float *target = l == 0 ? m->demb : dx_next;
        TRY(layer_backward(m, l, m->hidden[l], dx, target, err));
        dx_next = dx;
        dx = target;
    }
    CU(cudaMemcpyAsync(demb, dx, (size_t)B * T * C * sizeof(float), cudaMemcpyDeviceToHost, ctx->stream));
    CU(cudaStreamSynchronize(ctx->stream));
    return 0;
}
