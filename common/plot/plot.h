/* plot: the training figures as PNG, drawn with cairo and written
 * atomically (util/fileio.h):
 *   - line charts of per-epoch values (AUC/ACC for train and val, loss),
 *   - the confusion matrix as a heat map with counts and class names,
 * in the spirit of the seed paper's Figures 2-4.  NaN values leave a gap. */
#ifndef VF_PLOT_H
#define VF_PLOT_H

#include <stdint.h>
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

/* cm (C, C): rows = true class, columns = predicted.  Cell colour is the
 * row-normalised fraction (recall along the diagonal), so small classes stay
 * visible; the text is the count. */
int vf_plot_confusion(const char *path, const char *title, const int64_t *cm, int C, const char *const *class_names,
                      vf_error *err);

/* Reliability diagram: per equal-width confidence bin (of n_bins over 0..1)
 * the accuracy as a bar, the gap to the mean confidence shaded, the count
 * above it, and the diagonal of perfect calibration.  Empty bins (count 0)
 * are left blank. */
int vf_plot_reliability(const char *path, const char *title, const long *count, const double *conf, const double *acc,
                        int n_bins, vf_error *err);

#endif
