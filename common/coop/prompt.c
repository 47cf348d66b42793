/* prompt: CoOp prompt assembly, context initialisation and the text forward
 * and backward through the frozen tower (see prompt.h). */
#include "coop/prompt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/clip_text_backward.h"
#include "util/arena.h"
#include "util/rng.h"

struct vf_coop {
    vf_coop_config cfg;
    const vf_clip_text_weights *tower;
    int n_classes, n_ctx, rows, W, D, T;
    int32_t *ids;        // (C, T) prompt token ids
    int *ctx_pos;        // (C, n_ctx) where each context vector sits
    int *eot;            // (C) EOT position of each prompt
    int *first_ctx;      // (C) first context position: the backward needs no row before it
    float *emb;          // (C, T, W) input embeddings; only the context rows change
    float *demb;         // (C, T, W) gradient of the input embeddings
    float *ctx;          // (rows, W) the learnable context
    vf_arena arena;      // ids, positions, emb, demb, ctx
    vf_clip_text_acts acts;
    vf_clip_text_grads grads;
};

vf_coop_config vf_coop_config_default(void) {
    vf_coop_config c = {16, 0, VF_CLASS_END, NULL, NULL, 1, 0};
    return c;
}

const char *vf_class_pos_name(vf_class_pos pos) {
    return pos == VF_CLASS_MIDDLE ? "middle" : pos == VF_CLASS_FRONT ? "front" : "end";
}

int vf_class_pos_parse(const char *s, vf_class_pos *pos, vf_error *err) {
    if (strcmp(s, "end") == 0) *pos = VF_CLASS_END;
    else if (strcmp(s, "middle") == 0) *pos = VF_CLASS_MIDDLE;
    else if (strcmp(s, "front") == 0) *pos = VF_CLASS_FRONT;
    else return vf_fail(err, "unknown class position '%s' (want end, middle or front)", s);
    return 0;
}

/* ---- template -------------------------------------------------------------- */
typedef struct prompt_parts {
    int32_t pre[VF_CLIP_CONTEXT_LENGTH], mid[VF_CLIP_CONTEXT_LENGTH], post[VF_CLIP_CONTEXT_LENGTH];
    int n_pre, n_mid, n_post;
} prompt_parts;

static int only_space(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n') return 0;
    return 1;
}

/* Tokens of template[begin, end) without SOT/EOT; whitespace-only -> none. */
static int tokenize_piece(const vf_tokenizer *tok, const char *tmpl, size_t begin, size_t end, int32_t *ids, int *n,
                          vf_error *err) {
    *n = 0;
    if (only_space(tmpl + begin, end - begin)) return 0;
    char buf[1024];
    if (end - begin >= sizeof buf) return vf_fail(err, "template '%s' is too long", tmpl);
    memcpy(buf, tmpl + begin, end - begin);
    buf[end - begin] = 0;
    if (vf_tokenize_words(tok, buf, ids, VF_CLIP_CONTEXT_LENGTH, n, err) != 0)
        return vf_error_prefix(err, "template '%s'", tmpl);
    return 0;
}

static int parse_template(const vf_tokenizer *tok, const char *tmpl, vf_class_pos pos, prompt_parts *p, vf_error *err) {
    const char *ctx = strstr(tmpl, "{ctx}"), *cls = strstr(tmpl, "{class}");
    if (!ctx || !cls) return vf_fail(err, "template '%s' lacks a %s slot", tmpl, !ctx ? "{ctx}" : "{class}");
    if (strstr(ctx + 1, "{ctx}") || strstr(cls + 1, "{class}"))
        return vf_fail(err, "template '%s' has more than one {ctx} or {class} slot", tmpl);
    if (cls < ctx) return vf_fail(err, "template '%s' puts {class} before {ctx}; write {ctx} first and choose --class-pos front", tmpl);
    size_t a = (size_t)(ctx - tmpl), b = a + 5, c = (size_t)(cls - tmpl), d = c + 7, e = strlen(tmpl);
    if (pos != VF_CLASS_END && !only_space(tmpl + b, c - b))
        return vf_fail(err, "template '%s': class position %s needs {ctx} and {class} adjacent", tmpl, vf_class_pos_name(pos));
    if (tokenize_piece(tok, tmpl, 0, a, p->pre, &p->n_pre, err) != 0) return -1;
    if (tokenize_piece(tok, tmpl, b, c, p->mid, &p->n_mid, err) != 0) return -1;
    return tokenize_piece(tok, tmpl, d, e, p->post, &p->n_post, err);
}

