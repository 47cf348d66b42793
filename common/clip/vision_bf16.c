/* vision_bf16: a vision tower's bf16 weights for the CPU (issue 18; see
 * vf_vision_set_cpu_bf16 in clip_model.h and cpu/matmul_bf16.h).
 *
 * One allocation (params_bf16) holds, for a ViT, the patch embedding and
 * each layer's four Linear layers (q;k;v stacked, out_proj, fc1, fc2):
 * descriptors and packed weights (cpu/matmul_bf16.h), for a ModifiedResNet every
 * convolution's weight (plain bf16); it is laid
 * out by one carve function run twice, counting then carving (as
 * util/arena.h does).  The fp32 weights are left as they are: switching
 * back to fp32 only clears the pointers and frees the block. */
#include "clip/clip_model.h"
#include "cpu/matmul_bf16.h"

#include <stdlib.h>
#include <string.h>

typedef struct block { unsigned char *base; size_t used; } block; /* base NULL: counting */

static void *take(block *a, size_t bytes) {
    void *p = a->base ? a->base + a->used : NULL;
    a->used += (bytes + 63) / 64 * 64;
    return p;
}

/* The bf16 copy of n fp32 values (NULL while counting). */
static const uint16_t *to_bf16(block *a, const float *src, size_t n) {
    uint16_t *q = take(a, n * sizeof(uint16_t));
    if (q) vf_bf16_from_f32(q, src, (long)n);
    return q;
}

/* A Linear layer's packed bf16 weight, described in *slot (slot NULL while counting). */
static int linear_carve(vf_bf16_linear *slot, block *a, const float *w, int IC, int OC, const char *what, int layer,
                        vf_error *err) {
    const size_t bytes = vf_bf16_linear_bytes(IC, OC);
    if (!bytes) return vf_fail(err, "bf16: oneDNN has no packed layout for %s %d's (%d, %d) weight", what, layer, OC, IC);
    void *q = take(a, bytes);
    if (q && vf_bf16_linear_pack(q, w, IC, OC))
        return vf_fail(err, "bf16: packing %s %d's (%d, %d) weight failed (out of memory?)", what, layer, OC, IC);
    if (slot) *slot = (vf_bf16_linear){q, IC, OC};
    return 0;
}

static int vit_carve(vf_vit_weights *w, block *a, vf_error *err) {
    const int C = w->cfg.enc.hidden_size, F = w->cfg.enc.intermediate_size, P = w->cfg.patch_size;
    vf_bf16_linear *patch = take(a, sizeof *patch);
    if (linear_carve(patch, a, w->patch_w, 3 * P * P, C, "patch embedding", 0, err)) return -1;
    if (patch) w->patch_bf16 = patch;
    for (int l = 0; l < w->cfg.enc.num_layers; l++) {
        vf_tfm_layer *L = &w->layers[l];
        const float *qkv = L->qkv_w;
        if (!qkv) { /* OpenCLIP: q, k, v are row blocks of the fused in_proj, so already stacked */
            if (L->k_w != L->q_w + (size_t)C * C || L->v_w != L->q_w + 2 * (size_t)C * C || L->k_b != L->q_b + C ||
                L->v_b != L->q_b + 2 * C)
                return vf_fail(err, "bf16: layer %d's q, k and v projections are not stacked", l);
            qkv = L->q_w;
        }
        vf_bf16_linear *lin = take(a, sizeof *lin * VF_TFM_BF16_COUNT);
        const float *src[VF_TFM_BF16_COUNT] = {qkv, L->o_w, L->fc1_w, L->fc2_w};
        const int in[VF_TFM_BF16_COUNT] = {C, C, C, F}, out[VF_TFM_BF16_COUNT] = {3 * C, C, F, C};
        for (int i = 0; i < VF_TFM_BF16_COUNT; i++)
            if (linear_carve(lin ? &lin[i] : NULL, a, src[i], in[i], out[i], "layer", l, err)) return -1;
        if (lin) L->bf16 = lin;
    }
    return 0;
}

static void conv_carve(vf_conv2d *c, block *a) {
    const uint16_t *q = to_bf16(a, c->weight, (size_t)c->cout * c->cin * c->kh * c->kw);
    if (q) c->weight_bf16 = q;
}

static void resnet_carve(vf_resnet *r, block *a) {
    for (int i = 0; i < 3; i++) conv_carve(&r->stem[i], a);
    for (int n = 0; n < r->n_blocks; n++) {
        vf_bottleneck *b = &r->blocks[n];
        conv_carve(&b->conv1, a), conv_carve(&b->conv2, a), conv_carve(&b->conv3, a);
        if (b->has_downsample) conv_carve(&b->downsample, a);
    }
}

static int carve(vf_vision_tower *t, block *a, vf_error *err) {
    if (t->kind == VF_VISION_VIT) return vit_carve(&t->u.vit.w, a, err);
    if (t->kind == VF_VISION_RESNET) return resnet_carve(&t->u.resnet.net, a), 0;
    return vf_fail(err, "bf16: unknown vision tower kind %d", (int)t->kind);
}

static void clear(vf_vision_tower *t) {
    if (t->kind == VF_VISION_VIT) {
        for (int l = 0; l < t->u.vit.w.cfg.enc.num_layers; l++) t->u.vit.w.layers[l].bf16 = NULL;
        t->u.vit.w.patch_bf16 = NULL;
    }
    if (t->kind == VF_VISION_RESNET) {
        vf_resnet *r = &t->u.resnet.net;
        for (int i = 0; i < 3; i++) r->stem[i].weight_bf16 = NULL;
        for (int n = 0; n < r->n_blocks; n++) {
            vf_bottleneck *b = &r->blocks[n];
            b->conv1.weight_bf16 = b->conv2.weight_bf16 = b->conv3.weight_bf16 = b->downsample.weight_bf16 = NULL;
        }
    }
    free(t->params_bf16);
    t->params_bf16 = NULL;
    t->cpu_bf16 = 0;
}

int vf_vision_set_cpu_bf16(vf_vision_tower *t, int on, vf_error *err) {
    if (!on) {
        if (t->cpu_bf16) clear(t);
        return 0;
    }
    if (t->cpu_bf16) return 0;
    char why[192];
    if (!vf_cpu_bf16_available(why, sizeof why)) return vf_fail(err, "bf16 on the CPU: %s", why);
    block b = {NULL, 0};
    if (carve(t, &b, err)) return -1;
    t->params_bf16 = b.base = aligned_alloc(64, b.used ? b.used : 64);
    if (!b.base) return vf_fail(err, "bf16 weights: out of memory for %zu bytes", b.used);
    b.used = 0;
    if (carve(t, &b, err)) { clear(t); return -1; }
    t->cpu_bf16 = 1;
    return 0;
}
