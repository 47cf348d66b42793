/* tokenizer_locate: which vocabulary files go with a checkpoint directory
 * (an explicit --tokenizer / [model] tokenizer path first, then the model
 * directory's own files), and the message that says what to provide when
 * there are none. */
#include "clip/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BPE_GZ_NAME "bpe_simple_vocab_16e6.txt.gz"

static int exists_in(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static int load_path(vf_tokenizer **out, const char *path, char *source, size_t source_len, vf_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) return vf_fail(err, "tokenizer %s: %s", path, strerror(errno));
    int rc = S_ISDIR(st.st_mode) ? vf_tokenizer_load_dir(out, path, err) : vf_tokenizer_load_bpe_gz(out, path, err);
    if (rc == 0 && source) snprintf(source, source_len, "%s", path);
    return rc;
}

int vf_tokenizer_load_for_model(vf_tokenizer **out, const char *model_dir, const char *tokenizer_path, char *source,
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
