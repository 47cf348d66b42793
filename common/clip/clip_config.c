/* clip_config: config.json parsing, presets and writing (see clip_config.h). */
#include "clip/clip_config.h"
#include "clip/config_json.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- defaults (transformers' CLIPTextConfig / CLIPVisionConfig) ---------- */
static void text_defaults(vf_clip_text_config *t) {
    *t = (vf_clip_text_config){
        .enc = {.hidden_size = 512, .intermediate_size = 2048, .num_layers = 12, .num_heads = 8,
                .act = VF_ACT_QUICK_GELU, .layer_norm_eps = 1e-5f},
        .vocab_size = 49408, .max_positions = 77, .bos_token_id = 49406, .eos_token_id = 49407, .pad_token_id = 1};
}

static void vision_defaults(vf_clip_vision_config *v) {
    *v = (vf_clip_vision_config){
        .enc = {.hidden_size = 768, .intermediate_size = 3072, .num_layers = 12, .num_heads = 12,
                .act = VF_ACT_QUICK_GELU, .layer_norm_eps = 1e-5f},
        .image_size = 224, .patch_size = 32, .num_channels = 3};
}

/* ---- typed getters: absent or null keeps the default ---------------------- */
static int get_act(const cJSON *obj, vf_activation *out, const char *name, const char *where, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "hidden_act");
    if (!v || cJSON_IsNull(v)) return 0;
    const char *s = cJSON_IsString(v) ? v->valuestring : "";
    if (strcmp(s, "quick_gelu") == 0) *out = VF_ACT_QUICK_GELU;
    else if (strcmp(s, "gelu") == 0) *out = VF_ACT_GELU;
    else if (strcmp(s, "gelu_new") == 0 || strcmp(s, "gelu_pytorch_tanh") == 0) *out = VF_ACT_GELU_TANH;
    else return vf_fail(err, "%s: %shidden_act \"%s\" is not supported (quick_gelu, gelu, gelu_new)", name, where, s);
    return 0;
}

static int parse_encoder(const cJSON *o, vf_clip_encoder_config *e, const char *name, const char *where, vf_error *err) {
    if (vf_json_int(o, "hidden_size", &e->hidden_size, name, where, err) ||
        vf_json_int(o, "intermediate_size", &e->intermediate_size, name, where, err) ||
        vf_json_int(o, "num_hidden_layers", &e->num_layers, name, where, err) ||
        vf_json_int(o, "num_attention_heads", &e->num_heads, name, where, err) ||
        vf_json_float(o, "layer_norm_eps", &e->layer_norm_eps, name, where, err) ||
        get_act(o, &e->act, name, where, err))
        return -1;
    return 0;
}

static int parse_text(const cJSON *o, vf_clip_text_config *t, const char *name, vf_error *err) {
    const char *w = "text_config.";
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return vf_fail(err, "%s: text_config is not an object", name);
    if (parse_encoder(o, &t->enc, name, w, err) || vf_json_int(o, "vocab_size", &t->vocab_size, name, w, err) ||
        vf_json_int(o, "max_position_embeddings", &t->max_positions, name, w, err) ||
        vf_json_int(o, "bos_token_id", &t->bos_token_id, name, w, err) ||
        vf_json_int(o, "eos_token_id", &t->eos_token_id, name, w, err) ||
        vf_json_int(o, "pad_token_id", &t->pad_token_id, name, w, err))
        return -1;
    return 0;
}

static int parse_vision(const cJSON *o, vf_clip_vision_config *v, const char *name, vf_error *err) {
    const char *w = "vision_config.";
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return vf_fail(err, "%s: vision_config is not an object", name);
    if (parse_encoder(o, &v->enc, name, w, err) || vf_json_int(o, "image_size", &v->image_size, name, w, err) ||
        vf_json_int(o, "patch_size", &v->patch_size, name, w, err) ||
        vf_json_int(o, "num_channels", &v->num_channels, name, w, err))
        return -1;
    return 0;
}

static int check_encoder(const vf_clip_encoder_config *e, const char *name, const char *tower, vf_error *err) {
    if (e->hidden_size <= 0 || e->intermediate_size <= 0 || e->num_layers <= 0 || e->num_heads <= 0)
        return vf_fail(err, "%s: %s_config: hidden_size, intermediate_size, num_hidden_layers and num_attention_heads must be positive", name, tower);
    if (e->hidden_size % e->num_heads != 0)
        return vf_fail(err, "%s: %s_config: hidden_size %d is not divisible by num_attention_heads %d", name, tower, e->hidden_size, e->num_heads);
    if (!(e->layer_norm_eps > 0)) return vf_fail(err, "%s: %s_config: layer_norm_eps must be positive", name, tower);
    return 0;
}

