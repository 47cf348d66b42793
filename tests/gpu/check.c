/* check: helpers of the GPU-vs-CPU checker (see check.h). */
#include "check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

FILE *vf_check_results;
int vf_check_failures;

void vf_rng_seed(vf_rng *r, uint64_t seed) { r->s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull; }

float vf_rng_uniform(vf_rng *r) {
    /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) / (float)(1ull << 24);
}

void vf_rng_fill(vf_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * vf_rng_uniform(r);
}

void vf_rng_normalish(vf_rng *r, float *x, size_t n, float std) {
    const float a = std * 1.7320508f; /* uniform(-a, a) has std a / sqrt(3) */
    vf_rng_fill(r, x, n, -a, a);
}

double vf_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void report(const char *name, int pass, double rel, double max_abs, double cos, double tol) {
    if (!pass) vf_check_failures++;
    if (isnan(cos)) printf("CHECK %-44s %s rel=%.3g max_abs=%.3g tol=%.3g\n", name, pass ? "PASS" : "FAIL", rel, max_abs, tol);
    else printf("CHECK %-44s %s rel=%.3g max_abs=%.3g cos=%.7f min_cos=%.4f\n", name, pass ? "PASS" : "FAIL", rel, max_abs, cos, tol);
    fflush(stdout);
    if (vf_check_results) {
        fprintf(vf_check_results, "{\"check\":\"%s\",\"pass\":%s,\"rel\":%.6g,\"max_abs\":%.6g", name, pass ? "true" : "false",
                rel, max_abs);
        if (!isnan(cos)) fprintf(vf_check_results, ",\"min_cos\":%.8f", cos);
        fprintf(vf_check_results, ",\"tol\":%.6g}\n", tol);
        fflush(vf_check_results);
    }
}

static void diffs(const float *got, const float *ref, size_t n, double *rel, double *max_abs, int *finite) {
    double num = 0, den = 0, mx = 0;
    *finite = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i])) *finite = 0;
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
        if (fabs(d) > mx) mx = fabs(d);
    }
    *rel = den > 0 ? sqrt(num / den) : sqrt(num);
    *max_abs = mx;
}

int vf_check_close(const char *name, const float *got, const float *ref, size_t n, double tol) {
    double rel, mx;
    int finite;
    diffs(got, ref, n, &rel, &mx, &finite);
    int pass = finite && rel <= tol;
    report(name, pass, rel, mx, NAN, tol);
    return pass;
}

int vf_check_cosine(const char *name, const float *got, const float *ref, int rows, int dim, double min_cos) {
    double rel, mx, worst = 1.0;
    int finite;
    diffs(got, ref, (size_t)rows * dim, &rel, &mx, &finite);
    for (int r = 0; r < rows; r++) {
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < dim; i++) {
            double a = got[(size_t)r * dim + i], b = ref[(size_t)r * dim + i];
            ab += a * b, aa += a * a, bb += b * b;
        }
        double c = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
        if (c < worst || isnan(c)) worst = c;
    }
    int pass = finite && worst >= min_cos;
    report(name, pass, rel, mx, worst, min_cos);
    return pass;
}

void vf_check_result(const char *name, const char *json_fields) {
    printf("RESULT %s %s\n", name, json_fields);
    fflush(stdout);
    if (vf_check_results) {
        fprintf(vf_check_results, "{\"result\":\"%s\",%s}\n", name, json_fields);
        fflush(vf_check_results);
    }
}

/* ---- random towers ------------------------------------------------------------ */
/* Linear weights std 0.02 like transformers' init, LayerNorm gains near 1 and
 * small biases, so activations stay O(1) through every layer. */
typedef struct carve { float *p; size_t used; } carve;
static float *take(carve *c, size_t n) {
    float *r = c->p ? c->p + c->used : NULL;
    c->used += n;
    return r;
}

