/* context_learner: context vectors, optimizer and best context (see context_learner.h). */
#include "coop/context_learner.h"
#include "coop/trainer.h"

#include "formats/safetensors.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The arena's layout, for both of its passes (util/arena.h). */
static void learner_carve(vf_context_learner *l, size_t CD, size_t n) {
    l->text = vf_arena_floats(&l->arena, CD);
    l->dctx = vf_arena_floats(&l->arena, n);
    l->best_ctx = vf_arena_floats(&l->arena, n);
}

int vf_context_learner_init(vf_context_learner *l, vf_coop *coop, const vf_optim_config *oc, vf_error *err) {
    memset(l, 0, sizeof *l);   /* l->coop stays NULL until all is set up: _free frees nothing before */
    const size_t CD = (size_t)vf_coop_n_classes(coop) * vf_coop_feature_dim(coop), n = (size_t)vf_coop_ctx_count(coop);
    if (vf_optim_init(&l->optim, oc, (long)n, err)) return -1;
    vf_arena_plan(&l->arena);
    learner_carve(l, CD, n);
    if (vf_arena_commit(&l->arena, err)) {
        vf_optim_free(&l->optim);
        return -1;
    }
    learner_carve(l, CD, n);
    l->coop = coop;
    memcpy(l->best_ctx, vf_coop_ctx(coop), n * sizeof(float));
    l->best_auc = NAN;
    return 0;
}

void vf_context_learner_free(vf_context_learner *l) {
    if (!l->coop) return;
    vf_optim_free(&l->optim);
    vf_arena_free(&l->arena);
    l->coop = NULL;
}

int vf_context_learner_forward(vf_context_learner *l, vf_error *err) { return vf_coop_text_forward(l->coop, l->text, err); }

int vf_context_learner_update(vf_context_learner *l, const float *dtext, float lr, vf_error *err) {
    return vf_text_update(l->coop, &l->optim, dtext, lr, l->dctx, err);
}

void vf_context_learner_mark_best(vf_context_learner *l, int epoch, double val_auc) {
    memcpy(l->best_ctx, vf_coop_ctx(l->coop), (size_t)vf_coop_ctx_count(l->coop) * sizeof(float));
    l->best_epoch = epoch;
    l->best_auc = val_auc;
}

int vf_context_learner_restore_best(vf_context_learner *l, vf_error *err) {
    return vf_coop_set_ctx(l->coop, l->best_ctx, vf_coop_ctx_rows(l->coop), vf_coop_width(l->coop), "best context", err);
}

int vf_context_learner_save(const vf_context_learner *l, const char *path, uint64_t step, const char *model_fingerprint,
                            vf_error *err) {
    int64_t shape[2] = {vf_coop_ctx_rows(l->coop), vf_coop_width(l->coop)};
    char buf[64];
    vf_st_writer w;
    vf_st_writer_init(&w);
    vf_st_writer_checksum(&w);   /* a state file: a torn or flipped copy is refused on load */
    int rc = vf_st_writer_add_f32(&w, "ctx", VF_DT_F32, 2, shape, vf_coop_ctx(l->coop), err) ||
             vf_st_writer_add_f32(&w, "best_ctx", VF_DT_F32, 2, shape, l->best_ctx, err) ||
             vf_optim_add_to_writer(&l->optim, &w, "optim.", err);
    if (!rc) {
        snprintf(buf, sizeof buf, "%" PRIu64, step);
        rc = vf_st_writer_meta(&w, "step", buf, err);
    }
    if (!rc) {
        snprintf(buf, sizeof buf, "%d", l->best_epoch);
        rc = vf_st_writer_meta(&w, "best_epoch", buf, err);
    }
    if (!rc) {
        snprintf(buf, sizeof buf, "%.17g", l->best_auc);
        rc = vf_st_writer_meta(&w, "best_val_auc", buf, err);
    }
    if (!rc) rc = vf_st_writer_meta(&w, "model_fingerprint", model_fingerprint, err);
    if (!rc) rc = vf_st_writer_save(&w, path, err);
    vf_st_writer_free(&w);
    return rc ? -1 : 0;
}

int vf_context_learner_load(vf_context_learner *l, const char *path, const char *model_fingerprint, vf_error *err) {
    vf_safetensors st;
    if (vf_st_open(&st, path, err)) return -1;
    const int rows = vf_coop_ctx_rows(l->coop), W = vf_coop_width(l->coop);
    int64_t shape[2] = {rows, W};
    int rc = -1;
    float *ctx = malloc((size_t)rows * W * sizeof *ctx);
    const char *fp = vf_st_meta(&st, "model_fingerprint"), *be = vf_st_meta(&st, "best_epoch"),
               *ba = vf_st_meta(&st, "best_val_auc");
    if (!ctx) { vf_fail(err, "out of memory"); goto out; }
    if (!fp || strcmp(fp, model_fingerprint)) { vf_fail(err, "%s: written for another model", path); goto out; }
    if (!be || !ba) { vf_fail(err, "%s: metadata best_epoch/best_val_auc missing", path); goto out; }
    if (vf_st_read_f32(&st, "ctx", 2, shape, ctx, err) || vf_st_read_f32(&st, "best_ctx", 2, shape, l->best_ctx, err) ||
        vf_optim_load_from(&l->optim, &st, "optim.", err) || vf_coop_set_ctx(l->coop, ctx, rows, W, path, err))
        goto out;
    l->best_epoch = atoi(be);
    l->best_auc = strtod(ba, NULL);
    rc = 0;
out:
    free(ctx);
    vf_st_close(&st);
    return rc;
}
