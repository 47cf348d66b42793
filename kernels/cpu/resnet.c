/* resnet: ModifiedResNet forward on the CPU (see resnet.h).  Activations are
 * CNHW (conv.h) from the stem to layer4; the attention pool turns them into
 * (B, T, C) tokens. */
#include "cpu/resnet.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- parameter layout --------------------------------------------------------

static void conv_layout(vf_conv2d *c, int cin, int cout, int k, int stride, int pad, vf_arena *a) {
    c->cin = cin, c->cout = cout, c->kh = c->kw = k, c->stride = stride, c->pad = pad;
    c->weight = vf_arena_floats(a, (size_t)cout * cin * k * k);
    c->bias = vf_arena_floats(a, cout);
}

// Walks the architecture: fills shapes and carves the block descriptors and
// every weight out of the parameter arena, in both of its passes (util/arena.h).
static void resnet_layout(vf_resnet *r, vf_arena *a) {
    const vf_resnet_config *cfg = &r->cfg;
    int w = cfg->width;
    r->blocks = vf_arena_alloc(a, sizeof *r->blocks * r->n_blocks);
    conv_layout(&r->stem[0], 3, w / 2, 3, 2, 1, a);
    conv_layout(&r->stem[1], w / 2, w / 2, 3, 1, 1, a);
    conv_layout(&r->stem[2], w / 2, w, 3, 1, 1, a);
    int inplanes = w, n = 0;
    for (int s = 0; s < 4; s++) {
        int planes = w << s;
        for (int i = 0; i < cfg->layers[s]; i++, n++) {
            vf_bottleneck scratch, *b = r->blocks ? &r->blocks[n] : &scratch;  // counting: no blocks yet
            b->inplanes = inplanes, b->planes = planes, b->stride = (i == 0 && s > 0) ? 2 : 1;
            conv_layout(&b->conv1, inplanes, planes, 1, 1, 0, a);
            conv_layout(&b->conv2, planes, planes, 3, 1, 1, a);
            conv_layout(&b->conv3, planes, planes * 4, 1, 1, 0, a);
            b->has_downsample = b->stride > 1 || inplanes != planes * 4;
            if (b->has_downsample) conv_layout(&b->downsample, inplanes, planes * 4, 1, 1, 0, a);
            inplanes = planes * 4;
        }
    }
    vf_attnpool *p = &r->attnpool;
    p->grid = cfg->image_size / 32, p->embed_dim = w * 32, p->heads = cfg->heads, p->output_dim = cfg->output_dim;
    size_t C = p->embed_dim, T = (size_t)p->grid * p->grid + 1;
    p->pos = vf_arena_floats(a, T * C);
    p->q_w = vf_arena_floats(a, C * C), p->q_b = vf_arena_floats(a, C);
    p->k_w = vf_arena_floats(a, C * C), p->k_b = vf_arena_floats(a, C);
    p->v_w = vf_arena_floats(a, C * C), p->v_b = vf_arena_floats(a, C);
    p->c_w = vf_arena_floats(a, (size_t)p->output_dim * C), p->c_b = vf_arena_floats(a, p->output_dim);
}

int vf_resnet_init(vf_resnet *r, const vf_resnet_config *cfg, vf_error *err) {
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    for (int s = 0; s < 4; s++) {
        if (cfg->layers[s] < 1 || cfg->layers[s] > 256)
            return vf_fail(err, "ModifiedResNet: layers[%d] = %d is out of range", s, cfg->layers[s]);
        r->n_blocks += cfg->layers[s];
    }
    if (cfg->width < 2 || cfg->width % 2 || cfg->width > 4096)
        return vf_fail(err, "ModifiedResNet: width %d must be even and in 2..4096", cfg->width);
    if (cfg->image_size < 32 || cfg->image_size % 32 || cfg->image_size > 4096)
        return vf_fail(err, "ModifiedResNet: image_size %d must be a multiple of 32 (up to 4096)", cfg->image_size);
    if (cfg->heads < 1 || (cfg->width * 32) % cfg->heads)
        return vf_fail(err, "ModifiedResNet: %d heads do not divide the pooled width %d", cfg->heads, cfg->width * 32);
    if (cfg->output_dim < 1 || cfg->output_dim > 65536)
        return vf_fail(err, "ModifiedResNet: output_dim %d is out of range", cfg->output_dim);
    // one arena: the block descriptors, then every weight
    vf_arena_plan(&r->params);
    resnet_layout(r, &r->params);
    if (vf_arena_commit(&r->params, err)) return vf_error_prefix(err, "ModifiedResNet parameters");
    resnet_layout(r, &r->params);
    return 0;
}

void vf_resnet_free(vf_resnet *r) {
    vf_arena_free(&r->params);
    r->blocks = NULL;
}

// ---- activations -------------------------------------------------------------

typedef struct act_sizes {
    size_t x, t1, t2, pooled, shortcut, col;  // floats for the whole batch
} act_sizes;

static void grow(size_t *m, size_t v) { if (v > *m) *m = v; }

