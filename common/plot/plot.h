/* plot: the training figures as PNG, drawn with cairo and written
 * atomically (util/fileio.h):
 *   - line charts of per-epoch values (AUC/ACC for train and val, loss),
 *     optionally with the selected epoch marked,
 *   - the confusion matrix as a heat map with counts, class names and a
 *     labelled colour bar,
 *   - one-vs-rest ROC curves per class with their AUC in the legend,
 *   - per-class recall as bars with the class support,
 * in the spirit of the seed paper's Figures 2-4.  NaN values leave a gap.
 * A title too wide for its figure is drawn in a smaller font. */
#ifndef VF_PLOT_H
#define VF_PLOT_H

#include <stdint.h>
#include "metrics/roc.h"
#include "util/vf_error.h"

typedef struct vf_plot_series {
    const char *name;     /* legend entry */
    const double *y;      /* y[i] is the value at epoch i + 1 */
    int n;
    int dashed;
} vf_plot_series;

/* y_min/y_max: fixed axis range when y_min < y_max (e.g. 0..1 for AUC/ACC),
 * else fitted to the data. */
int vf_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                  const vf_plot_series *series, int n_series, double y_min, double y_max, vf_error *err);

typedef struct vf_plot_lines_options {
    int mark_epoch;           /* > 0: a vertical dashed line at this epoch, labelled */
    const char *mark_label;   /* NULL: "selected epoch N" */
} vf_plot_lines_options;

/* vf_plot_lines with options (opt may be NULL: the same figure). */
int vf_plot_lines_ex(const char *path, const char *title, const char *xlabel, const char *ylabel,
                     const vf_plot_series *series, int n_series, double y_min, double y_max,
                     const vf_plot_lines_options *opt, vf_error *err);

/* cm (C, C): rows = true class, columns = predicted.  Cell colour is the
 * row-normalised fraction (recall along the diagonal), so small classes stay
 * visible; the text is the count; the colour bar is labelled "fraction of
 * true class". */
int vf_plot_confusion(const char *path, const char *title, const int64_t *cm, int C, const char *const *class_names,
                      vf_error *err);

/* Reliability diagram: per equal-width confidence bin (of n_bins over 0..1)
 * the accuracy as a bar, the gap to the mean confidence shaded, the count
 * above it, and the diagonal of perfect calibration.  Empty bins (count 0)
 * are left blank. */
int vf_plot_reliability(const char *path, const char *title, const long *count, const double *conf, const double *acc,
                        int n_bins, vf_error *err);

/* One-vs-rest ROC curves, one line per class (a class without a curve is
 * listed as "AUC n/a"), the chance diagonal, the legend "name (AUC 0.912)";
 * axes "False positive rate (1 - specificity)" and "True positive rate
 * (sensitivity)".  A curve from histograms says so under the axes.
 * class_names may be NULL. */
int vf_plot_roc(const char *path, const char *title, const vf_roc *roc, const char *const *class_names, vf_error *err);

/* Per-class recall as horizontal bars, the value printed at the bar's end,
 * "name (n = support)" beside each; a NaN recall (no samples) is written
 * "no samples".  The mean of the defined recalls (balanced accuracy) is a
 * dashed line.  support may be NULL (no counts in the labels). */
int vf_plot_recall_bars(const char *path, const char *title, const double *recall, const int64_t *support, int C,
                        const char *const *class_names, vf_error *err);

#endif
