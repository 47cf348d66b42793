/* run_config: what a federated training run is asked to do — the [run]
 * section an operator passes to `vflclip run start --config RUN.ini` (or the
 * flags that CLI turns into the same text), carried to the aggregator in
 * StartRunRequest.config and parsed there against the same schema, so the
 * CLI rejects a bad key before anything is sent and the aggregator rejects
 * it again from any other client.  The keys mirror `vflclip train`'s
 * options: the same values give the same training. */
#ifndef VF_DAEMON_RUN_CONFIG_H
#define VF_DAEMON_RUN_CONFIG_H

#include <stdio.h>
#include "coop/optim.h"
#include "coop/prompt.h"
#include "daemon/ini_config.h"
#include "privacy/text_grad_guard.h"

#define VF_RUN_MAX_PARTIES 256

typedef struct vf_run_config {
    int epochs, batch_size;
    long max_steps;
    unsigned long long seed;
    vf_optim_config optim;
    vf_lr_schedule schedule;
    int n_ctx, csc;
    int n_ctx_given;               /* [run] n_ctx was stated (not the default) */
    vf_class_pos class_pos;
    char template_[1024];          /* "" = the knowledge party's */
    char init_words[256];          /* "" = random init */
    int n_parties;                 /* 0 = every image party connected at start */
    char parties[VF_RUN_MAX_PARTIES][128];
    int party_timeout_s;           /* a run waits this long for a missing party, then fails */
    int checkpoint_every;          /* steps between durable checkpoints */
    int chunk_size;                /* embeddings per EmbeddingsChunk */
    vf_text_grad_privacy privacy;  /* what dL/dT goes through before it leaves the aggregator */
    int share_classifier;          /* 1 (image-parties): each image party receives the run's classifier once, after the run */
    int fit_temperature;           /* the classifier's temperature is fitted on the val split */
    int loss_at_parties;           /* [run] loss_at = image-parties: secure sums instead of embeddings (secagg/) */
    char warm_start[64];           /* "" or the run whose best context this run starts from */
} vf_run_config;

extern const vf_ini_key vf_run_config_schema[];

/* Parses INI text (name appears in errors). */
int vf_run_config_parse(const char *text, const char *name, vf_run_config *rc, vf_error *err);

#endif
