/* tokenizer_locate: which vocabulary files go with a checkpoint directory
 * (an explicit --tokenizer / [model] tokenizer path first, then the model
 * directory's own files), the message that says what to provide when there
 * are none, which library's text rules apply (the checkpoint's), and whether
 * the vocabulary belongs to the model at all. */
#include "clip/clip_config.h"
#include "clip/open_clip_config.h"
#include "clip/tokenizer.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#define BPE_GZ_NAME "bpe_simple_vocab_16e6.txt.gz"

static int exists_in(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static int locate_and_load(vf_tokenizer **out, const char *model_dir, const char *tokenizer_path, char *source,
                           size_t source_len, vf_error *err);

static int load_path(vf_tokenizer **out, const char *path, char *source, size_t source_len, vf_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) return vf_fail(err, "tokenizer %s: %s", path, strerror(errno));
    int rc = S_ISDIR(st.st_mode) ? vf_tokenizer_load_dir(out, path, err) : vf_tokenizer_load_bpe_gz(out, path, err);
    if (rc == 0 && source) snprintf(source, source_len, "%s", path);
    return rc;
}

/* "bos_token" / "eos_token" of a tokenizer directory's JSON file, when it
 * names them: a string or {"content": ...}.  Returns 0, or -1 with err set. */
static int check_special_names(const char *dir, const char *file, const char *model_dir, vf_error *err) {
    char path[4200], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (access(path, F_OK) != 0) return 0;
    if (vf_read_file(path, &text, &len, err)) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vf_fail(err, "tokenizer %s: malformed JSON", path);
    }
    static const char *const keys[2] = {"bos_token", "eos_token"}, *const want[2] = {"<|startoftext|>", "<|endoftext|>"};
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsString(v))
            rc = vf_fail(err, "tokenizer %s: %s is not a string", path, keys[k]);
        else if (strcmp(v->valuestring, want[k]) != 0)
            rc = vf_fail(err, "tokenizer %s does not belong to model %s: it names %s \"%s\" where CLIP models use \"%s\"",
                         path, model_dir, keys[k], v->valuestring, want[k]);
    }
    cJSON_Delete(root);
    return rc;
}

/* Whether tokenizer t (from source) belongs to the checkpoint in model_dir;
 * nothing to check when model_dir has no config (a vocabulary directory). */
static int check_model(const vf_tokenizer *t, const char *source, const char *model_dir, int open_clip, vf_error *err) {
    struct stat st;
    if (stat(source, &st) == 0 && S_ISDIR(st.st_mode) &&
        (check_special_names(source, "special_tokens_map.json", model_dir, err) ||
         check_special_names(source, "tokenizer_config.json", model_dir, err)))
        return -1;
    int rows, random, eos = -1, bos = -1;
    const char *lib;
    char cfg_name[4200];
    if (open_clip) {
        vf_open_clip_config oc;
        if (vf_open_clip_config_load(model_dir, &oc, err)) return -1;
        rows = oc.vocab_size, random = oc.random_weights, lib = "OpenCLIP";
        snprintf(cfg_name, sizeof cfg_name, "%s/open_clip_config.json text_cfg.vocab_size", model_dir);
    } else {
        if (!exists_in(model_dir, "config.json")) return 0;
        vf_clip_config cfg;
        if (vf_clip_config_load(model_dir, &cfg, err)) return -1;
        rows = cfg.text.vocab_size, random = cfg.random_weights, lib = "Hugging Face";
        if (cfg.text.eos_token_id != 2) eos = cfg.text.eos_token_id, bos = cfg.text.bos_token_id;
        snprintf(cfg_name, sizeof cfg_name, "%s/config.json text_config.vocab_size", model_dir);
    }
    const int n = vf_tokenizer_vocab_size(t), sot = vf_tokenizer_sot(t), eot = vf_tokenizer_eot(t);
    /* more rows than tokens: extra rows are never looked up (make-model's presets
     * keep real shapes with the small vocabulary); but where no eos_token_id
     * pins the vocabulary down (OpenCLIP, legacy configs), real weights must
     * have exactly the tokenizer's size */
    if (n > rows || (n < rows && !random && eos < 0))
        return vf_fail(err, "tokenizer %s does not belong to model %s: it has %d tokens but the model's token embedding "
                       "has %d rows (%s)", source, model_dir, n, rows, cfg_name);
    /* (make-model's random HF weights are test fixtures that tests pair with other vocabularies) */
    if (eos >= 0 && !random && (eot != eos || sot != bos))
        return vf_fail(err, "tokenizer %s does not belong to model %s: its <|startoftext|>/<|endoftext|> ids are %d/%d but "
                       "%s/config.json has bos_token_id/eos_token_id %d/%d", source, model_dir, sot, eot, model_dir, bos, eos);
    if (eos < 0 && (eot != n - 1 || sot != n - 2))
        return vf_fail(err, "tokenizer %s does not belong to model %s: its <|startoftext|>/<|endoftext|> ids are %d/%d but a "
                       "%s checkpoint%s pools text at the largest id, so they must be the last two of its %d tokens (%d/%d)",
                       source, model_dir, sot, eot, lib, open_clip ? "" : " with the legacy eos_token_id 2", n, n - 2, n - 1);
    return 0;
}

int vf_tokenizer_load_for_model(vf_tokenizer **out, const char *model_dir, const char *tokenizer_path, char *source,
                                size_t source_len, vf_error *err) {
    char src[4200] = "";
    *out = NULL;
    if (locate_and_load(out, model_dir, tokenizer_path, src, sizeof src, err)) return -1;
    const int open_clip = model_dir && vf_open_clip_is_dir(model_dir);
    vf_tokenizer_set_text_rules(*out, open_clip ? VF_TOK_TEXT_OPEN_CLIP : VF_TOK_TEXT_HF);
    if (model_dir && check_model(*out, src, model_dir, open_clip, err)) {
        vf_tokenizer_free(*out);
        *out = NULL;
        return -1;
    }
    if (source) snprintf(source, source_len, "%s", src);
    return 0;
}

static int locate_and_load(vf_tokenizer **out, const char *model_dir, const char *tokenizer_path, char *source,
                           size_t source_len, vf_error *err) {
    if (tokenizer_path) return load_path(out, tokenizer_path, source, source_len, err);
    /* either Hugging Face file present: load the pair, so a missing half is named */
    if (exists_in(model_dir, "vocab.json") || exists_in(model_dir, "merges.txt"))
        return load_path(out, model_dir, source, source_len, err);
    if (exists_in(model_dir, BPE_GZ_NAME)) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", model_dir, BPE_GZ_NAME);
        return load_path(out, path, source, source_len, err);
    }
    return vf_fail(err,
                   "%s: no tokenizer: the directory has neither vocab.json + merges.txt nor " BPE_GZ_NAME
                   " (OpenCLIP hub checkpoints ship without one); name one with --tokenizer PATH (knowledge party: "
                   "[model] tokenizer = PATH), PATH being a directory with vocab.json + merges.txt (as in the Hugging "
                   "Face openai/clip-vit-base-patch16 repository) or OpenAI's " BPE_GZ_NAME " (inside the open_clip_torch "
                   "package: `pip download open_clip_torch`, file open_clip/" BPE_GZ_NAME "), or copy one into the "
                   "model directory",
                   model_dir);
}
