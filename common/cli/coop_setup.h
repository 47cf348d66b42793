/* coop_setup: what `vflclip train` and `vflclip evaluate` both do before
 * the CoOp work starts: load the text tower and tokenizer, open the data
 * set, and embed the wanted splits with the frozen vision tower on the chosen
 * device (through the embedding cache), then release the vision tower.  The
 * CoOp text forward/backward itself runs on the CPU. */
#ifndef VF_CLI_COOP_SETUP_H
#define VF_CLI_COOP_SETUP_H

#include "clip/checkpoint.h"
#include "clip/clip_model.h"
#include "clip/tokenizer.h"
#include "coop/trainer.h"
#include "data/dataset.h"
#include "device/device.h"
#include "util/vf_error.h"

typedef struct vf_coop_setup vf_coop_setup;

typedef struct vf_coop_setup_options {
    const char *model_dir, *data;
    vf_checkpoint *ck;                /* NULL: model_dir's checkpoint is opened (and closed) by the setup; else
                                       * model_dir's, opened at least with its files (its weights are opened
                                       * here), borrowed: it outlives the setup */
    const char *tokenizer;            /* NULL = the model directory's (vf_checkpoint_tokenizer) */
    const char *const *class_codes;   /* CSV dx codes per label; NULL = DermaMNIST's */
    int n_classes;
    const char *image_dir;
    unsigned long long split_seed;
    const char *cache_dir;            /* NULL = default directory */
    int no_cache;
    int embed_batch;                  /* vision batch; 0 = 32 */
    int want[VF_SPLIT_COUNT];         /* splits to embed */
    int tty;                          /* progress as one updating line */
    vf_device_kind device;            /* where the image tower runs (auto: a GPU when there is one) */
    vf_device_precision precision;    /* device/device.h: default, auto, bf16, fp32, tf32 */
    /* Checked before any image is encoded (NULL / 0: not checked): */
    const char *classes_from;         /* what gave the n_classes class names, e.g. "--classes": a MedMNIST .npz's
                                       * labels must then be exactly 0..n_classes-1 (range and count) */
    const char *init_words;           /* --init-words, with n_ctx_given: their token count must equal n_ctx */
    int n_ctx, n_ctx_given;
    /* Called once the model, tokenizer and data set are open, before any image
     * is encoded (NULL: none); non-zero fails the setup with err. */
    int (*before_encoding)(void *ctx, const vf_coop_setup *s, vf_error *err);
    void *before_encoding_ctx;
} vf_coop_setup_options;

struct vf_coop_setup {
    vf_checkpoint *ck;                /* the model directory, read once: towers, tokenizer, preprocessing */
    int own_ck;                       /* opened (heap-allocated) by vf_coop_setup_open, closed by _close */
    vf_clip_text_tower text;
    int text_loaded;
    vf_tokenizer *tok;
    vf_dataset ds;
    int ds_open;
    float *emb[VF_SPLIT_COUNT];
    vf_embedded_split split[VF_SPLIT_COUNT];
    int cache_hits, encoded;          /* over all splits */
    char fingerprint[65];
    int random_weights;
};

int vf_coop_setup_open(vf_coop_setup *s, const vf_coop_setup_options *o, vf_error *err);
void vf_coop_setup_close(vf_coop_setup *s);

#endif
