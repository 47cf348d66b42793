/* open_clip_config: open_clip_config.json parsing, presets and writing
 * (see open_clip_config.h). */
#include "clip/open_clip_config.h"
#include "clip/config_json.h"
#include "image/preprocess.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// open_clip's OPENAI_DATASET_MEAN / _STD, its PreprocessCfg defaults
static const double openai_mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double openai_std[3] = {0.26862954, 0.26130258, 0.27577711};

static void defaults(vf_open_clip_config *c) {
    memset(c, 0, sizeof *c);
    c->embed_dim = 512;
    c->vision_layers = 12, c->vision_width = 768, c->vision_head_width = 64, c->vision_mlp_ratio = 4.0f;
    c->patch_size = 16, c->image_size = 224;
    c->context_length = 77, c->vocab_size = 49408, c->text_width = 512, c->text_heads = 8, c->text_layers = 12;
    c->text_mlp_ratio = 4.0f;
    memcpy(c->mean, openai_mean, sizeof c->mean);
    memcpy(c->std, openai_std, sizeof c->std);
    snprintf(c->interpolation, sizeof c->interpolation, "bicubic");
    snprintf(c->resize_mode, sizeof c->resize_mode, "shortest");
}

// ---- typed getters: absent or null keeps the default -------------------------

static int get_bool(const cJSON *o, const char *key, int *out, const char *name, const char *where, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return vf_fail(err, "%s: %s%s must be true or false", name, where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_string(const cJSON *o, const char *key, char *out, size_t cap, const char *name, const char *where,
                      vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap)
        return vf_fail(err, "%s: %s%s must be a short string", name, where, key);
    snprintf(out, cap, "%s", v->valuestring);
    return 0;
}

static int get_triple(const cJSON *o, const char *key, double out[3], const char *name, const char *where, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3)
        return vf_fail(err, "%s: %s%s must be a list of 3 numbers", name, where, key);
    for (int i = 0; i < 3; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
            return vf_fail(err, "%s: %s%s must be a list of 3 numbers", name, where, key);
        out[i] = e->valuedouble;
    }
    return 0;
}

// An int or a square [h, w] pair (open_clip accepts both for image_size / size).
static int get_square(const cJSON *o, const char *key, int *out, const char *name, const char *where, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v && cJSON_IsArray(v)) {
        const cJSON *h = cJSON_GetArrayItem(v, 0), *w = cJSON_GetArrayItem(v, 1);
        if (cJSON_GetArraySize(v) != 2 || !cJSON_IsNumber(h) || !cJSON_IsNumber(w) || h->valueint != w->valueint)
            return vf_fail(err, "%s: %s%s: only square sizes are supported", name, where, key);
        *out = h->valueint;
        return 0;
    }
    return vf_json_int(o, key, out, name, where, err);
}

// Options of open_clip that OpenAI's CLIP models leave at their defaults and
// that this project does not implement: a set value is an error, not ignored.
static int refuse_set(const cJSON *o, const char *const *keys, const char *name, const char *where, vf_error *err) {
    for (int i = 0; keys[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
        if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) continue;
        if (cJSON_IsNumber(v) && v->valuedouble == 0 && strcmp(keys[i], "ls_init_value") != 0) continue;
        return vf_fail(err, "%s: %s%s is set; this OpenCLIP option is not supported", name, where, keys[i]);
    }
    return 0;
}

static int require_string(const cJSON *o, const char *key, const char *want, const char *name, const char *where,
                          vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v) || strcmp(v->valuestring, want) != 0)
        return vf_fail(err, "%s: %s%s must be \"%s\" (the only value supported)", name, where, key, want);
    return 0;
}

