/* metrics: classification metrics as MedMNIST v2 reports them, plus the
 * usual diagnostics, computed from softmax scores and integer labels.
 *   ACC  = argmax accuracy
 *   AUC  = mean over classes of the one-vs-rest ROC AUC of the class score,
 *          ties counted half (Mann-Whitney U / (P * N), as roc_auc_score)
 *   per-class recall, balanced accuracy (mean recall over classes that occur
 *   in the labels, as scikit-learn's balanced_accuracy_score), confusion
 *   matrix (rows = true class, columns = predicted class).
 * A class with no positives or no negatives has an undefined AUC: it is
 * reported as NaN and left out of the mean (auc_classes says how many
 * classes the mean covers). */
#ifndef VF_METRICS_H
#define VF_METRICS_H

#include <stdint.h>
#include "util/vf_error.h"

#define VF_METRICS_MAX_CLASSES 256

typedef struct vf_metrics {
    int n, n_classes;
    double acc, auc, balanced_acc;
    int auc_classes;                 /* classes with a defined AUC */
    double *class_auc;               /* (C) NaN where undefined */
    double *class_recall;            /* (C) NaN where the class has no samples */
    int64_t *confusion;              /* (C, C) row = true, column = predicted */
    double loss;                     /* mean cross-entropy when scores are probabilities; NaN if not computed */
} vf_metrics;

/* Allocates the per-class arrays for C classes. */
int vf_metrics_init(vf_metrics *m, int n_classes, vf_error *err);
void vf_metrics_free(vf_metrics *m);

/* scores (N, C): softmax probabilities (or any score monotone per class);
 * labels (N) in 0..C-1 (checked).  Allocates its sort buffer per call: this
 * runs once per evaluation, not per training step.  m->loss is left alone. */
int vf_metrics_compute(vf_metrics *m, const float *scores, const int *labels, int N, vf_error *err);

/* Metrics of rows [first, first + n) of scores (N, C) and labels (N): one
 * part of a split, such as the rows one image party contributed.  The same
 * definitions as vf_metrics_compute; m->loss is left alone. */
int vf_metrics_for_rows(vf_metrics *m, const float *scores, const int *labels, int first, int n, vf_error *err);

/* class_recall and balanced_acc from m->confusion (the one definition, for
 * metrics from scores and from summed counts alike). */
void vf_metrics_recall_from_confusion(vf_metrics *m);

/* Row-wise softmax of logits (N, C) into probs (N, C) (may alias). */
void vf_softmax_rows(const float *logits, float *probs, int N, int C);

/* JSON object {"n":..,"acc":..,"auc":..,"balanced_acc":..,"class_auc":[..],
 * "class_recall":[..],"confusion":[[..]..],"class_names":[..]} as a malloc'd
 * string (compact when `pretty` is 0).  class_names may be NULL.  NaN is
 * written as null. */
char *vf_metrics_to_json(const vf_metrics *m, const char *const *class_names, int pretty);
/* Adds the same fields to an existing cJSON object (cJSON *, kept opaque here). */
int vf_metrics_add_to_json(void *cjson_object, const vf_metrics *m, const char *const *class_names);

#endif
