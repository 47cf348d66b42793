/* classifier: what a run produces for use — the class text features of the
 * best context, and everything needed to score an image embedding with them,
 * written as classifier.safetensors:
 *   "text"  F32 (C, D)  the class text features T, each row L2-normalised
 *   metadata: format "vflclip-classifier-1", class_names (JSON array),
 *             template_sha256, model_fingerprint, preprocessing_fingerprint,
 *             run_id ("" for `vflclip train`), metrics (JSON object),
 *             logit_scale (the checkpoint's log s, %a), temperature (%a; 1 = none),
 *             and the data checksum (vf_st_writer_checksum)
 * It holds no context vector and no text-tower weight: the knowledge party's
 * prompt stays its own.
 *
 * Scoring: p(c | x) = softmax_c( exp(logit_scale) / temperature * cos(x, T_c) ),
 * the same logits the training loss and vf_evaluate_split use (at temperature 1).
 *
 * Calibration: the expected calibration error over n equal-width bins of the
 * top-class confidence (bin b holds confidences in (b/n, (b+1)/n], the first
 * also 0), ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|, and a temperature
 * fitted on the validation split by minimising the mean negative
 * log-likelihood over 1/temperature (convex in it: golden-section search). */
#ifndef VF_COOP_CLASSIFIER_H
#define VF_COOP_CLASSIFIER_H

#include "coop/trainer.h"
#include "util/vf_error.h"

#define VF_CLASSIFIER_FILE "classifier.safetensors"
#define VF_ECE_BINS 15

typedef struct vf_classifier {
    int C, D;
    float *text;                    /* (C, D), rows normalised */
    float logit_scale;              /* log s */
    float temperature;              /* > 0; 1 = not calibrated */
    char **class_names;             /* (C) */
    char template_sha256[65];
    char model_fingerprint[65];
    char preprocessing_fingerprint[65];
    char run_id[128];
    char *metrics_json;             /* a JSON object; "{}" when none */
} vf_classifier;

/* Builds a classifier from text features (C, D) (copied and normalised; a
 * zero or non-finite row is an error).  template_ is hashed (SHA-256); the
 * fingerprints are 64 hex digits (preprocessing may be "" when unknown);
 * run_id and metrics_json may be NULL. */
int vf_classifier_init(vf_classifier *k, const float *text, int C, int D, float logit_scale,
                       const char *const *class_names, const char *template_, const char *model_fingerprint,
                       const char *preprocessing_fingerprint, const char *run_id, const char *metrics_json,
                       vf_error *err);
void vf_classifier_free(vf_classifier *k);
/* Replaces the metrics JSON (must parse as an object). */
int vf_classifier_set_metrics(vf_classifier *k, const char *metrics_json, vf_error *err);

/* Written atomically with a data checksum. */
int vf_classifier_save(const vf_classifier *k, const char *path, vf_error *err);
/* Reads and checks a classifier file; errors name the file and the field. */
int vf_classifier_load(vf_classifier *k, const char *path, vf_error *err);

/* cos (N, C): cosine of each embedding (N, D, not normalised) with each class. */
int vf_classifier_cosines(const vf_classifier *k, const float *emb, int N, float *cos, vf_error *err);
/* probs (N, C) from cosines at scale exp(logit_scale) / temperature. */
void vf_classifier_probs_from_cosines(const float *cos, int N, int C, double scale, float *probs);
/* probs (N, C) of embeddings (N, D) under the classifier's own scale and temperature. */
int vf_classifier_scores(const vf_classifier *k, const float *emb, int N, float *probs, vf_error *err);

/* Reliability of probs (N, C) against labels over n_bins equal-width bins of
 * the top-class confidence: per bin the count, mean confidence and accuracy
 * (NaN for an empty bin), any of them NULL when not wanted.  Returns the ECE
 * (NaN when N == 0). */
double vf_calibration(const float *probs, const int *labels, int N, int C, int n_bins, long *count, double *conf,
                      double *acc);

/* The temperature minimising the mean NLL of labels under
 * softmax(exp(logit_scale) / t * cos); cos (N, C).  *nll_before / *nll_after
 * (may be NULL) get the NLL at t = 1 and at the fitted t. */
double vf_fit_temperature(const float *cos, const int *labels, int N, int C, float logit_scale, double *nll_before,
                          double *nll_after);

/* Calibration of a split for the run results: ECE before (t = 1) and after
 * the classifier's temperature, and the reliability diagram (PNG, at the
 * classifier's temperature) when png is not NULL.  *json receives a cJSON
 * object text (caller frees):
 *   {"split","n","bins","temperature","ece","ece_uncalibrated","reliability":{"count","confidence","accuracy"}} */
int vf_classifier_calibration_report(const vf_classifier *k, const float *emb, const int *labels, int N,
                                     const char *split_name, const char *png, char **json, vf_error *err);

/* What both drivers do at the end of a run with the best context's T in k:
 * with fit_temperature and a non-empty val split, k->temperature is fitted
 * on val; the calibration of test (val when test is empty) is written to
 * out_dir as calibration.json (with the val NLL before/after the fit) and
 * reliability.png; k's metrics become {"test": test_metrics.json of out_dir
 * (when present), "calibration": ...}; k is saved as out_dir/classifier.safetensors.
 * *ece (may be NULL) gets the ECE at k's temperature (NaN without rows). */
int vf_classifier_finish_run(vf_classifier *k, const char *out_dir, const vf_embedded_split *val,
                             const vf_embedded_split *test, int fit_temperature, double *ece, vf_error *err);

#endif