static int parse_vision(const cJSON *v, vf_open_clip_config *c, const char *name, vf_error *err) {
    static const char *const refused[] = {"timm_model_name", "ls_init_value", "attentional_pool", "no_ln_pre",
                                          "final_ln_after_pool", "act_kwargs", "norm_kwargs", NULL};
    if (!cJSON_IsObject(v)) return vf_fail(err, "%s: model_cfg.vision_cfg is missing or not an object", name);
    if (refuse_set(v, refused, name, "vision_cfg.", err)) return -1;
    if (require_string(v, "pool_type", "tok", name, "vision_cfg.", err)) return -1;
    if (require_string(v, "pos_embed_type", "learnable", name, "vision_cfg.", err)) return -1;
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(v, "layers");
    if (cJSON_IsArray(layers)) {
        if (cJSON_GetArraySize(layers) != 4)
            return vf_fail(err, "%s: vision_cfg.layers must be a number (ViT) or a list of 4 (ModifiedResNet)", name);
        c->is_resnet = 1;
        for (int i = 0; i < 4; i++) {
            const cJSON *e = cJSON_GetArrayItem(layers, i);
            /* bounded as vf_json_int bounds every other integer: a larger double does not fit an int (UB) */
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || fabs(e->valuedouble) > 1e9)
                return vf_fail(err, "%s: vision_cfg.layers[%d] must be an integer", name, i);
            c->resnet_layers[i] = (int)e->valuedouble;
        }
        c->vision_width = 64;  // CLIPVisionCfg default, overridden below
    } else if (vf_json_int(v, "layers", &c->vision_layers, name, "vision_cfg.", err)) {
        return -1;
    }
    if (vf_json_int(v, "width", &c->vision_width, name, "vision_cfg.", err) ||
        vf_json_int(v, "head_width", &c->vision_head_width, name, "vision_cfg.", err) ||
        vf_json_float(v, "mlp_ratio", &c->vision_mlp_ratio, name, "vision_cfg.", err) ||
        get_square(v, "image_size", &c->image_size, name, "vision_cfg.", err))
        return -1;
    if (!c->is_resnet && vf_json_int(v, "patch_size", &c->patch_size, name, "vision_cfg.", err)) return -1;
    return 0;
}

static int parse_text(const cJSON *t, vf_open_clip_config *c, const char *name, vf_error *err) {
    static const char *const refused[] = {"hf_model_name", "hf_tokenizer_name", "ls_init_value", "embed_cls",
                                          "no_causal_mask", "final_ln_after_pool", "proj_bias", "act_kwargs",
                                          "norm_kwargs", NULL};
    if (!cJSON_IsObject(t)) return vf_fail(err, "%s: model_cfg.text_cfg is missing or not an object", name);
    if (refuse_set(t, refused, name, "text_cfg.", err)) return -1;
    if (require_string(t, "pool_type", "argmax", name, "text_cfg.", err)) return -1;
    if (vf_json_int(t, "context_length", &c->context_length, name, "text_cfg.", err) ||
        vf_json_int(t, "vocab_size", &c->vocab_size, name, "text_cfg.", err) ||
        vf_json_int(t, "width", &c->text_width, name, "text_cfg.", err) ||
        vf_json_int(t, "heads", &c->text_heads, name, "text_cfg.", err) ||
        vf_json_int(t, "layers", &c->text_layers, name, "text_cfg.", err) ||
        vf_json_float(t, "mlp_ratio", &c->text_mlp_ratio, name, "text_cfg.", err))
        return -1;
    return 0;
}

static int parse_preprocess(const cJSON *p, vf_open_clip_config *c, const char *name, vf_error *err) {
    if (!p) return 0;
    if (!cJSON_IsObject(p)) return vf_fail(err, "%s: preprocess_cfg is not an object", name);
    int size = c->image_size;
    if (get_triple(p, "mean", c->mean, name, "preprocess_cfg.", err) ||
        get_triple(p, "std", c->std, name, "preprocess_cfg.", err) ||
        get_string(p, "interpolation", c->interpolation, sizeof c->interpolation, name, "preprocess_cfg.", err) ||
        get_string(p, "resize_mode", c->resize_mode, sizeof c->resize_mode, name, "preprocess_cfg.", err) ||
        get_square(p, "size", &size, name, "preprocess_cfg.", err) ||
        require_string(p, "mode", "RGB", name, "preprocess_cfg.", err))
        return -1;
    if (size != c->image_size)
        return vf_fail(err, "%s: preprocess_cfg.size %d disagrees with vision_cfg.image_size %d", name, size,
                       c->image_size);
    // The image pipeline implements CLIP's: bicubic resize of the short side, centre crop.
    if (strcmp(c->interpolation, "bicubic") != 0)
        return vf_fail(err, "%s: preprocess_cfg.interpolation \"%s\" is not supported (only bicubic)", name,
                       c->interpolation);
    if (strcmp(c->resize_mode, "shortest") != 0)
        return vf_fail(err, "%s: preprocess_cfg.resize_mode \"%s\" is not supported (only shortest)", name,
                       c->resize_mode);
    for (int i = 0; i < 3; i++)
        if (!(c->std[i] > 0)) return vf_fail(err, "%s: preprocess_cfg.std[%d] must be positive", name, i);
    return 0;
}

