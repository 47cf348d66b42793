/* open_clip_make: random-weight OpenCLIP checkpoints (see open_clip_make.h). */
#include "clip/open_clip_make.h"
#include "clip/open_clip_model.h"
#include "clip/random_weights.h"
#include "clip/tokenizer.h"
#include "util/fileio.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// ---- the tensor table ------------------------------------------------------------

typedef vf_random_weights gen;

typedef enum init_kind {
    INIT_NORMAL,     // mean + std * N(0,1)
    INIT_LOGNORMAL,  // exp(mean + std * N(0,1)): BatchNorm running_var, positive
} init_kind;

static int64_t zero_count;  // num_batches_tracked: a real I64 scalar, value 0

typedef struct tensor_init {
    init_kind kind;
    float mean, std;
} tensor_init;

static void fill(float *values, size_t n, vf_rng *stream, const void *how) {
    const tensor_init *p = how;
    for (size_t i = 0; i < n; i += 2) {
        double radius, angle;
        vf_rng_box_muller(stream, &radius, &angle);
        double z[2] = {radius * cos(angle), radius * sin(angle)};
        for (size_t j = 0; j < 2 && i + j < n; j++) {
            double v = p->mean + p->std * z[j];
            values[i + j] = (float)(p->kind == INIT_LOGNORMAL ? exp(v) : v);
        }
    }
}

static int add(gen *g, init_kind kind, float mean, float std, vf_error *err, int ndim, const int64_t *shape,
               const char *fmt, ...) __attribute__((format(printf, 8, 9)));
static int add(gen *g, init_kind kind, float mean, float std, vf_error *err, int ndim, const int64_t *shape,
               const char *fmt, ...) {
    const tensor_init how = {kind, mean, std};
    va_list ap;
    va_start(ap, fmt);
    int rc = vf_random_weights_vadd(g, fill, &how, err, ndim, shape, fmt, ap);
    va_end(ap);
    return rc;
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}
// CLIP-like scales: weights and biases N(0, 0.02) (non-zero biases so the tests
// exercise them), LayerNorm weights around 1.
#define W INIT_NORMAL, 0.0f, 0.02f
#define LNW INIT_NORMAL, 1.0f, 0.05f

static int add_resblocks(gen *g, const char *p, int layers, int64_t C, int64_t F, vf_error *err) {
    for (int l = 0; l < layers; l++)
        if (add(g, LNW, err, 1, SHAPE(C), "%stransformer.resblocks.%d.ln_1.weight", p, l) ||
            add(g, W, err, 1, SHAPE(C), "%stransformer.resblocks.%d.ln_1.bias", p, l) ||
            add(g, W, err, 2, SHAPE(3 * C, C), "%stransformer.resblocks.%d.attn.in_proj_weight", p, l) ||
            add(g, W, err, 1, SHAPE(3 * C), "%stransformer.resblocks.%d.attn.in_proj_bias", p, l) ||
            add(g, W, err, 2, SHAPE(C, C), "%stransformer.resblocks.%d.attn.out_proj.weight", p, l) ||
            add(g, W, err, 1, SHAPE(C), "%stransformer.resblocks.%d.attn.out_proj.bias", p, l) ||
            add(g, LNW, err, 1, SHAPE(C), "%stransformer.resblocks.%d.ln_2.weight", p, l) ||
            add(g, W, err, 1, SHAPE(C), "%stransformer.resblocks.%d.ln_2.bias", p, l) ||
            add(g, W, err, 2, SHAPE(F, C), "%stransformer.resblocks.%d.mlp.c_fc.weight", p, l) ||
            add(g, W, err, 1, SHAPE(F), "%stransformer.resblocks.%d.mlp.c_fc.bias", p, l) ||
            add(g, W, err, 2, SHAPE(C, F), "%stransformer.resblocks.%d.mlp.c_proj.weight", p, l) ||
            add(g, W, err, 1, SHAPE(C), "%stransformer.resblocks.%d.mlp.c_proj.bias", p, l))
            return -1;
    return 0;
}