int vf_clip_config_validate(const vf_clip_config *cfg, const char *name, vf_error *err) {
    if (check_encoder(&cfg->vision.enc, name, "vision", err) || check_encoder(&cfg->text.enc, name, "text", err)) return -1;
    const vf_clip_vision_config *v = &cfg->vision;
    if (v->image_size <= 0 || v->patch_size <= 0 || v->image_size % v->patch_size != 0)
        return vf_fail(err, "%s: vision_config: image_size %d must be a positive multiple of patch_size %d", name, v->image_size, v->patch_size);
    if (v->num_channels != 3) return vf_fail(err, "%s: vision_config: num_channels %d (only RGB, 3, is supported)", name, v->num_channels);
    const vf_clip_text_config *t = &cfg->text;
    if (t->vocab_size <= 0 || t->max_positions <= 1)
        return vf_fail(err, "%s: text_config: vocab_size and max_position_embeddings must be positive", name);
    if (t->eos_token_id < 0 || t->eos_token_id >= t->vocab_size)
        return vf_fail(err, "%s: text_config: eos_token_id %d is outside the vocabulary of %d", name, t->eos_token_id, t->vocab_size);
    if (cfg->projection_dim <= 0) return vf_fail(err, "%s: projection_dim must be positive", name);
    return 0;
}

int vf_clip_config_parse(const char *json, const char *name, vf_clip_config *cfg, vf_error *err) {
    memset(cfg, 0, sizeof *cfg);
    text_defaults(&cfg->text);
    vision_defaults(&cfg->vision);
    cfg->projection_dim = 512;
    cfg->logit_scale_init = 2.6592f;
    cJSON *root = cJSON_Parse(json);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vf_fail(err, "%s: not a valid JSON object", name);
    }
    int rc = -1;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "clip") != 0) {
        vf_fail(err, "%s: model_type is \"%s\", a CLIPModel config (model_type \"clip\") is needed", name, mt->valuestring);
        goto out;
    }
    if (!cJSON_GetObjectItemCaseSensitive(root, "vision_config") && !cJSON_GetObjectItemCaseSensitive(root, "text_config")) {
        vf_fail(err, "%s: has neither vision_config nor text_config: not a CLIPModel config", name);
        goto out;
    }
    /* 4.12-era files carry both; transformers lets the *_dict win. */
    if (parse_text(cJSON_GetObjectItemCaseSensitive(root, "text_config"), &cfg->text, name, err) ||
        parse_text(cJSON_GetObjectItemCaseSensitive(root, "text_config_dict"), &cfg->text, name, err) ||
        parse_vision(cJSON_GetObjectItemCaseSensitive(root, "vision_config"), &cfg->vision, name, err) ||
        parse_vision(cJSON_GetObjectItemCaseSensitive(root, "vision_config_dict"), &cfg->vision, name, err) ||
        vf_json_int(root, "projection_dim", &cfg->projection_dim, name, "", err) ||
        vf_json_float(root, "logit_scale_init_value", &cfg->logit_scale_init, name, "", err))
        goto out;
    cfg->random_weights = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "vflclip_random_weights"));
    rc = vf_clip_config_validate(cfg, name, err);
out:
    cJSON_Delete(root);
    return rc;
}

int vf_clip_config_load(const char *path, vf_clip_config *cfg, vf_error *err) {
    char file[4200];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(file, sizeof file, "%s/config.json", path);
    else snprintf(file, sizeof file, "%s", path);
    char *text;
    size_t len;
    if (vf_read_file(file, &text, &len, err) != 0) return -1;
    int rc = vf_clip_config_parse(text, file, cfg, err);
    free(text);
    return rc;
}

