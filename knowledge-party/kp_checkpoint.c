/* kp_checkpoint: the knowledge party's durable run state.  One file per
 * checkpointed step, <state>/runs/<run_id>/kp-<step>.safetensors, written
 * atomically: "ctx", "best_ctx", the optimizer state ("optim.*") and metadata
 * (step, best_epoch, best_val_auc, model fingerprint).  The aggregator asks
 * for a save and commits its own progress only after the Ack, so the newest
 * step it has committed is always here; the two newest files are kept
 * because the aggregator may have died between the two commits. */
#include "kp.h"
#include "util/log.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void ckpt_path(const kp_state *k, uint64_t step, char *out, size_t size) {
    snprintf(out, size, "%s/kp-%" PRIu64 ".safetensors", k->run_dir, step);
}

/* Removes checkpoints older than the two newest. */
static void prune(const kp_state *k, uint64_t newest) {
    DIR *d = opendir(k->run_dir);
    if (!d) return;
    uint64_t second = 0;
    struct dirent *e;
    uint64_t steps[4096];
    int n = 0;
    while ((e = readdir(d)) && n < 4096) {
        uint64_t s;
        char tail[32];
        if (sscanf(e->d_name, "kp-%" SCNu64 ".safetensor%31s", &s, tail) == 2 && !strcmp(tail, "s")) steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        if (steps[i] < newest && steps[i] > second) second = steps[i];
    for (int i = 0; i < n; i++)
        if (steps[i] != newest && steps[i] != second) {
            char p[4400];
            ckpt_path(k, steps[i], p, sizeof p);
            unlink(p);
        }
}

int kp_checkpoint_save(kp_state *k, uint64_t step, vf_error *err) {
    const int rows = vf_coop_ctx_rows(k->coop), W = vf_coop_width(k->coop);
    int64_t shape[2] = {rows, W};
    char path[4400], buf[64];
    ckpt_path(k, step, path, sizeof path);
    vf_st_writer w;
    vf_st_writer_init(&w);
    int rc = vf_st_writer_add_f32(&w, "ctx", VF_DT_F32, 2, shape, vf_coop_ctx(k->coop), err) ||
             vf_st_writer_add_f32(&w, "best_ctx", VF_DT_F32, 2, shape, k->best_ctx, err) ||
             vf_optim_add_to_writer(&k->optim, &w, "optim.", err);
    if (!rc) {
        snprintf(buf, sizeof buf, "%" PRIu64, step);
        rc = vf_st_writer_meta(&w, "step", buf, err);
    }
    if (!rc) {
        snprintf(buf, sizeof buf, "%d", k->best_epoch);
        rc = vf_st_writer_meta(&w, "best_epoch", buf, err);
    }
    if (!rc) {
        snprintf(buf, sizeof buf, "%.17g", k->best_auc);
        rc = vf_st_writer_meta(&w, "best_val_auc", buf, err);
    }
    if (!rc) rc = vf_st_writer_meta(&w, "model_fingerprint", k->fingerprint, err);
    if (!rc) rc = vf_st_writer_save(&w, path, err);
    vf_st_writer_free(&w);
    if (rc) return -1;
    prune(k, step);
    return 0;
}

int kp_checkpoint_load(kp_state *k, uint64_t step, vf_error *err) {
    char path[4400];
    ckpt_path(k, step, path, sizeof path);
    if (access(path, R_OK) != 0)
        return vf_fail(err, "%s: no checkpoint of step %" PRIu64 " to resume from", path, step);
    vf_safetensors st;
    if (vf_st_open(&st, path, err)) return -1;
    const int rows = vf_coop_ctx_rows(k->coop), W = vf_coop_width(k->coop);
    int64_t shape[2] = {rows, W};
    int rc = -1;
    float *ctx = malloc((size_t)rows * W * sizeof *ctx);
    const char *fp = vf_st_meta(&st, "model_fingerprint"), *be = vf_st_meta(&st, "best_epoch"),
               *ba = vf_st_meta(&st, "best_val_auc");
    if (!ctx) { vf_fail(err, "out of memory"); goto out; }
    if (!fp || strcmp(fp, k->fingerprint)) { vf_fail(err, "%s: written for another model", path); goto out; }
    if (!be || !ba) { vf_fail(err, "%s: metadata best_epoch/best_val_auc missing", path); goto out; }
    if (vf_st_read_f32(&st, "ctx", 2, shape, ctx, err) || vf_st_read_f32(&st, "best_ctx", 2, shape, k->best_ctx, err) ||
        vf_optim_load_from(&k->optim, &st, "optim.", err) ||
        vf_coop_set_ctx(k->coop, ctx, rows, W, path, err))
        goto out;
    k->best_epoch = atoi(be);
    k->best_auc = strtod(ba, NULL);
    rc = 0;
out:
    free(ctx);
    vf_st_close(&st);
    return rc;
}
