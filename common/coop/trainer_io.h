/* trainer_io: the run directory of a training run — metrics.jsonl (one
 * object per epoch, the whole file rewritten atomically after each epoch),
 * test_metrics.json, the per-epoch plots and the confusion-matrix plots. */
#ifndef VF_COOP_TRAINER_IO_H
#define VF_COOP_TRAINER_IO_H

#include "metrics/metrics.h"
#include "util/vf_error.h"

typedef struct vf_epoch_record {
    int epoch, steps, best_epoch;
    double lr, train_loss, seconds;
} vf_epoch_record;

typedef struct vf_run_log {
    char dir[4096];
    int max_epochs, n;
    int n_classes;
    const char *const *class_names;
    /* per-epoch history for the plots (max_epochs each) */
    double *train_loss, *train_eval_loss, *val_loss, *train_auc, *train_acc, *val_auc, *val_acc;
    char *jsonl;          /* all lines so far */
    size_t jsonl_len, jsonl_cap;
} vf_run_log;

/* Creates dir (mkdir -p). */
int vf_run_log_init(vf_run_log *l, const char *dir, int max_epochs, const char *const *class_names, int n_classes,
                    vf_error *err);
void vf_run_log_free(vf_run_log *l);
/* Appends the epoch to metrics.jsonl and redraws auc_acc.png and loss.png. */
int vf_run_log_epoch(vf_run_log *l, const vf_epoch_record *r, const vf_metrics *train, const vf_metrics *val,
                     vf_error *err);
/* test_metrics.json. */
int vf_run_log_test(vf_run_log *l, const vf_metrics *test, int best_epoch, vf_error *err);
/* One part of the val and test splits: the rows one image party (site)
 * contributed. */
typedef struct vf_site_rows {
    const char *name;
    int first[3], n[3];   /* per split (train, val, test); n = 0: none in that split */
} vf_site_rows;

/* site_metrics.json: each site's val and test metrics (ACC, AUC, balanced
 * accuracy, per-class AUC and recall, confusion matrix), computed with
 * vf_metrics_for_rows from the scores of the final evaluation: scores[k]
 * (n[k], C) softmax scores and labels[k] of split k (k = 1 val, 2 test;
 * [0] is not used, a NULL split is skipped).  context_epoch is the epoch of
 * the context that produced the scores. */
int vf_run_log_sites(vf_run_log *l, const vf_site_rows *sites, int n_sites, const float *const scores[3],
                     const int *const labels[3], const int n[3], int context_epoch, vf_error *err);
/* confusion_<split>.png. */
int vf_run_log_confusion(vf_run_log *l, const char *split, const vf_metrics *m, vf_error *err);

#endif