// conv "<conv>.weight" (He-like std, so activations neither vanish nor explode
// through dozens of blocks) and BatchNorm "<bn>.*" with eval statistics that
// are far from the identity. residual_gain: scale of the BN weight (small on
// the last BN of a residual branch, as trained ResNets end up).
static int add_conv_bn(gen *g, const char *conv, const char *bn, int64_t cout, int64_t cin, int64_t k,
                       float residual_gain, vf_error *err) {
    float std = 1.0f / sqrtf((float)(cin * k * k));
    if (add(g, INIT_NORMAL, 0.0f, std, err, 4, SHAPE(cout, cin, k, k), "%s.weight", conv) ||
        add(g, INIT_NORMAL, residual_gain, 0.1f * residual_gain, err, 1, SHAPE(cout), "%s.weight", bn) ||
        add(g, INIT_NORMAL, 0.0f, 0.1f, err, 1, SHAPE(cout), "%s.bias", bn) ||
        add(g, INIT_NORMAL, 0.0f, 0.1f, err, 1, SHAPE(cout), "%s.running_mean", bn) ||
        add(g, INIT_LOGNORMAL, 0.0f, 0.3f, err, 1, SHAPE(cout), "%s.running_var", bn))
        return -1;
    if (g->sizing) return 0;
    char name[256];
    snprintf(name, sizeof name, "%s.num_batches_tracked", bn);
    return vf_st_writer_add_raw(&g->w, name, VF_DT_I64, 0, NULL, &zero_count, err);
}

static int add_resnet(gen *g, const vf_open_clip_config *c, vf_error *err) {
    const int64_t w = c->vision_width;
    char conv[128], bn[128];
    const int64_t stem_in[3] = {3, w / 2, w / 2}, stem_out[3] = {w / 2, w / 2, w};
    for (int i = 0; i < 3; i++) {
        snprintf(conv, sizeof conv, "visual.conv%d", i + 1);
        snprintf(bn, sizeof bn, "visual.bn%d", i + 1);
        if (add_conv_bn(g, conv, bn, stem_out[i], stem_in[i], 3, 1.0f, err)) return -1;
    }
    int64_t inplanes = w;
    for (int s = 0; s < 4; s++) {
        int64_t planes = w << s;
        for (int i = 0; i < c->resnet_layers[s]; i++) {
            const int64_t cin[3] = {inplanes, planes, planes}, cout[3] = {planes, planes, planes * 4};
            const int64_t k[3] = {1, 3, 1};
            for (int j = 0; j < 3; j++) {
                snprintf(conv, sizeof conv, "visual.layer%d.%d.conv%d", s + 1, i, j + 1);
                snprintf(bn, sizeof bn, "visual.layer%d.%d.bn%d", s + 1, i, j + 1);
                if (add_conv_bn(g, conv, bn, cout[j], cin[j], k[j], j == 2 ? 0.25f : 1.0f, err)) return -1;
            }
            if ((i == 0 && s > 0) || inplanes != planes * 4) {
                snprintf(conv, sizeof conv, "visual.layer%d.%d.downsample.0", s + 1, i);
                snprintf(bn, sizeof bn, "visual.layer%d.%d.downsample.1", s + 1, i);
                if (add_conv_bn(g, conv, bn, planes * 4, inplanes, 1, 1.0f, err)) return -1;
            }
            inplanes = planes * 4;
        }
    }
    const int64_t C = w * 32, G = c->image_size / 32, D = c->embed_dim;
    const float std = 1.0f / sqrtf((float)C);  // open_clip's init_parameters
    if (add(g, INIT_NORMAL, 0.0f, std, err, 2, SHAPE(G * G + 1, C), "visual.attnpool.positional_embedding")) return -1;
    static const char *const proj[3] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; i++)
        if (add(g, INIT_NORMAL, 0.0f, std, err, 2, SHAPE(C, C), "visual.attnpool.%s.weight", proj[i]) ||
            add(g, W, err, 1, SHAPE(C), "visual.attnpool.%s.bias", proj[i]))
            return -1;
    return add(g, INIT_NORMAL, 0.0f, std, err, 2, SHAPE(D, C), "visual.attnpool.c_proj.weight") ||
           add(g, W, err, 1, SHAPE(D), "visual.attnpool.c_proj.bias");
}

