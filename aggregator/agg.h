/* agg: the aggregator's state, shared by its files:
 *   main.c      config, the gRPC server, signals, systemd notify
 *   parties.c   Federation.Join: the party table, Hello checks, task sending
 *   run.c       the run: set-up, encoding, the training loop with the trainer
 *               library (same functions as `vflclip train`), pauses, roll-back
 *   run_control.c  starting (checks), aborting, resuming after a restart
 *   progress.c  the run's durable progress (atomic JSON checkpoint)
 *   run_privacy.c  the run's transcript and privacy.json (epsilon spent)
 *   admin.c     the Admin service (status, parties, start/abort/watch/results,
 *               the run history: list, show, continue)
 * One libuv loop, no threads: every callback runs to completion. */
#ifndef VF_AGG_H
#define VF_AGG_H

#include <stdint.h>

#include "coop/train_session.h"
#include "daemon/run_config.h"
#include "metrics/eval_counts.h"
#include "privacy/privacy_report.h"
#include "proto/admin.pb-c.h"
#include "proto/federation.pb-c.h"
#include "rpc/rpc.h"
#include "transcript/transcript.h"

/* The party table's size: the most parties [server] max_parties may allow
 * (default 64); connected parties beyond max_parties are refused and logged. */
#define AGG_MAX_PARTIES 256
#define AGG_DEFAULT_MAX_PARTIES 64
#define AGG_DEFAULT_HELLO_TIMEOUT_MS 10000
#include "daemon/version.h"
#define AGG_VERSION VF_VERSION

typedef struct agg_party {
    int used, hello_ok;
    vf_rpc_call *call;
    vf_peer_identity id;
    char fingerprint[80], pp_fingerprint[80], tok_fingerprint[80];
    uint32_t embed_dim;
    uint64_t split_n[3];
    float embed_clip, embed_noise;   /* the party's embedding DP, from its Hello */
    double embed_delta;
    int64_t connected_unix;
    char state[64];                  /* "connected", "encoding 3,412/7,007 eta 04:52" (its EncodingProgress), a run's phase */
    /* image parties: the mask key of their Hello (loss_at = image-parties), relayed as sent */
    uint8_t mask_pub[32], mask_sig[160], mask_cert[4096];
    size_t mask_pub_len, mask_sig_len, mask_cert_len;
} agg_party;

typedef enum {
    RUN_IDLE = 0, RUN_SETUP, RUN_ENCODING, RUN_TRAINING, RUN_FINISHING, RUN_DONE, RUN_ABORTED, RUN_FAILED
} agg_run_state;

/* What the run waits for from the knowledge party. */
typedef enum {
    WAIT_NONE = 0, WAIT_SETUP, WAIT_STEP, WAIT_SAVE, WAIT_BEST, WAIT_RESTORE_BEST, WAIT_EXPORT,
    WAIT_SUM   /* a secure sum of the image parties (loss_at = image-parties) */
} agg_wait;

typedef struct agg_img {
    char name[128];
    uint64_t n[3], base[3], received[3];
    int split;                       /* split being received; 3 = all done */
    uint64_t task;
} agg_img;

/* One secure sum in flight (secure_sum.c). */
typedef struct agg_sum {
    int active;
    int kind;                        /* VFLCLIP__V1__SECURE_SUM_KIND__... */
    uint64_t sum_id;                 /* from g_agg.last_sum_id, which only grows: a redone sum has fresh masks */
    size_t len;                      /* words of the vector */
    uint64_t *acc;                   /* (len) the sum so far */
    int n_part, n_answered;
    int part[AGG_MAX_PARTIES];       /* participants: indices into run.img */
    uint8_t answered[AGG_MAX_PARTIES];
    uint32_t *own;                   /* (batch) a party's own positions of the batch */
    float *grad;                     /* (C, D) the summed dL/dT share, decoded */
    char *site_json[3][AGG_MAX_PARTIES];   /* the final evaluation: each site's own metrics of val [1] and test [2] */
    uint64_t sums, redone, bytes_out, bytes_in;
    uint64_t kind_sums[2], kind_bytes[2];   /* batches and evaluations (range + histogram sums) done, and their bytes (both ways) */
    double t0, step_s;               /* time of the step sums */
    int min_participants;            /* fewest participants of any sum so far */
    vf_auc_grid grid;                /* an evaluation's histogram grid, from the RANGE sum before it */
    int grid_ready;
} agg_sum;

typedef struct agg_run {
    agg_run_state state;
    int paused;                      /* waiting for a party to come back */
    char id[64], dir[4400], message[768], kp_name[128];
    char model_fp[80], tok_fp[80], pp_fp[80];   /* fingerprints at the start, for run_settings.json */
    char *config_text;
    vf_run_config cfg;
    int64_t started_unix;
    uv_timer_t pause_timer;
    /* text side, from the knowledge party */
    int C, D, have_text;
    char **class_names;
    float logit_scale;
    float *T;                        /* (C, D) text features as last received */
    /* image side */
    int n_img;
    agg_img img[AGG_MAX_PARTIES];
    float *emb[3];
    int *labels[3];
    uint64_t n[3];
    int sizes_ready;                 /* n[] and img[].base[] are set (and, pooled, the buffers allocated) */
    agg_sum sum;                     /* loss_at = image-parties */
    vf_embedded_split split[3];
    /* training: the one CoOp loop (coop/train_session.h), driven from the
     * network callbacks.  Before it is set up (a restarted aggregator whose
     * parties are not back yet) its plain fields (global_step, best_auc, ...)
     * hold the last committed values, for status. */
    vf_train_session sess;
    long progress_file_step;         /* the progress.json on disk (progress.c): its committed step, */
    int progress_file_is_commit;     /* and whether it is a commit (its position is that step) */
    int session_ready, epochs_reported;   /* epochs and steps already told to the log and the admins */
    long steps_reported;
    /* the task in flight */
    agg_wait wait;
    uint64_t task;
    uint64_t bytes_out, bytes_in;    /* protobuf bytes of training-step messages */
    vf_transcript transcript;        /* every message while the run is active (run dir, transcript.jsonl) */
    double step_t0, step_min_s, step_sum_s;   /* wall time of each step: loss + round trip */
    long step_count;
} agg_run;