// Mirrors vf_resnet_forward's use of the buffers, recording the largest need of each.
static act_sizes plan_acts(const vf_resnet *r, int B) {
    act_sizes s = {0};
    int S = r->cfg.image_size;
    int H = vf_conv_out_size(S, 3, 2, 1);
    size_t hw = (size_t)H * H;
    grow(&s.col, vf_conv2d_col_floats(&r->stem[0], B, S, S));
    grow(&s.col, vf_conv2d_col_floats(&r->stem[1], B, H, H));
    grow(&s.col, vf_conv2d_col_floats(&r->stem[2], B, H, H));
    grow(&s.t1, (size_t)B * r->stem[0].cout * hw);
    grow(&s.t2, (size_t)B * r->stem[1].cout * hw);
    grow(&s.x, (size_t)B * r->stem[2].cout * hw);
    H /= 2;
    for (int n = 0; n < r->n_blocks; n++) {
        const vf_bottleneck *b = &r->blocks[n];
        hw = (size_t)H * H;
        int Ho = H / b->stride;
        size_t hwo = (size_t)Ho * Ho;
        grow(&s.x, (size_t)B * b->inplanes * hw);
        grow(&s.t1, (size_t)B * b->planes * hw);
        grow(&s.t2, (size_t)B * b->planes * hw);
        grow(&s.col, vf_conv2d_col_floats(&b->conv2, B, H, H));
        if (b->stride > 1) {
            grow(&s.pooled, (size_t)B * b->planes * hwo);
            grow(&s.t1, (size_t)B * b->inplanes * hwo);  // pooled shortcut input
        }
        if (b->has_downsample) grow(&s.shortcut, (size_t)B * b->planes * 4 * hwo);
        grow(&s.x, (size_t)B * b->planes * 4 * hwo);
        H = Ho;
    }
    return s;
}

// The activation arena's layout, for both of its passes (util/arena.h).
static void resnet_acts_carve(vf_resnet_acts *a, const vf_resnet *r, const act_sizes *s, int max_batch) {
    const vf_attnpool *p = &r->attnpool;
    size_t B = max_batch, C = p->embed_dim, T = (size_t)p->grid * p->grid + 1;
    size_t S = r->cfg.image_size;
    size_t sizes[] = {3 * B * S * S, s->x, s->x, s->t1, s->t2, s->pooled, s->shortcut, s->col,
                      B * T * C, B * C, B * T * C, B * T * C, B * p->heads * T, B * C};
    float **ptrs[] = {&a->input, &a->x, &a->y, &a->t1, &a->t2, &a->pooled, &a->shortcut, &a->col,
                      &a->tokens, &a->q, &a->k, &a->v, &a->scores, &a->attended};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) *ptrs[i] = vf_arena_floats(&a->arena, sizes[i] ? sizes[i] : 1);
}

int vf_resnet_acts_init(vf_resnet_acts *a, const vf_resnet *r, int max_batch, vf_error *err) {
    memset(a, 0, sizeof *a);
    if (max_batch < 1) return vf_fail(err, "ModifiedResNet: max batch %d must be positive", max_batch);
    a->max_batch = max_batch;
    act_sizes s = plan_acts(r, max_batch);
    vf_arena_plan(&a->arena);
    resnet_acts_carve(a, r, &s, max_batch);
    if (vf_arena_commit(&a->arena, err))
        return vf_error_prefix(err, "ModifiedResNet activations for batch %d", max_batch);
    resnet_acts_carve(a, r, &s, max_batch);
    a->col_floats = s.col;
    return 0;
}

void vf_resnet_acts_free(vf_resnet_acts *a) { vf_arena_free(&a->arena); }

// ---- forward -----------------------------------------------------------------

static void conv(const vf_conv2d *c, vf_resnet_acts *a, const float *x, int B, int H, const float *residual,
                 int relu, float *out) {
    vf_conv2d_forward(c, x, B, H, H, residual, relu, out, a->col, a->col_floats);
}

// x (inplanes, B, H, H) -> a->y (4*planes, B, H/s, H/s)
static void bottleneck_forward(const vf_bottleneck *b, vf_resnet_acts *a, const float *x, int B, int H) {
    int Ho = H / b->stride;
    conv(&b->conv1, a, x, B, H, NULL, 1, a->t1);     // (planes, B, H, H)
    conv(&b->conv2, a, a->t1, B, H, NULL, 1, a->t2); // (planes, B, H, H)
    const float *mid = a->t2;
    if (b->stride > 1) {
        vf_avgpool2d_forward(a->t2, b->planes * B, H, H, b->stride, a->pooled);  // (planes, B, Ho, Ho)
        mid = a->pooled;
    }
    const float *shortcut = x;
    if (b->has_downsample) {
        const float *src = x;
        if (b->stride > 1) {
            vf_avgpool2d_forward(x, b->inplanes * B, H, H, b->stride, a->t1);  // (inplanes, B, Ho, Ho)
            src = a->t1;
        }
        conv(&b->downsample, a, src, B, Ho, NULL, 0, a->shortcut);  // (4*planes, B, Ho, Ho)
        shortcut = a->shortcut;
    }
    conv(&b->conv3, a, mid, B, Ho, shortcut, 1, a->y);  // (4*planes, B, Ho, Ho)
}