static void layer_layout(vf_tfm_layer *L, carve *c, size_t C, size_t F) {
    L->ln1_w = take(c, C), L->ln1_b = take(c, C), L->ln2_w = take(c, C), L->ln2_b = take(c, C);
    L->q_w = take(c, C * C), L->k_w = take(c, C * C), L->v_w = take(c, C * C), L->o_w = take(c, C * C);
    L->q_b = take(c, C), L->k_b = take(c, C), L->v_b = take(c, C), L->o_b = take(c, C);
    L->fc1_w = take(c, F * C), L->fc1_b = take(c, F), L->fc2_w = take(c, C * F), L->fc2_b = take(c, C);
}

static void layer_fill(const vf_tfm_layer *L, vf_rng *r, size_t C, size_t F) {
    vf_rng_fill(r, (float *)L->ln1_w, C, 0.8f, 1.2f), vf_rng_normalish(r, (float *)L->ln1_b, C, 0.02f);
    vf_rng_fill(r, (float *)L->ln2_w, C, 0.8f, 1.2f), vf_rng_normalish(r, (float *)L->ln2_b, C, 0.02f);
    const float *ws[] = {L->q_w, L->k_w, L->v_w, L->o_w};
    const float *bs[] = {L->q_b, L->k_b, L->v_b, L->o_b};
    for (int i = 0; i < 4; i++) vf_rng_normalish(r, (float *)ws[i], C * C, 0.02f), vf_rng_normalish(r, (float *)bs[i], C, 0.02f);
    vf_rng_normalish(r, (float *)L->fc1_w, F * C, 0.02f), vf_rng_normalish(r, (float *)L->fc1_b, F, 0.02f);
    vf_rng_normalish(r, (float *)L->fc2_w, C * F, 0.02f), vf_rng_normalish(r, (float *)L->fc2_b, C, 0.02f);
}

static void vit_layout(vf_rand_vit *m, carve *c) {
    vf_vit_weights *w = &m->w;
    const size_t C = w->cfg.enc.hidden_size, F = w->cfg.enc.intermediate_size, P = w->cfg.patch_size;
    const size_t G = w->cfg.image_size / P, T = G * G + 1;
    w->patch_w = take(c, C * 3 * P * P), w->class_emb = take(c, C), w->pos_emb = take(c, T * C);
    w->pre_ln_w = take(c, C), w->pre_ln_b = take(c, C), w->post_ln_w = take(c, C), w->post_ln_b = take(c, C);
    w->projection = take(c, (size_t)w->projection_dim * C);
    for (int l = 0; l < w->cfg.enc.num_layers; l++) layer_layout(&w->layers[l], c, C, F);
}

int vf_rand_vit_make(vf_rand_vit *m, const vf_clip_vision_config *cfg, int proj_dim, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->w.cfg = *cfg;
    m->w.projection_dim = proj_dim;
    m->w.layers = calloc(cfg->enc.num_layers + 1, sizeof *m->w.layers);
    carve count = {NULL, 0};
    vit_layout(m, &count);
    m->block = malloc(count.used * sizeof(float));
    if (!m->w.layers || !m->block) return -1;
    carve c = {m->block, 0};
    vit_layout(m, &c);
    vf_rng r;
    vf_rng_seed(&r, seed);
    vf_rng_normalish(&r, m->block, count.used, 0.02f);  /* everything, then the LayerNorms and layers properly */
    const size_t C = cfg->enc.hidden_size, F = cfg->enc.intermediate_size;
    vf_rng_fill(&r, (float *)m->w.pre_ln_w, C, 0.8f, 1.2f);
    vf_rng_fill(&r, (float *)m->w.post_ln_w, C, 0.8f, 1.2f);
    vf_rng_normalish(&r, (float *)m->w.class_emb, C, 1.0f);  /* CLIP's embeddings are O(1) before pre_layrnorm */
    for (int l = 0; l < cfg->enc.num_layers; l++) layer_fill(&m->w.layers[l], &r, C, F);
    return 0;
}

void vf_rand_vit_free(vf_rand_vit *m) {
    free(m->w.layers);
    free(m->block);
    memset(m, 0, sizeof *m);
}