typedef struct agg {
    uv_loop_t *loop;
    vf_rpc_server *server;
    char name[128], state_dir[4096], audit_path[4400], default_config[4096];
    char key_path[4096], cert_path[4096];   /* the aggregator's own, to sign run transcripts */
    vf_peer_identity me;
    agg_party parties[AGG_MAX_PARTIES];
    agg_run run;
    uint64_t next_task;
    uint64_t last_sum_id;            /* of every secure sum asked since start, over all runs (a party refuses one that does not grow) */
    int shutting_down;
    int max_parties;                 /* [server] max_parties: party slots in use at most */
    int hello_timeout_ms;            /* [server] hello_timeout_s: a Join stream must say Hello within it */
    unsigned long long refused_full; /* Hellos refused because max_parties slots were taken */
} agg;

extern agg g_agg;

/* parties.c */
extern const vf_rpc_method agg_join_method;
agg_party *agg_party_find(vf_role role, const char *name);
int agg_parties_connected(void);
int agg_send(agg_party *p, Vflclip__V1__AggregatorMessage *m, vf_error *err);
uint64_t agg_new_task(void);

/* run.c */
void agg_run_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void agg_run_pause(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The session's next action as a task (the knowledge party's, or a secure sum). */
void agg_run_drive(void);
int agg_run_active(void);
void agg_run_free(agg_run *r);
void agg_run_end(agg_run_state s, const char *msg);
void agg_run_continue(void);
int agg_run_start(const char *config_text, const char *run_id, const vf_peer_identity *who, char *out_id, size_t out_size,
                  int *grpc_status, vf_error *err);
int agg_run_abort(const char *reason, const vf_peer_identity *who, vf_error *err);
void agg_run_on_joined(agg_party *p);
void agg_run_on_left(agg_party *p, const char *why);
void agg_run_on_message(agg_party *p, const Vflclip__V1__PartyMessage *m, size_t wire_bytes);
void agg_run_resume_at_start(void);
/* run_control.c: `vflclip run continue`: an aborted or failed run of the
 * history goes on from its last committed step, through the same path as a
 * restarted aggregator's resume.  *resume_step: that step. */
int agg_run_continue_from(const char *run_id, const vf_peer_identity *who, uint64_t *resume_step, int *grpc_status,
                          vf_error *err);
/* run_settings.json of the current run (daemon/run_settings.h); kp_template:
 * the knowledge party's template when the run names none (NULL: not known yet). */
int agg_run_settings_write(const char *kp_template, vf_error *err);
int agg_valid_run_id(const char *s);
/* run_privacy.c: epsilon of the dL/dT sent so far (+inf without noise; 0
 * before training), privacy.json, the transcript. */
double agg_run_epsilon(void);
void agg_privacy_report_write(void);
const char *agg_run_state_name(agg_run_state s);
int agg_run_terminal(void);
/* Opens (or continues) the run's transcript; records one message of the run. */
void agg_transcript_open(void);
void agg_transcript_record(const vf_peer_identity *peer, int sent, const ProtobufCMessage *m, const uint8_t *raw, size_t len);

/* secure_sum.c: loss_at = image-parties.  agg_sum_start asks the run's
 * connected image parties for the sum the session's LOSS or EVAL action
 * needs (pausing when a party whose data it needs is away); a MaskedShare
 * is added with agg_sum_on_share; a participant that leaves before it
 * answered makes the sum start again with fresh masks. */
void agg_sum_start(vf_train_action a);
void agg_sum_on_share(agg_party *p, uint64_t task, const Vflclip__V1__MaskedShare *ms, size_t wire);
void agg_sum_on_left(agg_party *p);
void agg_sum_reset(void);
void agg_sum_free(void);
/* site_metrics.json from what the sites reported in the final evaluation. */
void agg_sum_write_site_metrics(void);

/* progress.c */
int agg_progress_save(agg_run *r, vf_error *err);
int agg_progress_load(agg_run *r, const char *run_dir, vf_error *err);
/* The commit before the last becomes the run's progress again (the knowledge
 * party could not restore the last one), and is loaded. */
int agg_progress_restore_previous(agg_run *r, vf_error *err);
int agg_current_run_set(const char *run_id, vf_error *err);
int agg_current_run_get(char *run_id, size_t size);

/* admin.c */
extern const vf_rpc_method agg_admin_methods[];
extern const int agg_admin_n_methods;
void agg_admin_event(const char *kind, const char *message);
void agg_admin_run_over(void);

#endif