int vf_open_clip_config_parse(const char *json, const char *name, vf_open_clip_config *cfg, vf_error *err) {
    defaults(cfg);
    cJSON *root = cJSON_Parse(json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vf_fail(err, "%s: not a valid JSON object", name);
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model_cfg");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "preprocess_cfg");
    if (!model) model = root;  // a bare model config (open_clip's model_configs/*.json)
    int rc = -1;
    static const char *const refused[] = {"custom_text", "init_logit_bias", "multimodal_cfg", NULL};
    if (!cJSON_IsObject(model)) {
        vf_fail(err, "%s: model_cfg is not an object", name);
    } else if (!refuse_set(model, refused, name, "model_cfg.", err) &&
               !vf_json_int(model, "embed_dim", &cfg->embed_dim, name, "model_cfg.", err) &&
               !get_bool(model, "quick_gelu", &cfg->quick_gelu, name, "model_cfg.", err) &&
               !parse_vision(cJSON_GetObjectItemCaseSensitive(model, "vision_cfg"), cfg, name, err) &&
               !parse_text(cJSON_GetObjectItemCaseSensitive(model, "text_cfg"), cfg, name, err) &&
               !parse_preprocess(pre, cfg, name, err) &&
               !get_bool(root, "vflclip_random_weights", &cfg->random_weights, name, "(top level).", err)) {
        rc = vf_open_clip_config_validate(cfg, name, err);
    }
    cJSON_Delete(root);
    return rc;
}

int vf_open_clip_config_load(const char *path, vf_open_clip_config *cfg, vf_error *err) {
    char file[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(file, sizeof file, "%s/open_clip_config.json", path);
    else snprintf(file, sizeof file, "%s", path);
    char *text = NULL;
    size_t len = 0;
    if (vf_read_file(file, &text, &len, err)) return -1;
    int rc = vf_open_clip_config_parse(text, file, cfg, err);
    free(text);
    return rc;
}

int vf_open_clip_config_validate(const vf_open_clip_config *c, const char *name, vf_error *err) {
    const int big = 1 << 16;
    if (c->embed_dim < 1 || c->embed_dim > big) return vf_fail(err, "%s: embed_dim %d is out of range", name, c->embed_dim);
    if (c->vision_width < 2 || c->vision_width > big) return vf_fail(err, "%s: vision_cfg.width %d is out of range", name, c->vision_width);
    if (c->vision_head_width < 1) return vf_fail(err, "%s: vision_cfg.head_width must be positive", name);
    if (c->image_size < 1 || c->image_size > 8192) return vf_fail(err, "%s: vision_cfg.image_size %d is out of range", name, c->image_size);
    if (c->is_resnet) {
        for (int i = 0; i < 4; i++)
            if (c->resnet_layers[i] < 1 || c->resnet_layers[i] > 256)
                return vf_fail(err, "%s: vision_cfg.layers[%d] = %d is out of range", name, i, c->resnet_layers[i]);
        if (c->vision_width % 2) return vf_fail(err, "%s: vision_cfg.width %d must be even for a ModifiedResNet", name, c->vision_width);
        if (c->image_size % 32)
            return vf_fail(err, "%s: vision_cfg.image_size %d must be a multiple of 32 for a ModifiedResNet", name, c->image_size);
        if ((c->vision_width * 32) % c->vision_head_width)
            return vf_fail(err, "%s: vision_cfg.head_width %d does not divide the pooled width %d", name,
                           c->vision_head_width, c->vision_width * 32);
    } else {
        if (c->vision_layers < 1 || c->vision_layers > 1024) return vf_fail(err, "%s: vision_cfg.layers %d is out of range", name, c->vision_layers);
        if (c->patch_size < 1 || c->image_size % c->patch_size)
            return vf_fail(err, "%s: vision_cfg.patch_size %d does not divide image_size %d", name, c->patch_size, c->image_size);
        if (c->vision_width % c->vision_head_width)
            return vf_fail(err, "%s: vision_cfg.head_width %d does not divide width %d", name, c->vision_head_width, c->vision_width);
        if (!((int)(c->vision_width * c->vision_mlp_ratio) >= 1)) return vf_fail(err, "%s: vision_cfg.mlp_ratio must be positive", name);
    }
    if (c->context_length < 2 || c->context_length > 4096) return vf_fail(err, "%s: text_cfg.context_length %d is out of range", name, c->context_length);
    if (c->vocab_size < 2 || c->vocab_size > (1 << 24)) return vf_fail(err, "%s: text_cfg.vocab_size %d is out of range", name, c->vocab_size);
    if (c->text_width < 1 || c->text_width > big || c->text_layers < 1 || c->text_layers > 1024)
        return vf_fail(err, "%s: text_cfg width %d / layers %d out of range", name, c->text_width, c->text_layers);
    if (c->text_heads < 1 || c->text_width % c->text_heads)
        return vf_fail(err, "%s: text_cfg.heads %d does not divide width %d", name, c->text_heads, c->text_width);
    if (!((int)(c->text_width * c->text_mlp_ratio) >= 1)) return vf_fail(err, "%s: text_cfg.mlp_ratio must be positive", name);
    return 0;
}

// ---- presets -------------------------------------------------------------------

typedef struct preset {
    const char *like;
    int embed_dim, l1, l2, l3, l4;  // l2..l4 = 0: a ViT with l1 layers
    int width, patch, image, text_width, text_heads;
} preset;

// open_clip's model_configs for the backbones of the seed paper
static const preset presets[] = {
    {"rn50x4", 640, 4, 6, 10, 6, 80, 0, 288, 640, 10},
    {"rn50x16", 768, 6, 8, 18, 8, 96, 0, 384, 768, 12},
    {"rn50x64", 1024, 3, 15, 36, 10, 128, 0, 448, 1024, 16},
    {"vit-b-32", 512, 12, 0, 0, 0, 768, 32, 224, 512, 8},
    {"vit-b-16", 512, 12, 0, 0, 0, 768, 16, 224, 512, 8},
    {"vit-l-14", 768, 24, 0, 0, 0, 1024, 14, 224, 768, 12},
    {"vit-l-14-336", 768, 24, 0, 0, 0, 1024, 14, 336, 768, 12},
};

int vf_open_clip_config_preset(const char *like, vf_open_clip_config *cfg, vf_error *err) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const preset *p = &presets[i];
        if (strcmp(p->like, like) != 0) continue;
        defaults(cfg);
        cfg->embed_dim = p->embed_dim;
        cfg->quick_gelu = 1;  // OpenAI's weights were trained with QuickGELU
        cfg->is_resnet = p->l2 != 0;
        if (cfg->is_resnet) {
            int l[4] = {p->l1, p->l2, p->l3, p->l4};
            memcpy(cfg->resnet_layers, l, sizeof l);
        } else {
            cfg->vision_layers = p->l1;
            cfg->patch_size = p->patch;
        }
        cfg->vision_width = p->width, cfg->image_size = p->image;
        cfg->text_width = p->text_width, cfg->text_heads = p->text_heads;
        return 0;
    }
    return vf_fail(err, "unknown OpenCLIP model \"%s\" (rn50x4, rn50x16, rn50x64, vit-b-32, vit-b-16, vit-l-14, vit-l-14-336)",
                   like);
}