/* ---- presets: numbers from the real openai/clip-vit-* configs ----------- */
int vf_clip_config_preset(const char *like, vf_clip_config *cfg, vf_error *err) {
    memset(cfg, 0, sizeof *cfg);
    text_defaults(&cfg->text);
    vision_defaults(&cfg->vision);
    cfg->projection_dim = 512;
    cfg->logit_scale_init = 2.6592f;
    vf_clip_encoder_config *ve = &cfg->vision.enc, *te = &cfg->text.enc;
    if (strcmp(like, "tiny") == 0) {
        /* Small enough that the whole suite stays fast, still multi-head,
         * multi-layer and multi-patch so every code path runs. */
        *ve = (vf_clip_encoder_config){64, 256, 2, 4, VF_ACT_QUICK_GELU, 1e-5f};
        *te = (vf_clip_encoder_config){64, 256, 2, 4, VF_ACT_QUICK_GELU, 1e-5f};
        cfg->vision.image_size = 32;
        cfg->vision.patch_size = 8;
        cfg->projection_dim = 32;
    } else if (strcmp(like, "vit-b-32") == 0 || strcmp(like, "vit-b-16") == 0) {
        cfg->vision.patch_size = like[6] == '3' ? 32 : 16;
    } else if (strcmp(like, "vit-l-14") == 0 || strcmp(like, "vit-l-14-336") == 0) {
        *ve = (vf_clip_encoder_config){1024, 4096, 24, 16, VF_ACT_QUICK_GELU, 1e-5f};
        *te = (vf_clip_encoder_config){768, 3072, 12, 12, VF_ACT_QUICK_GELU, 1e-5f};
        cfg->vision.patch_size = 14;
        cfg->vision.image_size = strlen(like) > 8 ? 336 : 224;
        cfg->projection_dim = 768;
    } else {
        return vf_fail(err, "unknown model preset \"%s\" (tiny, vit-b-32, vit-b-16, vit-l-14, vit-l-14-336)", like);
    }
    return vf_clip_config_validate(cfg, like, err);
}

/* ---- writing ---------------------------------------------------------------- */
/* The shortest decimal that reads back as the same float (1e-05, not
 * 9.99999974737875e-06). */
static double short_float(float f) {
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static void add_encoder(cJSON *o, const vf_clip_encoder_config *e) {
    cJSON_AddNumberToObject(o, "hidden_size", e->hidden_size);
    cJSON_AddNumberToObject(o, "intermediate_size", e->intermediate_size);
    cJSON_AddNumberToObject(o, "num_hidden_layers", e->num_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", e->num_heads);
    cJSON_AddStringToObject(o, "hidden_act", vf_activation_name(e->act));
    cJSON_AddNumberToObject(o, "layer_norm_eps", short_float(e->layer_norm_eps));
    cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(o, "dropout", 0.0);
    cJSON_AddNumberToObject(o, "initializer_factor", 1.0);
    cJSON_AddNumberToObject(o, "initializer_range", 0.02);
}

char *vf_clip_config_to_json(const vf_clip_config *cfg) {
    cJSON *root = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("CLIPModel"));
    cJSON_AddStringToObject(root, "model_type", "clip");
    cJSON_AddNumberToObject(root, "projection_dim", cfg->projection_dim);
    cJSON_AddNumberToObject(root, "logit_scale_init_value", short_float(cfg->logit_scale_init));
    cJSON_AddNumberToObject(root, "initializer_factor", 1.0);
    cJSON *t = cJSON_AddObjectToObject(root, "text_config");
    add_encoder(t, &cfg->text.enc);
    cJSON_AddStringToObject(t, "model_type", "clip_text_model");
    cJSON_AddNumberToObject(t, "vocab_size", cfg->text.vocab_size);
    cJSON_AddNumberToObject(t, "max_position_embeddings", cfg->text.max_positions);
    cJSON_AddNumberToObject(t, "bos_token_id", cfg->text.bos_token_id);
    cJSON_AddNumberToObject(t, "eos_token_id", cfg->text.eos_token_id);
    cJSON_AddNumberToObject(t, "pad_token_id", cfg->text.pad_token_id);
    cJSON_AddNumberToObject(t, "projection_dim", cfg->projection_dim);
    cJSON *v = cJSON_AddObjectToObject(root, "vision_config");
    add_encoder(v, &cfg->vision.enc);
    cJSON_AddStringToObject(v, "model_type", "clip_vision_model");
    cJSON_AddNumberToObject(v, "image_size", cfg->vision.image_size);
    cJSON_AddNumberToObject(v, "patch_size", cfg->vision.patch_size);
    cJSON_AddNumberToObject(v, "num_channels", cfg->vision.num_channels);
    cJSON_AddNumberToObject(v, "projection_dim", cfg->projection_dim);
    cJSON_AddStringToObject(root, "torch_dtype", "float32");
    cJSON_AddStringToObject(root, "transformers_version", "4.44.2");
    if (cfg->random_weights) cJSON_AddTrueToObject(root, "vflclip_random_weights");
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}