static int add_vit(gen *g, const vf_open_clip_config *c, vf_error *err) {
    const int64_t C = c->vision_width, P = c->patch_size, G = c->image_size / c->patch_size, D = c->embed_dim;
    const int64_t F = (int64_t)(C * c->vision_mlp_ratio);
    return add(g, W, err, 4, SHAPE(C, 3, P, P), "visual.conv1.weight") ||
           add(g, W, err, 1, SHAPE(C), "visual.class_embedding") ||
           add(g, INIT_NORMAL, 0.0f, 0.01f, err, 2, SHAPE(G * G + 1, C), "visual.positional_embedding") ||
           add(g, LNW, err, 1, SHAPE(C), "visual.ln_pre.weight") || add(g, W, err, 1, SHAPE(C), "visual.ln_pre.bias") ||
           add_resblocks(g, "visual.", c->vision_layers, C, F, err) ||
           add(g, LNW, err, 1, SHAPE(C), "visual.ln_post.weight") || add(g, W, err, 1, SHAPE(C), "visual.ln_post.bias") ||
           add(g, W, err, 2, SHAPE(C, D), "visual.proj");
}

static int add_all(gen *g, const void *cfg, vf_error *err) {
    const vf_open_clip_config *c = cfg;
    const int64_t C = c->text_width, F = (int64_t)(C * c->text_mlp_ratio), D = c->embed_dim;
    if ((c->is_resnet ? add_resnet(g, c, err) : add_vit(g, c, err)) ||
        add(g, W, err, 2, SHAPE(c->vocab_size, C), "token_embedding.weight") ||
        add(g, INIT_NORMAL, 0.0f, 0.01f, err, 2, SHAPE(c->context_length, C), "positional_embedding") ||
        add_resblocks(g, "", c->text_layers, C, F, err) ||
        add(g, LNW, err, 1, SHAPE(C), "ln_final.weight") || add(g, W, err, 1, SHAPE(C), "ln_final.bias") ||
        add(g, W, err, 2, SHAPE(C, D), "text_projection"))
        return -1;
    float *ls;
    if (vf_random_weights_add_fixed(g, "logit_scale", 0, NULL, &ls, err)) return -1;
    if (ls) *ls = logf(1.0f / 0.07f);  // open_clip's init: log(1/0.07)
    return 0;
}

// DIR/open_clip_config.json, marked as random weights
static int write_config(const vf_open_clip_config *cfg_in, const char *out_dir, vf_error *err) {
    vf_open_clip_config cfg = *cfg_in;
    cfg.random_weights = 1;
    if (vf_mkdirs(out_dir, 0755, err)) return -1;
    char *json = vf_open_clip_config_to_json(&cfg);
    if (!json) return vf_fail(err, "out of memory");
    char path[4200];
    snprintf(path, sizeof path, "%s/open_clip_config.json", out_dir);
    int rc = vf_write_atomic(path, json, strlen(json), err);
    free(json);
    return rc;
}

int vf_open_clip_make_model(const vf_open_clip_config *cfg_in, uint64_t seed, vf_dtype dtype, const char *out_dir,
                            vf_error *err) {
    vf_open_clip_config cfg = *cfg_in;
    cfg.random_weights = 1;
    if (vf_open_clip_config_validate(&cfg, out_dir, err)) return -1;
    if (dtype != VF_DT_F32 && dtype != VF_DT_F16 && dtype != VF_DT_BF16)
        return vf_fail(err, "dtype %s is not one of F32, F16, BF16", vf_dtype_name(dtype));
    if (vf_mkdirs(out_dir, 0755, err)) return -1;
    int vocab = 0, eot = 0;
    if (vf_tokenizer_write_tiny(out_dir, &vocab, NULL, &eot, err)) return -1;
    if (vocab > cfg.vocab_size)
        return vf_fail(err, "the project's vocabulary of %d exceeds text_cfg.vocab_size %d", vocab, cfg.vocab_size);
    if (eot != vocab - 1)  // open_clip pools at the largest id, which must be the EOT
        return vf_fail(err, "EOT id %d is not the largest id of the vocabulary", eot);

    char path[4200];
    snprintf(path, sizeof path, "%s/" VF_OPEN_CLIP_WEIGHTS, out_dir);
    int rc = vf_random_weights_write(path, dtype, seed, add_all, &cfg, err);
    if (rc) return -1;
    return write_config(&cfg, out_dir, err);  // last: its presence marks a complete checkpoint
}

