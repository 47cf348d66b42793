/* coop_setup: towers, tokenizer, data set and cached embeddings for the
 * CoOp commands, all from one checkpoint. */
#include "cli/coop_setup.h"
#include "data/embed_cache.h"
#include "data/model_encoder.h"
#include "image/preprocess.h"
#include "util/log.h"
#include "util/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Images done / total, rate and time left of each split being encoded
 * (util/progress.h: a bar on a terminal, a line every few seconds otherwise). */
typedef struct embed_progress {
    int tty, split;
    vf_progress bar;
} embed_progress;

static void on_embed_progress(void *ctx, vf_split s, int done, int total) {
    embed_progress *p = ctx;
    if ((int)s != p->split) {
        char what[64];
        snprintf(what, sizeof what, "encoding %s images", vf_split_name(s));
        vf_progress_begin(&p->bar, what, "img", total, p->tty ? VF_PROGRESS_TTY : VF_PROGRESS_LINES);
        p->split = (int)s;
    }
    vf_progress_set(&p->bar, done);
    if (done >= total) vf_progress_end(&p->bar);
}

static void warn_random(const char *model_dir) {
    fprintf(stderr,
            "vflclip: WARNING: %s holds RANDOM weights (made by make-model): its embeddings and every metric\n"
            "vflclip: WARNING: computed with it mean nothing about dermatology.\n", model_dir);
}

static int is_npz(const char *path) {
    size_t n = strlen(path);
    return n >= 4 && strcasecmp(path + n - 4, ".npz") == 0;
}

/* A MedMNIST .npz says nothing of its classes but its labels: they must be
 * 0..C-1 for the C class names, the largest one C-1 (the data was opened
 * allowing any label up to VF_DATASET_MAX_CLASSES - 1). */
static int check_labels(vf_coop_setup *s, const vf_coop_setup_options *o, vf_error *err) {
    int max = -1;
    for (int k = 0; k < VF_SPLIT_COUNT; k++)
        for (int i = 0; i < s->ds.split[k].n; i++)
            if (s->ds.split[k].labels[i] > max) max = s->ds.split[k].labels[i];
    if (max >= 0 && max + 1 != o->n_classes)
        return vf_fail(err, "%s gives %d class names but %s has labels 0..%d (%d classes)%s", o->classes_from, o->n_classes,
                       o->data, max, max + 1,
                       max + 1 > o->n_classes ? ": labels past the names would have no class"
                                              : ": the classes past its largest label would have no example");
    s->ds.n_classes = o->n_classes;
    return 0;
}

/* --init-words whose token count is not --n-ctx: refused (CoOp takes n_ctx
 * from the words; a stated n_ctx that disagrees is a contradiction). */
static int check_init_words(const vf_coop_setup *s, const vf_coop_setup_options *o, vf_error *err) {
    int32_t ids[VF_CLIP_CONTEXT_LENGTH];
    int n;
    if (vf_tokenize_words(s->tok, o->init_words, ids, VF_CLIP_CONTEXT_LENGTH, &n, err))
        return vf_error_prefix(err, "--init-words '%s'", o->init_words);
    if (n != o->n_ctx)
        return vf_fail(err, "--n-ctx %d disagrees with --init-words '%s', which are %d tokens with this tokenizer (n_ctx "
                       "is taken from the init words: drop --n-ctx, or make them agree)", o->n_ctx, o->init_words, n);
    return 0;
}

