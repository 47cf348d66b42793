/* kp_checkpoint: the knowledge party's durable run state.  One file per
 * checkpointed step, <state>/runs/<run_id>/kp-<step>.safetensors: the
 * context learner's state (vf_context_learner_save).  The aggregator asks
 * for a save and commits its own progress only after the Ack, so the newest
 * step it has committed is always here.  The three newest files are kept:
 * the aggregator may have died between our save and its commit (the newest
 * is then not committed), and when a checkpoint turns out damaged the
 * aggregator goes back to its commit before (progress.json.prev). */
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

#define KEEP 3

static int cmp_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The steps of the checkpoints in dir, newest first (at most 4096). */
static int list_steps(const char *dir, uint64_t steps[4096]) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) && n < 4096) {
        uint64_t s;
        char tail[32];
        if (sscanf(e->d_name, "kp-%" SCNu64 ".safetensor%31s", &s, tail) == 2 && !strcmp(tail, "s")) steps[n++] = s;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, cmp_desc);
    return n;
}

/* Removes checkpoints older than the KEEP newest. */
static void prune(const kp_state *k) {
    uint64_t steps[4096];
    int n = list_steps(k->run_dir, steps);
    for (int i = KEEP; i < n; i++) {
        char p[4400];
        ckpt_path(k, steps[i], p, sizeof p);
        unlink(p);
    }
}

int kp_checkpoint_save(kp_state *k, uint64_t step, vf_error *err) {
    char path[4400];
    ckpt_path(k, step, path, sizeof path);
    if (vf_context_learner_save(&k->learner, path, step, k->fingerprint, err)) return -1;
    prune(k);
    return 0;
}

int kp_warm_start(kp_state *k, const char *from_run, const vf_optim_config *oc, vf_error *err) {
    char dir[4400], path[4500];
    uint64_t steps[4096];
    if (!from_run[0] || strchr(from_run, '/') || from_run[0] == '.')
        return vf_fail(err, "warm start: run id '%s' is not a plain name", from_run);
    snprintf(dir, sizeof dir, "%s/runs/%s", k->state_dir, from_run);
    if (list_steps(dir, steps) == 0) return vf_fail(err, "warm start from run %s: this knowledge party has no checkpoint of it in %s", from_run, dir);
    snprintf(path, sizeof path, "%s/kp-%" PRIu64 ".safetensors", dir, steps[0]);
    /* its whole state into the learner, then only its best context kept, with a fresh optimizer */
    if (vf_context_learner_load(&k->learner, path, k->fingerprint, err))
        return vf_error_prefix(err, "warm start from run %s", from_run);
    const int n = vf_coop_ctx_count(k->coop);
    float *best = malloc((size_t)n * sizeof *best);
    if (!best) return vf_fail(err, "out of memory");
    memcpy(best, k->learner.best_ctx, (size_t)n * sizeof *best);
    int best_epoch = k->learner.best_epoch;
    double best_auc = k->learner.best_auc;
    vf_context_learner_free(&k->learner);
    int rc = vf_coop_set_ctx(k->coop, best, vf_coop_ctx_rows(k->coop), vf_coop_width(k->coop), path, err) ||
             vf_context_learner_init(&k->learner, k->coop, oc, err);
    free(best);
    if (rc) return -1;
    vf_log(VF_INFO, "event=warm_start run=%s from_run=%s from_step=%" PRIu64 " from_best_epoch=%d from_best_val_auc=%.6f", k->run_id,
           from_run, steps[0], best_epoch, best_auc);
    return 0;
}

int kp_checkpoint_load(kp_state *k, uint64_t step, vf_error *err) {
    char path[4400];
    ckpt_path(k, step, path, sizeof path);
    if (access(path, R_OK) != 0)
        return vf_fail(err, "%s: no checkpoint of step %" PRIu64 " to resume from", path, step);
    return vf_context_learner_load(&k->learner, path, k->fingerprint, err);
}