// x (C, B, grid*grid) -> out (B, output_dim)
static void attnpool_forward(const vf_attnpool *p, vf_resnet_acts *a, const float *x, int B, float *out) {
    const int C = p->embed_dim, P = p->grid * p->grid, T = P + 1, nh = p->heads, hd = C / nh;
    // tokens (B, T, C): [mean over the grid, grid...] + pos
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            const float *src = x + ((size_t)c * B + b) * P;
            float *tok = a->tokens + (size_t)b * T * C + c;
            double sum = 0;
            for (int i = 0; i < P; i++) {
                sum += src[i];
                tok[(size_t)(1 + i) * C] = src[i] + p->pos[(size_t)(1 + i) * C + c];
            }
            tok[0] = (float)(sum / P) + p->pos[c];
        }
    // k, v (B*T, C) = tokens @ W^T ; q (B, C) only for the mean token of each image
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B * T, C, C, 1.0f, a->tokens, C, p->k_w, C, 0.0f, a->k, C);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B * T, C, C, 1.0f, a->tokens, C, p->v_w, C, 0.0f, a->v, C);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, C, C, 1.0f, a->tokens, T * C, p->q_w, C, 0.0f, a->q, C);
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static)
    for (int row = 0; row < B * T; row++) {
        float *k = a->k + (size_t)row * C, *v = a->v + (size_t)row * C;
        for (int c = 0; c < C; c++) k[c] += p->k_b[c], v[c] += p->v_b[c];
    }
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) a->q[(size_t)b * C + c] = (a->q[(size_t)b * C + c] + p->q_b[c]) * scale;
    // per (image, head): softmax over the T keys, weighted sum of values
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            const float *q = a->q + (size_t)b * C + h * hd;
            float *sc = a->scores + ((size_t)b * nh + h) * T;
            float mx = -INFINITY;
            for (int t = 0; t < T; t++) {
                const float *k = a->k + ((size_t)b * T + t) * C + h * hd;
                float s = 0.0f;
                for (int d = 0; d < hd; d++) s += q[d] * k[d];
                sc[t] = s;
                if (s > mx) mx = s;
            }
            float sum = 0.0f;
            for (int t = 0; t < T; t++) sum += (sc[t] = expf(sc[t] - mx));
            float *o = a->attended + (size_t)b * C + h * hd;
            for (int d = 0; d < hd; d++) o[d] = 0.0f;
            for (int t = 0; t < T; t++) {
                const float *v = a->v + ((size_t)b * T + t) * C + h * hd;
                float w = sc[t] / sum;
                for (int d = 0; d < hd; d++) o[d] += w * v[d];
            }
        }
    // out (B, output_dim) = attended @ c_w^T + c_b
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, p->output_dim, C, 1.0f, a->attended, C, p->c_w, C, 0.0f,
                out, p->output_dim);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < p->output_dim; o++) out[(size_t)b * p->output_dim + o] += p->c_b[o];
}

static void resnet_forward_slice(const vf_resnet *r, vf_resnet_acts *a, const float *pixels, int B, float *out) {
    const int S = r->cfg.image_size;
    vf_nchw_to_cnhw(pixels, B, 3, S * S, a->input);                   // (3, B, S, S)
    int H = vf_conv_out_size(S, 3, 2, 1);
    conv(&r->stem[0], a, a->input, B, S, NULL, 1, a->t1);               // (w/2, B, S/2, S/2)
    conv(&r->stem[1], a, a->t1, B, H, NULL, 1, a->t2);                  // (w/2, B, S/2, S/2)
    conv(&r->stem[2], a, a->t2, B, H, NULL, 1, a->y);                   // (w, B, S/2, S/2)
    vf_avgpool2d_forward(a->y, r->stem[2].cout * B, H, H, 2, a->x);     // (w, B, S/4, S/4)
    H /= 2;
    for (int n = 0; n < r->n_blocks; n++) {
        bottleneck_forward(&r->blocks[n], a, a->x, B, H);             // -> a->y
        H /= r->blocks[n].stride;
        float *t = a->x; a->x = a->y; a->y = t;
    }
    attnpool_forward(&r->attnpool, a, a->x, B, out);                   // (B, output_dim)
}

void vf_resnet_forward(const vf_resnet *r, vf_resnet_acts *a, const float *pixels, int B, float *out) {
    const size_t image = (size_t)3 * r->cfg.image_size * r->cfg.image_size;
    for (int b0 = 0; b0 < B; b0 += a->max_batch) {
        int nb = B - b0 < a->max_batch ? B - b0 : a->max_batch;
        resnet_forward_slice(r, a, pixels + b0 * image, nb, out + (size_t)b0 * r->cfg.output_dim);
    }
}