// ---- writing -------------------------------------------------------------------

static cJSON *triple(const double v[3]) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < 3; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

char *vf_open_clip_config_to_json(const vf_open_clip_config *c) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model_cfg");
    cJSON_AddNumberToObject(model, "embed_dim", c->embed_dim);
    cJSON_AddBoolToObject(model, "quick_gelu", c->quick_gelu);
    cJSON *v = cJSON_AddObjectToObject(model, "vision_cfg");
    cJSON_AddNumberToObject(v, "image_size", c->image_size);
    if (c->is_resnet) {
        cJSON *l = cJSON_AddArrayToObject(v, "layers");
        for (int i = 0; i < 4; i++) cJSON_AddItemToArray(l, cJSON_CreateNumber(c->resnet_layers[i]));
        cJSON_AddNumberToObject(v, "width", c->vision_width);
        cJSON_AddNullToObject(v, "patch_size");
    } else {
        cJSON_AddNumberToObject(v, "layers", c->vision_layers);
        cJSON_AddNumberToObject(v, "width", c->vision_width);
        cJSON_AddNumberToObject(v, "patch_size", c->patch_size);
    }
    if (c->vision_head_width != 64) cJSON_AddNumberToObject(v, "head_width", c->vision_head_width);
    if (c->vision_mlp_ratio != 4.0f) cJSON_AddNumberToObject(v, "mlp_ratio", c->vision_mlp_ratio);
    cJSON *t = cJSON_AddObjectToObject(model, "text_cfg");
    cJSON_AddNumberToObject(t, "context_length", c->context_length);
    cJSON_AddNumberToObject(t, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(t, "width", c->text_width);
    cJSON_AddNumberToObject(t, "heads", c->text_heads);
    cJSON_AddNumberToObject(t, "layers", c->text_layers);
    if (c->text_mlp_ratio != 4.0f) cJSON_AddNumberToObject(t, "mlp_ratio", c->text_mlp_ratio);
    cJSON *p = cJSON_AddObjectToObject(root, "preprocess_cfg");
    cJSON_AddItemToObject(p, "mean", triple(c->mean));
    cJSON_AddItemToObject(p, "std", triple(c->std));
    cJSON_AddStringToObject(p, "interpolation", c->interpolation);
    cJSON_AddStringToObject(p, "resize_mode", c->resize_mode);
    // open_clip reads only model_cfg and preprocess_cfg; this marks make-model's output
    if (c->random_weights) cJSON_AddBoolToObject(root, "vflclip_random_weights", 1);
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}