/* Writes class k's prompt into ids (capacity max_len) and its context
 * positions; returns its length (through EOT) or -1. */
static int assemble_prompt(const prompt_parts *p, const int32_t *cls, int n_cls, int n_ctx, vf_class_pos pos,
                           int sot, int eot, int placeholder, int32_t *ids, int *ctx_pos, int max_len) {
    int n = 0, j = 0;
#define PUT(id) do { if (n >= max_len) return -1; ids[n++] = (id); } while (0)
#define PUT_CTX(count) do { for (int i_ = 0; i_ < (count); i_++) { ctx_pos[j++] = n; PUT(placeholder); } } while (0)
    PUT(sot);
    for (int i = 0; i < p->n_pre; i++) PUT(p->pre[i]);
    if (pos == VF_CLASS_END) {
        PUT_CTX(n_ctx);
        for (int i = 0; i < p->n_mid; i++) PUT(p->mid[i]);
        for (int i = 0; i < n_cls; i++) PUT(cls[i]);
    } else if (pos == VF_CLASS_MIDDLE) {
        PUT_CTX(n_ctx / 2);
        for (int i = 0; i < n_cls; i++) PUT(cls[i]);
        PUT_CTX(n_ctx - n_ctx / 2);
    } else {
        for (int i = 0; i < n_cls; i++) PUT(cls[i]);
        PUT_CTX(n_ctx);
    }
    for (int i = 0; i < p->n_post; i++) PUT(p->post[i]);
    PUT(eot);
#undef PUT
#undef PUT_CTX
    return n;
}

/* ---- context initialisation --------------------------------------------- */
static void init_random(float *ctx, long n, unsigned long long seed) {
    vf_rng r;
    vf_rng_seed(&r, seed);
    for (long i = 0; i < n; i += 2) {   // Box-Muller on uniforms in (0, 1) (not rng.h's (0, 1]: a seed keeps its context)
        double u1 = ((vf_rng_next(&r) >> 11) + 0.5) / 9007199254740992.0;
        double u2 = ((vf_rng_next(&r) >> 11) + 0.5) / 9007199254740992.0;
        double rad = sqrt(-2.0 * log(u1));
        ctx[i] = (float)(0.02 * rad * cos(2.0 * M_PI * u2));
        if (i + 1 < n) ctx[i + 1] = (float)(0.02 * rad * sin(2.0 * M_PI * u2));
    }
}

/* ---- create / free ------------------------------------------------------- */
void vf_coop_free(vf_coop *c) {
    if (!c) return;
    vf_clip_text_acts_free(&c->acts);
    vf_clip_text_grads_free(&c->grads);
    vf_arena_free(&c->arena);
    free(c);
}

/* The arena's layout, for both of its passes (util/arena.h). */
static void coop_carve(vf_coop *c) {
    const size_t CT = (size_t)c->n_classes * c->T, W = (size_t)c->W;
    c->ids = vf_arena_alloc(&c->arena, CT * sizeof(int32_t));
    c->ctx_pos = vf_arena_alloc(&c->arena, (size_t)c->n_classes * c->n_ctx * sizeof(int));
    c->eot = vf_arena_alloc(&c->arena, (size_t)c->n_classes * sizeof(int));
    c->first_ctx = vf_arena_alloc(&c->arena, (size_t)c->n_classes * sizeof(int));
    c->emb = vf_arena_floats(&c->arena, CT * W);
    c->demb = vf_arena_floats(&c->arena, CT * W);
    c->ctx = vf_arena_floats(&c->arena, (size_t)c->rows * W);
}

