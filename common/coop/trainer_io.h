/* trainer_io: the run directory of a training run — metrics.jsonl (one
 * object per epoch, the whole file rewritten atomically after each epoch),
 * test_metrics.json, the per-epoch plots (the selected epoch marked) and the
 * final figures of each evaluated split (confusion matrix, ROC per class,
 * recall per class).  Every figure's title starts with the run and backbone
 * ("run NAME · BACKBONE · test: ROC per class"); the run defaults to the
 * run directory's name until vf_run_log_set_title says otherwise. */
#ifndef VF_COOP_TRAINER_IO_H
#define VF_COOP_TRAINER_IO_H

#include <stdint.h>
#include "metrics/auc_grid.h"
#include "metrics/metrics.h"
#include "metrics/roc.h"
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
    int best_epoch;       /* of the last epoch record: marked on the per-epoch plots */
    char title[512];      /* "run NAME · BACKBONE", the start of every figure title */
} vf_run_log;

/* Creates dir (mkdir -p). */
int vf_run_log_init(vf_run_log *l, const char *dir, int max_epochs, const char *const *class_names, int n_classes,
                    vf_error *err);
void vf_run_log_free(vf_run_log *l);
/* The figures' title prefix "run RUN · BACKBONE" (either may be NULL or
 * empty and is then left out; run NULL keeps the directory's name). */
void vf_run_log_set_title(vf_run_log *l, const char *run, const char *backbone);
/* Appends the epoch to metrics.jsonl and redraws auc_acc.png and loss.png,
 * r->best_epoch marked on both ("selected epoch N"). */
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

/* The final figures of one split in the run directory, all together:
 * confusion_<split>.png (colour bar labelled), recall_<split>.png (per-class
 * recall with support), and, when roc is not NULL, roc_<split>.png with its
 * points in roc_<split>.json (vf_roc_to_json). */
int vf_run_log_final_figures(vf_run_log *l, const char *split, const vf_metrics *m, const vf_roc *roc, vf_error *err);
/* The same with the ROC computed exactly from the split's softmax scores
 * (n, C) and labels (pooled evaluation). */
int vf_run_log_final_figures_scores(vf_run_log *l, const char *split, const vf_metrics *m, const float *scores,
                                    const int *labels, int n, vf_error *err);
/* The same with the ROC from a summed counts vector in the layout of
 * metrics/eval_counts.h (secure evaluation: binned scores). */
int vf_run_log_final_figures_counts(vf_run_log *l, const char *split, const vf_metrics *m, const uint64_t *counts,
                                    const vf_auc_grid *grid, vf_error *err);

/* The figures vf_run_log_final_figures writes, for any writer (vflclip
 * evaluate): files named <prefix>confusion_<split>.png, <prefix>roc_<split>.png,
 * <prefix>roc_<split>.json, <prefix>recall_<split>.png (prefix: a directory
 * with its '/', optionally followed by a file stem); titles start with
 * title_prefix (may be NULL or empty).  class_names may be NULL. */
int vf_write_split_figures(const char *prefix, const char *title_prefix, const char *split, const vf_metrics *m,
                           const vf_roc *roc, const char *const *class_names, vf_error *err);

#endif