int vf_coop_setup_open(vf_coop_setup *s, const vf_coop_setup_options *o, vf_error *err) {
    memset(s, 0, sizeof *s);
    if (o->ck) {
        s->ck = o->ck;
        if (vf_checkpoint_open_weights(s->ck, err)) goto fail;
    } else {
        if (!(s->ck = malloc(sizeof *s->ck))) return vf_fail(err, "%s: out of memory", o->model_dir);
        if (vf_checkpoint_open(s->ck, o->model_dir, err)) {
            free(s->ck);
            s->ck = NULL;
            return -1;
        }
        s->own_ck = 1;
    }
    if (vf_clip_text_load_from(&s->text, s->ck, err)) goto fail;
    s->text_loaded = 1;
    snprintf(s->fingerprint, sizeof s->fingerprint, "%s", s->ck->fingerprint_hex);
    s->random_weights = s->text.cfg.random_weights;
    if (vf_checkpoint_tokenizer(s->ck, o->tokenizer, &s->tok, NULL, 0, err)) goto fail;
    if (o->init_words && o->n_ctx_given && check_init_words(s, o, err)) goto fail;
    const int label_check = o->classes_from && is_npz(o->data);
    vf_dataset_options dopt = {.class_codes = o->class_codes,
                               .n_classes = label_check ? VF_DATASET_MAX_CLASSES : o->n_classes,
                               .image_dir = o->image_dir, .split_seed = o->split_seed};
    if (vf_dataset_open(&s->ds, o->data, &dopt, err)) goto fail;
    s->ds_open = 1;
    if (label_check && check_labels(s, o, err)) goto fail;
    if (o->before_encoding && o->before_encoding(o->before_encoding_ctx, s, err)) goto fail;

    int any = 0;
    for (int k = 0; k < VF_SPLIT_COUNT; k++) any |= o->want[k] && s->ds.split[k].n > 0;
    if (!any) return 0;
    vf_model_encoder me;
    /* the same checkpoint as the text tower: one fingerprint */
    if (vf_model_encoder_open_from(&me, s->ck, o->embed_batch > 0 ? o->embed_batch : 32, o->device, o->precision, err))
        goto fail;
    const vf_vision_tower *vt = &me.vt;
    if (vt->random_weights) s->random_weights = 1;
    if (s->random_weights) warn_random(o->model_dir);
    char cache_dir[4096];
    if (o->cache_dir) snprintf(cache_dir, sizeof cache_dir, "%s", o->cache_dir);
    else vf_embed_cache_default_dir(cache_dir, sizeof cache_dir);
    embed_progress prog = {.tty = o->tty, .split = -1};
    int rc = 0;
    for (int k = 0; k < VF_SPLIT_COUNT && rc == 0; k++) {
        vf_split_data *d = &s->ds.split[k];
        s->split[k] = (vf_embedded_split){.n = 0, .D = vt->embed_dim, .emb = NULL, .labels = d->labels};
        if (!o->want[k] || d->n == 0) continue;
        s->emb[k] = malloc((size_t)d->n * vt->embed_dim * sizeof(float));
        if (!s->emb[k]) { rc = vf_fail(err, "out of memory for %d embeddings", d->n); break; }
        vf_embed_stats st;
        rc = vf_embed_split(&s->ds, (vf_split)k, &me.enc, &me.pp, o->no_cache ? NULL : cache_dir, s->emb[k], &st,
                            on_embed_progress, &prog, err);
        s->cache_hits += st.cache_hit;
        s->encoded += st.encoded;
        s->split[k].n = d->n;
        s->split[k].emb = s->emb[k];
    }
    vf_model_encoder_close(&me);
    if (rc) goto fail;
    vf_log(VF_INFO, "event=embeddings_ready cache_hits=%d images_encoded=%d cache_dir=%s", s->cache_hits, s->encoded,
           o->no_cache ? "off" : cache_dir);
    return 0;
fail:
    vf_coop_setup_close(s);
    return -1;
}

void vf_coop_setup_close(vf_coop_setup *s) {
    for (int k = 0; k < VF_SPLIT_COUNT; k++) free(s->emb[k]);
    if (s->ds_open) vf_dataset_close(&s->ds);
    if (s->tok) vf_tokenizer_free(s->tok);
    if (s->text_loaded) vf_clip_text_free(&s->text);
    if (s->own_ck) {   /* after the tower that borrowed it */
        vf_checkpoint_close(s->ck);
        free(s->ck);
    }
    memset(s, 0, sizeof *s);
}