// ---- mapping onto the project's CLIP config ----------------------------------------

void vf_open_clip_to_clip_config(const vf_open_clip_config *oc, vf_clip_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    vf_activation act = oc->quick_gelu ? VF_ACT_QUICK_GELU : VF_ACT_GELU;
    cfg->projection_dim = oc->embed_dim;
    cfg->logit_scale_init = logf(1.0f / 0.07f);
    cfg->text = (vf_clip_text_config){
        .enc = {.hidden_size = oc->text_width, .intermediate_size = (int)(oc->text_width * oc->text_mlp_ratio),
                .num_layers = oc->text_layers, .num_heads = oc->text_heads, .act = act, .layer_norm_eps = 1e-5f},
        .vocab_size = oc->vocab_size, .max_positions = oc->context_length,
        .bos_token_id = 49406, .eos_token_id = 49407, .pad_token_id = 0};
    cfg->vision = (vf_clip_vision_config){
        .enc = {.hidden_size = oc->vision_width, .intermediate_size = (int)(oc->vision_width * oc->vision_mlp_ratio),
                .num_layers = oc->is_resnet ? 0 : oc->vision_layers,
                .num_heads = oc->vision_width / oc->vision_head_width, .act = act, .layer_norm_eps = 1e-5f},
        .image_size = oc->image_size, .patch_size = oc->is_resnet ? 0 : oc->patch_size, .num_channels = 3};
}

int vf_open_clip_is_dir(const char *dir) {
    char file[4096];
    struct stat sb;
    snprintf(file, sizeof file, "%s/open_clip_config.json", dir);
    return stat(file, &sb) == 0 && S_ISREG(sb.st_mode);
}

void vf_open_clip_preprocess(const vf_open_clip_config *oc, vf_preprocess_cfg *cfg) {
    vf_preprocess_defaults(cfg, oc->image_size);  // bicubic, shortest side, centre crop, 1/255
    for (int i = 0; i < 3; i++) cfg->mean[i] = (float)oc->mean[i], cfg->std[i] = (float)oc->std[i];
    cfg->torchvision_crop = 1;  // open_clip's CenterCrop rounds the offset half to even
}