/* safetensors: 8-byte little-endian header length, JSON header, raw data. */
typedef struct st_entry { char name[96]; int ndim; long shape[4]; const float *data; size_t n; } st_entry;

static int st_write(const char *path, const st_entry *e, int n) {
    size_t cap = 256 + (size_t)n * 200, len = 0, off = 0;
    char *h = malloc(cap);
    if (!h) return -1;
    len += snprintf(h + len, cap - len, "{");
    for (int i = 0; i < n; i++) {
        len += snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "", e[i].name);
        for (int d = 0; d < e[i].ndim; d++) len += snprintf(h + len, cap - len, "%s%ld", d ? "," : "", e[i].shape[d]);
        len += snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + e[i].n * 4);
        off += e[i].n * 4;
    }
    len += snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    int ok = f != NULL;
    uint64_t hl = len;
    ok = ok && fwrite(&hl, 8, 1, f) == 1 && fwrite(h, 1, len, f) == len;
    for (int i = 0; ok && i < n; i++) ok = fwrite(e[i].data, 4, e[i].n, f) == e[i].n;
    if (f && fclose(f) != 0) ok = 0;
    free(h);
    return ok ? 0 : -1;
}

int vf_rand_vit_save(const vf_rand_vit *m, const char *path) {
    const vf_vit_weights *w = &m->w;
    const long C = w->cfg.enc.hidden_size, F = w->cfg.enc.intermediate_size, P = w->cfg.patch_size;
    const long G = w->cfg.image_size / P, T = G * G + 1, L = w->cfg.enc.num_layers;
    st_entry *e = calloc(8 + 16 * L, sizeof *e);
    if (!e) return -1;
    int n = 0;
#define ADD(nm, ptr, ...)                                                                                    \
    do {                                                                                                     \
        long shp[] = {__VA_ARGS__};                                                                          \
        st_entry *x = &e[n++];                                                                               \
        snprintf(x->name, sizeof x->name, "%s", nm);                                                         \
        x->ndim = sizeof shp / sizeof shp[0], x->n = 1, x->data = ptr;                                       \
        for (int d = 0; d < x->ndim; d++) x->shape[d] = shp[d], x->n *= shp[d];                              \
    } while (0)
    ADD("vision_model.embeddings.class_embedding", w->class_emb, C);
    ADD("vision_model.embeddings.patch_embedding.weight", w->patch_w, C, 3, P, P);
    ADD("vision_model.embeddings.position_embedding.weight", w->pos_emb, T, C);
    ADD("vision_model.pre_layrnorm.weight", w->pre_ln_w, C);
    ADD("vision_model.pre_layrnorm.bias", w->pre_ln_b, C);
    ADD("vision_model.post_layernorm.weight", w->post_ln_w, C);
    ADD("vision_model.post_layernorm.bias", w->post_ln_b, C);
    ADD("visual_projection.weight", w->projection, (long)w->projection_dim, C);
    for (long l = 0; l < L; l++) {
        const vf_tfm_layer *y = &w->layers[l];
        char nm[96];
#define LADD(suffix, ptr, ...)                                                                               \
    snprintf(nm, sizeof nm, "vision_model.encoder.layers.%ld.%s", l, suffix);                                \
    ADD(nm, ptr, __VA_ARGS__)
        LADD("layer_norm1.weight", y->ln1_w, C); LADD("layer_norm1.bias", y->ln1_b, C);
        LADD("layer_norm2.weight", y->ln2_w, C); LADD("layer_norm2.bias", y->ln2_b, C);
        LADD("self_attn.q_proj.weight", y->q_w, C, C); LADD("self_attn.q_proj.bias", y->q_b, C);
        LADD("self_attn.k_proj.weight", y->k_w, C, C); LADD("self_attn.k_proj.bias", y->k_b, C);
        LADD("self_attn.v_proj.weight", y->v_w, C, C); LADD("self_attn.v_proj.bias", y->v_b, C);
        LADD("self_attn.out_proj.weight", y->o_w, C, C); LADD("self_attn.out_proj.bias", y->o_b, C);
        LADD("mlp.fc1.weight", y->fc1_w, F, C); LADD("mlp.fc1.bias", y->fc1_b, F);
        LADD("mlp.fc2.weight", y->fc2_w, C, F); LADD("mlp.fc2.bias", y->fc2_b, C);
#undef LADD
    }
#undef ADD
    int rc = st_write(path, e, n);
    free(e);
    return rc;
}