int vf_open_clip_make_wanted(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i++) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--open-clip-config") == 0) return 1;
        if (strcmp(a, "--layout") == 0 && strcmp(v, "open_clip") == 0) return 1;
        if (strcmp(a, "--like") == 0 && strncmp(v, "rn50x", 5) == 0) return 1;
    }
    return 0;
}

// ---- the subcommand ----------------------------------------------------------------

static void usage(FILE *out) {
    fprintf(out,
            "usage: vflclip make-model --like rn50x4|rn50x16|rn50x64 --seed N --out DIR\n"
            "       vflclip make-model --like vit-b-32|vit-b-16|vit-l-14|vit-l-14-336 --layout open_clip --seed N --out DIR\n"
            "       vflclip make-model --open-clip-config FILE --seed N --out DIR\n"
            "                          [--dtype f32|f16|bf16] [--config-only]\n"
            "Writes a random-weight OpenCLIP checkpoint (open_clip_config.json +\n"
            "open_clip_model.safetensors + a small vocabulary). Such a model is for tests\n"
            "and demos only: its outputs mean nothing for dermatology.\n");
}

static int parse_dtype(const char *s, vf_dtype *dt) {
    if (strcasecmp(s, "f32") == 0) *dt = VF_DT_F32;
    else if (strcasecmp(s, "f16") == 0) *dt = VF_DT_F16;
    else if (strcasecmp(s, "bf16") == 0) *dt = VF_DT_BF16;
    else return -1;
    return 0;
}

int vf_open_clip_make_main(int argc, char **argv) {
    const char *like = NULL, *config = NULL, *out = NULL, *dtype_s = "f32", *layout = "open_clip";
    long long seed = -1;
    int config_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--config-only") == 0) {
            config_only = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "make-model: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--like") == 0) like = v;
        else if (strcmp(a, "--open-clip-config") == 0) config = v;
        else if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--dtype") == 0) dtype_s = v;
        else if (strcmp(a, "--layout") == 0) layout = v;
        else if (strcmp(a, "--seed") == 0) {
            char *end;
            seed = strtoll(v, &end, 10);
            if (!*v || *end || seed < 0) {
                fprintf(stderr, "make-model: --seed %s is not a non-negative integer\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "make-model: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!out || seed < 0 || (!like == !config)) {
        usage(stderr);
        return 2;
    }
    if (strcmp(layout, "open_clip") != 0) {
        fprintf(stderr, "make-model: --layout %s: the ResNets exist only in the open_clip layout\n", layout);
        return 2;
    }
    vf_dtype dtype;
    if (parse_dtype(dtype_s, &dtype)) {
        fprintf(stderr, "make-model: --dtype %s is not f32, f16 or bf16\n", dtype_s);
        return 2;
    }
    vf_error err = {{0}};
    vf_open_clip_config cfg;
    int rc = like ? vf_open_clip_config_preset(like, &cfg, &err) : vf_open_clip_config_load(config, &cfg, &err);
    if (!rc) rc = config_only ? write_config(&cfg, out, &err) : vf_open_clip_make_model(&cfg, (uint64_t)seed, dtype, out, &err);
    if (rc) {
        fprintf(stderr, "make-model: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "make-model: wrote %s (OpenCLIP %s, %s, seed %lld) -- RANDOM weights: outputs are meaningless "
                    "for dermatology\n", out, cfg.is_resnet ? "ModifiedResNet" : "ViT", dtype_s, seed);
    return 0;
}
