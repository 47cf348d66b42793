/* tokenizer_locate: which vocabulary files go with a checkpoint (an explicit
 * --tokenizer / [model] tokenizer path first, then the files
 * vf_checkpoint_find_tokenizer found in the model directory), the message
 * that says what to provide when there are none, which library's text rules
 * apply (the checkpoint's), and whether the vocabulary belongs to the model
 * at all (from the checkpoint's config, not the directory again). */
#include "clip/checkpoint.h"
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

static int locate_and_load(vf_tokenizer **out, const char *model_dir, const char *found, const char *tokenizer_path,
                           char *source, size_t source_len, vf_error *err);

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

/* A tokenizer directory's special_tokens_map.json / tokenizer_config.json. */
static int check_specials(const char *source, const char *model_dir, vf_error *err) {
    struct stat st;
    if (stat(source, &st) == 0 && S_ISDIR(st.st_mode) &&
        (check_special_names(source, "special_tokens_map.json", model_dir, err) ||
         check_special_names(source, "tokenizer_config.json", model_dir, err)))
        return -1;
    return 0;
}

/* Whether tokenizer t (from source) belongs to checkpoint ck; nothing to
 * check when its directory has no config.json (a vocabulary directory). */
static int check_model(const vf_tokenizer *t, const char *source, const vf_checkpoint *ck, vf_error *err) {
    const char *model_dir = ck->dir;
    const int open_clip = ck->layout == VF_CKPT_OPEN_CLIP;
    if (check_specials(source, model_dir, err)) return -1;
    int rows, random, eos = -1, bos = -1;
    const char *lib;
    char cfg_name[4200];
    if (open_clip) {
        rows = ck->oc.vocab_size, random = ck->oc.random_weights, lib = "OpenCLIP";
        snprintf(cfg_name, sizeof cfg_name, "%s/open_clip_config.json text_cfg.vocab_size", model_dir);
    } else {
        /* a model "directory" that is a file has no config.json in it */
        if (strcmp(ck->config_path, ck->dir) == 0) return 0;
        if (!ck->has_config) {
            /* (only a checkpoint opened without its weights lacks a config) */
            if (access(ck->config_path, F_OK) != 0) return 0;
            if (err) *err = ck->config_err;
            return -1;
        }
        const vf_clip_config *cfg = &ck->cfg;
        rows = cfg->text.vocab_size, random = cfg->random_weights, lib = "Hugging Face";
        if (cfg->text.eos_token_id != 2) eos = cfg->text.eos_token_id, bos = cfg->text.bos_token_id;
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

int vf_tokenizer_load_for_checkpoint(vf_tokenizer **out, const vf_checkpoint *ck, const char *tokenizer_path,
                                     char *source, size_t source_len, vf_error *err) {
    char src[4200] = "";
    *out = NULL;
    if (locate_and_load(out, ck->dir, ck->tokenizer_path, tokenizer_path, src, sizeof src, err)) return -1;
    vf_tokenizer_set_text_rules(*out, ck->layout == VF_CKPT_OPEN_CLIP ? VF_TOK_TEXT_OPEN_CLIP : VF_TOK_TEXT_HF);
    if (check_model(*out, src, ck, err)) {
        vf_tokenizer_free(*out);
        *out = NULL;
        return -1;
    }
    if (source) snprintf(source, source_len, "%s", src);
    return 0;
}

int vf_tokenizer_load_for_model(vf_tokenizer **out, const char *model_dir, const char *tokenizer_path, char *source,
                                size_t source_len, vf_error *err) {
    *out = NULL;
    if (!model_dir) {   /* a vocabulary alone: Hugging Face's text rules, nothing to check it against */
        char src[4200] = "";
        /* ("(null)": what the message said before, no caller gets there) */
        if (locate_and_load(out, "(null)", NULL, tokenizer_path, src, sizeof src, err)) return -1;
        vf_tokenizer_set_text_rules(*out, VF_TOK_TEXT_HF);
        if (source) snprintf(source, source_len, "%s", src);
        return 0;
    }
    vf_checkpoint *ck = malloc(sizeof *ck);
    if (!ck) return vf_fail(err, "%s: out of memory", model_dir);
    int rc;
    vf_error ck_err = {{0}};
    if (vf_checkpoint_open_files(ck, model_dir, &ck_err) == 0) {
        rc = vf_tokenizer_load_for_checkpoint(out, ck, tokenizer_path, source, source_len, err);
        vf_checkpoint_close(ck);
    } else {
        /* as before the checkpoint: a tokenizer that cannot be found or loaded,
         * or names other specials, is named before the model's config */
        char found[4200], src[4200] = "";
        vf_checkpoint_find_tokenizer(model_dir, found, sizeof found);
        rc = -1;
        if (locate_and_load(out, model_dir, found, tokenizer_path, src, sizeof src, err) == 0) {
            if (check_specials(src, model_dir, err) == 0 && err) *err = ck_err;
            vf_tokenizer_free(*out);
            *out = NULL;
        }
    }
    free(ck);
    return rc;
}

/* tokenizer_path, else `found`: the vocabulary files of model_dir
 * (vf_checkpoint_find_tokenizer; "" or NULL when it has none). */
static int locate_and_load(vf_tokenizer **out, const char *model_dir, const char *found, const char *tokenizer_path,
                           char *source, size_t source_len, vf_error *err) {
    if (tokenizer_path) return load_path(out, tokenizer_path, source, source_len, err);
    if (found && found[0]) return load_path(out, found, source, source_len, err);
    return vf_fail(err,
                   "%s: no tokenizer: the directory has neither vocab.json + merges.txt nor " BPE_GZ_NAME
                   " (OpenCLIP hub checkpoints ship without one); name one with --tokenizer PATH (knowledge party: "
                   "[model] tokenizer = PATH), PATH being a directory with vocab.json + merges.txt (as in the Hugging "
                   "Face openai/clip-vit-base-patch16 repository) or OpenAI's " BPE_GZ_NAME " (inside the open_clip_torch "
                   "package: `pip download open_clip_torch`, file open_clip/" BPE_GZ_NAME "), or copy one into the "
                   "model directory",
                   model_dir);
}
