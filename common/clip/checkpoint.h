/* checkpoint: a CLIP checkpoint directory, opened once.  Everything that
 * asks about a model directory asks this object: its layout, its config,
 * its tensor file (opened and validated once), which vocabulary files go
 * with it, the preprocessing it asks for and its fingerprints.  The towers
 * (clip_model.h: vf_clip_text_load_from, vf_vision_load_from), the tokenizer
 * (vf_checkpoint_tokenizer) and the preprocessing (vf_checkpoint_preprocess)
 * are taken from it; nothing else reads the directory.
 *
 * Layouts:
 *   OpenCLIP      open_clip_config.json + open_clip_model.safetensors
 *   Hugging Face  config.json + model.safetensors; preprocessing from
 *                 preprocessor_config.json (transformers 4.x), else
 *                 processor_config.json's "image_processor" (5.x)
 * A directory with open_clip_config.json is OpenCLIP.  Hub repositories
 * often carry both layouts; when config.json there is a CLIPModel config
 * whose shapes differ from open_clip_config.json's, opening fails naming
 * both files (they describe different models).  A config.json that is not
 * a CLIPModel config (another library's) is left alone.
 *
 * The fingerprint (SHA-256 over the canonical config JSON, then for every
 * tensor in name order its name, dtype, ndim, shape and 64 bytes from the
 * start, middle and end of its data) is the one both towers report and
 * parties compare; the preprocessing fingerprint is vf_preprocess_fingerprint
 * of the preprocessing it asks for. */
#ifndef VF_CLIP_CHECKPOINT_H
#define VF_CLIP_CHECKPOINT_H

#include <stddef.h>
#include "clip/clip_config.h"
#include "clip/open_clip_config.h"
#include "clip/tokenizer.h"
#include "formats/safetensors.h"
#include "image/preprocess.h"
#include "util/vf_error.h"

#define VF_FINGERPRINT_LEN 32
#define VF_CKPT_PATH_MAX 4200

typedef enum vf_checkpoint_layout {
    VF_CKPT_HUGGING_FACE = 1, /* config.json + model.safetensors */
    VF_CKPT_OPEN_CLIP = 2,    /* open_clip_config.json + open_clip_model.safetensors */
} vf_checkpoint_layout;

typedef struct vf_checkpoint {
    char dir[4096];
    vf_checkpoint_layout layout;
    /* config: the towers' config (OpenCLIP: converted, text pooled at the
     * largest token id as open_clip does, i.e. eos_token_id 2) */
    char config_path[VF_CKPT_PATH_MAX];
    int has_config;
    vf_clip_config cfg;
    vf_open_clip_config oc;         /* VF_CKPT_OPEN_CLIP only */
    int random_weights;             /* made by make-model: outputs are meaningless */
    /* the tensor file (vf_checkpoint_open_weights) */
    char weights_path[VF_CKPT_PATH_MAX];
    int has_weights;
    vf_safetensors st;
    unsigned char fingerprint[VF_FINGERPRINT_LEN];
    char fingerprint_hex[2 * VF_FINGERPRINT_LEN + 1];
    /* preprocessing */
    int has_preprocess;
    char preprocess_path[VF_CKPT_PATH_MAX]; /* the file it came from */
    vf_preprocess_cfg pp;
    char preprocess_fingerprint[65];
    /* the directory's own vocabulary: itself (vocab.json + merges.txt) or its
     * bpe_simple_vocab_16e6.txt.gz; "" when it has neither (not loaded here) */
    char tokenizer_path[VF_CKPT_PATH_MAX];
    /* why has_config / has_preprocess are 0 (what asking for them fails with) */
    vf_error config_err, preprocess_err;
} vf_checkpoint;

/* Opens everything the towers need: the config (required) and the tensor
 * file, and computes the fingerprint; finds the preprocessing and the
 * vocabulary files (their absence is an error only when asked for).  On
 * failure nothing stays open and err names the file and the problem. */
int vf_checkpoint_open(vf_checkpoint *ck, const char *dir, vf_error *err);
/* The directory's small files only (layout, config when there is one,
 * preprocessing, vocabulary files); the tensor file is not opened.  For
 * preprocessing-only directories and config checks: a missing config.json
 * is not an error here (it is in config_err). */
int vf_checkpoint_open_files(vf_checkpoint *ck, const char *dir, vf_error *err);
/* After vf_checkpoint_open_files: opens the tensor file and computes the
 * fingerprint (needs the config). */
int vf_checkpoint_open_weights(vf_checkpoint *ck, vf_error *err);
void vf_checkpoint_close(vf_checkpoint *ck);

/* The preprocessing the checkpoint asks for, or the error saying why there is none. */
int vf_checkpoint_preprocess(const vf_checkpoint *ck, vf_preprocess_cfg *pp, vf_error *err);
/* The tokenizer for text work with the checkpoint: tokenizer_path when
 * non-NULL (a directory with vocab.json + merges.txt, or a
 * bpe_simple_vocab_16e6.txt.gz file), else the directory's own vocabulary;
 * loaded by vf_tokenizer_load_for_checkpoint (vf_tokenizer_load_for_model's
 * rules and messages, from this object).  source (may
 * be NULL) receives the directory or file it was loaded from. */
int vf_checkpoint_tokenizer(const vf_checkpoint *ck, const char *tokenizer_path, vf_tokenizer **out, char *source,
                            size_t source_len, vf_error *err);
/* "huggingface" or "open_clip". */
const char *vf_checkpoint_layout_name(vf_checkpoint_layout layout);

/* The vocabulary files that go with a model directory: DIR itself when it
 * has vocab.json or merges.txt (either: loading the pair then names a missing
 * half), else DIR/bpe_simple_vocab_16e6.txt.gz when present; "" otherwise. */
void vf_checkpoint_find_tokenizer(const char *dir, char *path, size_t path_len);

/* ---- fingerprint ---------------------------------------------------------- */
int vf_clip_fingerprint(const vf_safetensors *st, const vf_clip_config *cfg, unsigned char out[VF_FINGERPRINT_LEN], vf_error *err);
/* 64 lowercase hex digits + NUL. */
void vf_fingerprint_hex(const unsigned char fp[VF_FINGERPRINT_LEN], char hex[2 * VF_FINGERPRINT_LEN + 1]);

#endif
