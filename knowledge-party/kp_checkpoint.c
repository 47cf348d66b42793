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

/* Removes checkpoints older than the KEEP newest. */
static void prune(const kp_state *k) {
    DIR *d = opendir(k->run_dir);
    if (!d) return;
    struct dirent *e;
    uint64_t steps[4096];
    int n = 0;
    while ((e = readdir(d)) && n < 4096) {
        uint64_t s;
        char tail[32];
        if (sscanf(e->d_name, "kp-%" SCNu64 ".safetensor%31s", &s, tail) == 2 && !strcmp(tail, "s")) steps[n++] = s;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, cmp_desc);
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

int kp_checkpoint_load(kp_state *k, uint64_t step, vf_error *err) {
    char path[4400];
    ckpt_path(k, step, path, sizeof path);
    if (access(path, R_OK) != 0)
        return vf_fail(err, "%s: no checkpoint of step %" PRIu64 " to resume from", path, step);
    return vf_context_learner_load(&k->learner, path, k->fingerprint, err);
}
