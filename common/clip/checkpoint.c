/* checkpoint: a checkpoint directory opened once (see checkpoint.h). */
#include "clip/checkpoint.h"
#include "clip/open_clip_model.h"
#include "util/fileio.h"
#include "util/sha256.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BPE_GZ_NAME "bpe_simple_vocab_16e6.txt.gz"

const char *vf_checkpoint_layout_name(vf_checkpoint_layout layout) {
    return layout == VF_CKPT_OPEN_CLIP ? "open_clip" : layout == VF_CKPT_HUGGING_FACE ? "huggingface" : "unknown";
}

/* ---- vocabulary files ------------------------------------------------------ */
static int exists_in(const char *dir, const char *name) {
    char path[VF_CKPT_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

void vf_checkpoint_find_tokenizer(const char *dir, char *path, size_t path_len) {
    if (exists_in(dir, "vocab.json") || exists_in(dir, "merges.txt")) snprintf(path, path_len, "%s", dir);
    else if (exists_in(dir, BPE_GZ_NAME)) snprintf(path, path_len, "%s/%s", dir, BPE_GZ_NAME);
    else if (path_len) path[0] = '\0';
}

int vf_checkpoint_tokenizer(const vf_checkpoint *ck, const char *tokenizer_path, vf_tokenizer **out, char *source,
                            size_t source_len, vf_error *err) {
    return vf_tokenizer_load_for_checkpoint(out, ck, tokenizer_path, source, source_len, err);
}

/* ---- preprocessing ----------------------------------------------------------- */
static void find_preprocess(vf_checkpoint *ck) {
    vf_error *e = &ck->preprocess_err;
    if (ck->layout == VF_CKPT_OPEN_CLIP) {
        vf_open_clip_preprocess(&ck->oc, &ck->pp);
        snprintf(ck->preprocess_path, sizeof ck->preprocess_path, "%s", ck->config_path);
    } else {
        struct stat sb;
        char *path = ck->preprocess_path, *json;
        size_t len;
        snprintf(path, sizeof ck->preprocess_path, "%s/preprocessor_config.json", ck->dir);
        if (stat(path, &sb) != 0) {
            snprintf(path, sizeof ck->preprocess_path, "%s/processor_config.json", ck->dir);
            if (stat(path, &sb) != 0) {
                path[0] = '\0';
                vf_fail(e, "%s: neither preprocessor_config.json nor processor_config.json exists", ck->dir);
                return;
            }
        }
        if (vf_read_file(path, &json, &len, e)) return;
        int rc = vf_preprocess_config_parse(json, path, &ck->pp, e);
        free(json);
        if (rc) return;
    }
    vf_preprocess_fingerprint(&ck->pp, ck->preprocess_fingerprint);
    ck->has_preprocess = 1;
}

int vf_checkpoint_preprocess(const vf_checkpoint *ck, vf_preprocess_cfg *pp, vf_error *err) {
    if (!ck->has_preprocess) {
        if (err) *err = ck->preprocess_err;
        return -1;
    }
    *pp = ck->pp;
    return 0;
}

/* ---- config -------------------------------------------------------------------- */
/* A CLIPModel config.json next to open_clip_config.json must describe the
 * same shapes (hub repositories carry both layouts of one model). */
static int check_same_model(const vf_checkpoint *ck, const char *hf_path, const vf_clip_config *hf, vf_error *err) {
    const vf_open_clip_config *oc = &ck->oc;
    struct { const char *hf_key, *oc_key; int hf, oc, vit_only; } k[] = {
        {"projection_dim", "embed_dim", hf->projection_dim, oc->embed_dim, 0},
        {"text_config.hidden_size", "text_cfg.width", hf->text.enc.hidden_size, oc->text_width, 0},
        {"text_config.num_hidden_layers", "text_cfg.layers", hf->text.enc.num_layers, oc->text_layers, 0},
        {"text_config.num_attention_heads", "text_cfg.heads", hf->text.enc.num_heads, oc->text_heads, 0},
        {"text_config.vocab_size", "text_cfg.vocab_size", hf->text.vocab_size, oc->vocab_size, 0},
        {"text_config.max_position_embeddings", "text_cfg.context_length", hf->text.max_positions, oc->context_length, 0},
        {"vision_config.image_size", "vision_cfg.image_size", hf->vision.image_size, oc->image_size, 0},
        {"vision_config.hidden_size", "vision_cfg.width", hf->vision.enc.hidden_size, oc->vision_width, 1},
        {"vision_config.num_hidden_layers", "vision_cfg.layers", hf->vision.enc.num_layers, oc->vision_layers, 1},
        {"vision_config.patch_size", "vision_cfg.patch_size", hf->vision.patch_size, oc->patch_size, 1},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (k[i].vit_only && oc->is_resnet) continue;
        if (k[i].hf != k[i].oc)
            return vf_fail(err, "%s and %s describe different models (%s %d, %s %d); remove the one that does not go "
                                "with the weights", hf_path, ck->config_path, k[i].hf_key, k[i].hf, k[i].oc_key, k[i].oc);
    }
    return 0;
}

static int open_open_clip(vf_checkpoint *ck, vf_error *err) {
    ck->layout = VF_CKPT_OPEN_CLIP;
    snprintf(ck->config_path, sizeof ck->config_path, "%s/open_clip_config.json", ck->dir);
    snprintf(ck->weights_path, sizeof ck->weights_path, "%s/" VF_OPEN_CLIP_WEIGHTS, ck->dir);
    if (vf_open_clip_config_load(ck->config_path, &ck->oc, err)) return -1;
    vf_open_clip_to_clip_config(&ck->oc, &ck->cfg);
    ck->cfg.random_weights = ck->random_weights = ck->oc.random_weights;
    /* open_clip pools text at the largest token id (its EOT); cpu/clip_text.h
     * follows that rule for the pre-2023 transformers eos_token_id 2. */
    ck->cfg.text.eos_token_id = 2;
    ck->has_config = 1;

    char hf_path[VF_CKPT_PATH_MAX];
    struct stat sb;
    vf_clip_config hf;
    snprintf(hf_path, sizeof hf_path, "%s/config.json", ck->dir);
    if (stat(hf_path, &sb) == 0 && S_ISREG(sb.st_mode) && vf_clip_config_load(hf_path, &hf, NULL) == 0)
        return check_same_model(ck, hf_path, &hf, err);
    return 0;
}

static void open_hugging_face(vf_checkpoint *ck) {
    struct stat sb;
    ck->layout = VF_CKPT_HUGGING_FACE;
    /* vf_clip_config_load's rule: DIR/config.json, or the path itself when it is a file */
    if (stat(ck->dir, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(ck->config_path, sizeof ck->config_path, "%s/config.json", ck->dir);
    else snprintf(ck->config_path, sizeof ck->config_path, "%s", ck->dir);
    snprintf(ck->weights_path, sizeof ck->weights_path, "%s/model.safetensors", ck->dir);
    ck->has_config = vf_clip_config_load(ck->dir, &ck->cfg, &ck->config_err) == 0;
    if (ck->has_config) ck->random_weights = ck->cfg.random_weights;
}

int vf_checkpoint_open_files(vf_checkpoint *ck, const char *dir, vf_error *err) {
    memset(ck, 0, sizeof *ck);
    if (strlen(dir) >= sizeof ck->dir) return vf_fail(err, "%.80s...: model directory path is too long", dir);
    snprintf(ck->dir, sizeof ck->dir, "%s", dir);
    if (vf_open_clip_is_dir(dir)) {
        if (open_open_clip(ck, err)) {
            memset(ck, 0, sizeof *ck);
            return -1;
        }
    } else {
        open_hugging_face(ck);
    }
    find_preprocess(ck);
    vf_checkpoint_find_tokenizer(ck->dir, ck->tokenizer_path, sizeof ck->tokenizer_path);
    return 0;
}

int vf_checkpoint_open_weights(vf_checkpoint *ck, vf_error *err) {
    if (ck->has_weights) return 0;
    if (!ck->has_config) {
        if (err) *err = ck->config_err;
        return -1;
    }
    if (vf_st_open(&ck->st, ck->weights_path, err)) return -1;
    if (vf_clip_fingerprint(&ck->st, &ck->cfg, ck->fingerprint, err)) {
        vf_st_close(&ck->st);
        return -1;
    }
    vf_fingerprint_hex(ck->fingerprint, ck->fingerprint_hex);
    ck->has_weights = 1;
    return 0;
}

int vf_checkpoint_open(vf_checkpoint *ck, const char *dir, vf_error *err) {
    if (vf_checkpoint_open_files(ck, dir, err)) return -1;
    if (vf_checkpoint_open_weights(ck, err)) {
        vf_checkpoint_close(ck);
        return -1;
    }
    return 0;
}

void vf_checkpoint_close(vf_checkpoint *ck) {
    if (ck->has_weights) vf_st_close(&ck->st);
    memset(ck, 0, sizeof *ck);
}

/* ---- fingerprint ------------------------------------------------------------- */
static void sha_u64(vf_sha256_ctx *c, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    vf_sha256_add(c, b, 8);
}

int vf_clip_fingerprint(const vf_safetensors *st, const vf_clip_config *cfg, unsigned char out[VF_FINGERPRINT_LEN], vf_error *err) {
    char *json = vf_clip_config_to_json(cfg);
    if (!json) return vf_fail(err, "fingerprint: out of memory");
    vf_sha256_ctx c;
    vf_sha256_begin(&c);
    vf_sha256_add(&c, (const unsigned char *)json, strlen(json) + 1);
    free(json);
    /* Tensors are sorted by name.  Sample 64 bytes from the start, middle and
     * end of each: a different checkpoint with the same shapes differs there
     * with overwhelming probability. */
    for (int i = 0; i < st->n_tensors; i++) {
        const vf_st_tensor *t = &st->tensors[i];
        vf_sha256_add(&c, (const unsigned char *)t->name, strlen(t->name) + 1);
        sha_u64(&c, (uint64_t)t->dtype);
        sha_u64(&c, (uint64_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) sha_u64(&c, (uint64_t)t->shape[d]);
        size_t n = t->end - t->begin, k = n < 64 ? n : 64;
        vf_sha256_add(&c, t->data, k);
        vf_sha256_add(&c, t->data + (n - k) / 2, k);
        vf_sha256_add(&c, t->data + n - k, k);
    }
    vf_sha256_end(&c, out);
    return 0;
}

void vf_fingerprint_hex(const unsigned char fp[VF_FINGERPRINT_LEN], char hex[2 * VF_FINGERPRINT_LEN + 1]) {
    for (int i = 0; i < VF_FINGERPRINT_LEN; i++) snprintf(hex + 2 * i, 3, "%02x", fp[i]);
}