static void text_layout(vf_rand_text *m, carve *c) {
    vf_clip_text_weights *w = &m->w;
    const size_t C = w->cfg.enc.hidden_size, F = w->cfg.enc.intermediate_size;
    w->token_embedding = NULL;  /* the checks feed embeddings directly, as CoOp does */
    w->position_embedding = take(c, (size_t)w->cfg.max_positions * C);
    w->final_ln_w = take(c, C), w->final_ln_b = take(c, C);
    w->projection = take(c, (size_t)w->projection_dim * C);
    for (int l = 0; l < w->cfg.enc.num_layers; l++) layer_layout(&w->layers[l], c, C, F);
}

int vf_rand_text_make(vf_rand_text *m, const vf_clip_text_config *cfg, int proj_dim, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->w.cfg = *cfg;
    m->w.projection_dim = proj_dim;
    m->w.layers = calloc(cfg->enc.num_layers + 1, sizeof *m->w.layers);
    carve count = {NULL, 0};
    text_layout(m, &count);
    m->block = malloc(count.used * sizeof(float));
    if (!m->w.layers || !m->block) return -1;
    carve c = {m->block, 0};
    text_layout(m, &c);
    vf_rng r;
    vf_rng_seed(&r, seed);
    vf_rng_normalish(&r, m->block, count.used, 0.02f);
    const size_t C = cfg->enc.hidden_size, F = cfg->enc.intermediate_size;
    vf_rng_fill(&r, (float *)m->w.final_ln_w, C, 0.8f, 1.2f);
    for (int l = 0; l < cfg->enc.num_layers; l++) layer_fill(&m->w.layers[l], &r, C, F);
    return 0;
}

void vf_rand_text_free(vf_rand_text *m) {
    free(m->w.layers);
    free(m->block);
    memset(m, 0, sizeof *m);
}

static void conv_fill(vf_conv2d *c, vf_rng *r, float gain) {
    const size_t k = (size_t)c->cin * c->kh * c->kw;
    vf_rng_normalish(r, c->weight, (size_t)c->cout * k, gain / sqrtf((float)k));
    vf_rng_normalish(r, c->bias, c->cout, 0.05f);
}

/* He-like gains keep the ReLU stack O(1); the last conv of each residual
 * branch is damped so that 64-block towers do not grow without bound. */
void vf_rand_resnet_fill(vf_resnet *net, uint64_t seed) {
    vf_rng r;
    vf_rng_seed(&r, seed);
    for (int i = 0; i < 3; i++) conv_fill(&net->stem[i], &r, 1.41f);
    for (int n = 0; n < net->n_blocks; n++) {
        vf_bottleneck *b = &net->blocks[n];
        conv_fill(&b->conv1, &r, 1.41f);
        conv_fill(&b->conv2, &r, 1.41f);
        conv_fill(&b->conv3, &r, 0.3f);
        if (b->has_downsample) conv_fill(&b->downsample, &r, 1.0f);
    }
    vf_attnpool *p = &net->attnpool;
    const size_t C = p->embed_dim, T = (size_t)p->grid * p->grid + 1;
    const float s = 1.0f / sqrtf((float)C);
    vf_rng_normalish(&r, p->pos, T * C, s);
    float *ws[] = {p->q_w, p->k_w, p->v_w}, *bs[] = {p->q_b, p->k_b, p->v_b};
    for (int i = 0; i < 3; i++) vf_rng_normalish(&r, ws[i], C * C, s), vf_rng_normalish(&r, bs[i], C, 0.02f);
    vf_rng_normalish(&r, p->c_w, (size_t)p->output_dim * C, s);
    vf_rng_normalish(&r, p->c_b, p->output_dim, 0.02f);
}
