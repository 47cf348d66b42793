/* roc: one-vs-rest ROC curves per class, from either of the two places a
 * split's scores can be summarised:
 *   - softmax scores (N, C) and labels (N): exact, one point per distinct
 *     score of the class (ties grouped), highest first, after the (0, 0)
 *     start, as scikit-learn's roc_curve(y == c, scores[:, c],
 *     drop_intermediate=False) gives them;
 *   - a summed counts vector in the layout of metrics/eval_counts.h (the
 *     per-class histograms of the positives' and negatives' scores): one
 *     point per non-empty bin, walking from the top bin down, so the curve is
 *     the exact ROC of the scores rounded to their bins.
 * The AUC of a class is the trapezoid area under its points, computed from
 * the integer counts: it equals the Mann-Whitney AUC with ties (same score,
 * or same bin) counted half, i.e. metrics.h's class_auc from scores and
 * eval_counts.h's from histograms.  A class without positives or without
 * negatives has no curve (n_points 0) and a NaN AUC. */
#ifndef VF_METRICS_ROC_H
#define VF_METRICS_ROC_H

#include <stdint.h>
#include "metrics/auc_grid.h"
#include "util/vf_error.h"

typedef struct vf_roc_curve {
    int n_points;          /* 0 when the class has no positives or no negatives */
    double *fpr, *tpr;     /* (n_points), starting at (0, 0) and ending at (1, 1) */
    double *threshold;     /* (n_points) score at or above which a point predicts the class; [0] = +inf */
    int64_t positives, negatives;
    double auc;            /* NaN when undefined */
} vf_roc_curve;

typedef struct vf_roc {
    int n_classes;
    int from_histogram;    /* 1: built from binned counts (vf_roc_from_counts) */
    vf_roc_curve *curve;   /* (n_classes) */
} vf_roc;

/* scores (N, C) row-major, labels (N) in 0..C-1 (checked).  r is
 * overwritten (vf_roc_free it afterwards, also after a failure). */
int vf_roc_from_scores(vf_roc *r, const float *scores, const int *labels, int N, int C, vf_error *err);

/* counts: a counts vector of C classes in the layout documented in
 * metrics/eval_counts.h (1 + C*C + 2*C*VF_AUC_BINS words).  Each class's
 * positive and negative histogram totals must match the confusion matrix
 * (row total, and the example count minus it), else an error.  Thresholds are
 * the probabilities of the bins' lower edges. */
int vf_roc_from_counts(vf_roc *r, const uint64_t *counts, int C, const vf_auc_grid *grid, vf_error *err);

void vf_roc_free(vf_roc *r);

/* JSON {"source": "scores"|"histogram", "classes": [{"name", "auc",
 * "positives", "negatives", "fpr": [..], "tpr": [..], "thresholds": [..]}]}
 * as a malloc'd string; NaN and the first threshold (+inf) are null.
 * class_names may be NULL ("class 0", ...). */
char *vf_roc_to_json(const vf_roc *r, const char *const *class_names);
/* The same JSON written atomically to path. */
int vf_roc_write_json(const char *path, const vf_roc *r, const char *const *class_names, vf_error *err);

#endif