int vf_coop_create(vf_coop **out, const vf_coop_config *cfg, const vf_clip_text_weights *tower,
                   const vf_tokenizer *tok, const char *const *class_names, int n_classes, vf_error *err) {
    *out = NULL;
    const int max_len = tower->cfg.max_positions, W = tower->cfg.enc.hidden_size;
    const char *tmpl = cfg->template_ ? cfg->template_ : VF_COOP_DEFAULT_TEMPLATE;
    if (n_classes < 1) return vf_fail(err, "CoOp: no class names");
    if (max_len > VF_CLIP_CONTEXT_LENGTH || max_len < 3)
        return vf_fail(err, "CoOp: text tower has %d positions (supported: 3..%d)", max_len, VF_CLIP_CONTEXT_LENGTH);
    int32_t init_ids[VF_CLIP_CONTEXT_LENGTH];
    int n_ctx = cfg->n_ctx;
    if (cfg->init_words) {
        if (vf_tokenize_words(tok, cfg->init_words, init_ids, VF_CLIP_CONTEXT_LENGTH, &n_ctx, err) != 0)
            return vf_error_prefix(err, "CoOp init words '%s'", cfg->init_words);
        if (n_ctx == 0) return vf_fail(err, "CoOp init words '%s' have no tokens", cfg->init_words);
        if (cfg->n_ctx_given && n_ctx != cfg->n_ctx)
            return vf_fail(err, "n_ctx %d disagrees with init words '%s', which are %d tokens (n_ctx is taken from the "
                           "init words: give one of the two, or make them agree)", cfg->n_ctx, cfg->init_words, n_ctx);
    }
    if (n_ctx < 1 || n_ctx > max_len - 2) return vf_fail(err, "CoOp: n_ctx %d is outside 1..%d", n_ctx, max_len - 2);
    prompt_parts parts;
    if (parse_template(tok, tmpl, cfg->class_pos, &parts, err) != 0) return -1;
    int sot = vf_tokenizer_sot(tok), eot = vf_tokenizer_eot(tok);
    int placeholder = vf_tokenizer_token_id(tok, "x</w>");   // CoOp's "X" filler; its embedding is replaced
    if (placeholder < 0) placeholder = eot;

    /* First pass: every prompt's tokens, to find T. */
    int32_t (*all_ids)[VF_CLIP_CONTEXT_LENGTH] = calloc((size_t)n_classes, sizeof *all_ids);
    int (*all_pos)[VF_CLIP_CONTEXT_LENGTH] = calloc((size_t)n_classes, sizeof *all_pos);
    int *len = calloc((size_t)n_classes, sizeof *len);
    if (!all_ids || !all_pos || !len) { free(all_ids); free(all_pos); free(len); return vf_fail(err, "CoOp: out of memory"); }
    int T = 0, rc = 0;
    for (int k = 0; k < n_classes && rc == 0; k++) {
        int32_t cls[VF_CLIP_CONTEXT_LENGTH];
        int n_cls;
        if (vf_tokenize_words(tok, class_names[k], cls, VF_CLIP_CONTEXT_LENGTH, &n_cls, err) != 0) {
            rc = vf_error_prefix(err, "class '%s'", class_names[k]);
            break;
        }
        if (n_cls == 0) { rc = vf_fail(err, "class '%s' has no tokens", class_names[k]); break; }
        len[k] = assemble_prompt(&parts, cls, n_cls, n_ctx, cfg->class_pos, sot, eot, placeholder, all_ids[k], all_pos[k], max_len);
        if (len[k] < 0) {
            rc = vf_fail(err, "class '%s': the prompt (%d context vectors, template '%s') is longer than the model's %d positions",
                         class_names[k], n_ctx, tmpl, max_len);
            break;
        }
        if (len[k] > T) T = len[k];
    }
    vf_coop *c = rc == 0 ? calloc(1, sizeof *c) : NULL;
    if (rc == 0 && !c) rc = vf_fail(err, "CoOp: out of memory");
    if (rc == 0) {
        c->cfg = *cfg;
        c->cfg.template_ = NULL;   // the caller's strings are not kept
        c->cfg.init_words = NULL;
        c->tower = tower;
        c->n_classes = n_classes;
        c->n_ctx = n_ctx;
        c->rows = cfg->csc ? n_classes * n_ctx : n_ctx;
        c->W = W;
        c->D = tower->projection_dim;
        c->T = T;
        vf_arena_plan(&c->arena);
        coop_carve(c);
        rc = vf_arena_commit(&c->arena, err);
        if (rc == 0) coop_carve(c);
    }
    if (rc == 0) {
        for (int k = 0; k < n_classes; k++) {
            for (int t = 0; t < T; t++) c->ids[(size_t)k * T + t] = t < len[k] ? all_ids[k][t] : eot;
            memcpy(c->ctx_pos + (size_t)k * n_ctx, all_pos[k], (size_t)n_ctx * sizeof(int));
            c->eot[k] = len[k] - 1;
            c->first_ctx[k] = all_pos[k][0];   // positions are assembled in increasing order
        }
        rc = vf_clip_text_embed_tokens(tower, c->ids, n_classes, T, c->emb, err);
    }
    if (rc == 0) {
        if (cfg->init_words) {
            for (int r = 0; r < c->rows; r++)
                memcpy(c->ctx + (size_t)r * W, tower->token_embedding + (size_t)init_ids[r % n_ctx] * W, (size_t)W * sizeof(float));
        } else {
            init_random(c->ctx, (long)c->rows * W, cfg->seed);
        }
        rc = vf_clip_text_acts_init(&c->acts, tower, n_classes, T, err);
    }
    if (rc == 0) rc = vf_clip_text_grads_init(&c->grads, tower, n_classes, T, err);
    free(all_ids);
    free(all_pos);
    free(len);
    if (rc != 0) { vf_coop_free(c); return -1; }
    *out = c;
    return 0;
}

