/* kp: the knowledge party's state — the frozen text tower and tokenizer, the
 * class names and template it owns, and for the current run the CoOp prompt
 * learner (context vectors), the optimizer, and the best context so far.
 * main.c wires it to the aggregator; kp_checkpoint.c makes it durable. */
#ifndef VF_KP_H
#define VF_KP_H

#include "clip/checkpoint.h"
#include "clip/clip_model.h"
#include "clip/tokenizer.h"
#include "coop/context_learner.h"
#include "coop/trainer.h"
#include "proto/federation.pb-c.h"

typedef struct kp_state {
    vf_checkpoint ck;                        /* the model directory, read once; the tower borrows its weights */
    vf_clip_text_tower tower;
    vf_tokenizer *tok;
    char fingerprint[65];
    char state_dir[4096];
    char default_template[1024];
    int n_classes;
    char **class_names;
    /* the run */
    char run_id[128], run_dir[4300];
    char template_[1024], init_words[256];
    vf_coop_config coop_cfg;
    vf_coop *coop;
    vf_context_learner learner;              /* the context, its optimizer, the best context */
    unsigned long long seed;
} kp_state;

/* Builds (or, resume_step > 0, restores) the run's learner; error names the problem. */
int kp_setup_run(kp_state *k, const Vflclip__V1__RunSetup *rs, vf_error *err);
void kp_free_run(kp_state *k);
/* Durable state of the run at `step`: ctx, best ctx, optimizer, best epoch/AUC
 * (atomic); keeps the two newest. */
int kp_checkpoint_save(kp_state *k, uint64_t step, vf_error *err);
int kp_checkpoint_load(kp_state *k, uint64_t step, vf_error *err);
/* A fresh run that starts from the best context of an earlier run of this
 * knowledge party (its newest checkpoint's best context), with a fresh
 * optimizer; the shapes must agree. */
int kp_warm_start(kp_state *k, const char *from_run, const vf_optim_config *oc, vf_error *err);

#endif