/* ---- accessors ------------------------------------------------------------- */
float *vf_coop_ctx(vf_coop *c) { return c->ctx; }
int vf_coop_ctx_count(const vf_coop *c) { return c->rows * c->W; }
int vf_coop_ctx_rows(const vf_coop *c) { return c->rows; }
int vf_coop_n_ctx(const vf_coop *c) { return c->n_ctx; }
int vf_coop_width(const vf_coop *c) { return c->W; }
int vf_coop_n_classes(const vf_coop *c) { return c->n_classes; }
int vf_coop_feature_dim(const vf_coop *c) { return c->D; }
int vf_coop_seq_len(const vf_coop *c) { return c->T; }
const int32_t *vf_coop_prompt_ids(const vf_coop *c, int k) { return c->ids + (size_t)k * c->T; }
const int *vf_coop_ctx_positions(const vf_coop *c, int k) { return c->ctx_pos + (size_t)k * c->n_ctx; }

int vf_coop_set_ctx(vf_coop *c, const float *ctx, int rows, int width, const char *name, vf_error *err) {
    if (rows != c->rows || width != c->W)
        return vf_fail(err, "%s: context is %d x %d but this prompt learner needs %d x %d (%d context vectors%s, width %d)", name,
                       rows, width, c->rows, c->W, c->n_ctx, c->cfg.csc ? " per class" : "", c->W);
    for (long i = 0; i < (long)rows * width; i++)
        if (!isfinite(ctx[i])) return vf_fail(err, "%s: context value %ld is not finite", name, i);
    memcpy(c->ctx, ctx, (size_t)rows * width * sizeof(float));
    return 0;
}

/* ---- forward / backward ---------------------------------------------------- */
int vf_coop_text_forward(vf_coop *c, float *text_features, vf_error *err) {
    const int W = c->W;
    for (int k = 0; k < c->n_classes; k++) {
        const float *ctx_k = c->ctx + (c->cfg.csc ? (size_t)k * c->n_ctx * W : 0);   // (n_ctx, W)
        for (int j = 0; j < c->n_ctx; j++)
            memcpy(c->emb + ((size_t)k * c->T + c->ctx_pos[k * c->n_ctx + j]) * W, ctx_k + (size_t)j * W, (size_t)W * sizeof(float));
    }
    return vf_clip_text_forward(c->tower, &c->acts, c->emb, c->eot, c->n_classes, c->T, text_features, err);
}

int vf_coop_text_backward(vf_coop *c, const float *dtext, float *dctx, vf_error *err) {
    const int W = c->W;
    if (vf_clip_text_backward(c->tower, &c->acts, &c->grads, dtext, c->first_ctx, c->demb, err) != 0) return -1;
    memset(dctx, 0, (size_t)c->rows * W * sizeof(float));
    for (int k = 0; k < c->n_classes; k++) {
        float *dctx_k = dctx + (c->cfg.csc ? (size_t)k * c->n_ctx * W : 0);   // (n_ctx, W)
        for (int j = 0; j < c->n_ctx; j++) {
            const float *src = c->demb + ((size_t)k * c->T + c->ctx_pos[k * c->n_ctx + j]) * W;
            float *dst = dctx_k + (size_t)j * W;
            for (int i = 0; i < W; i++) dst[i] += src[i];
        }
    }
    return 0;
}
