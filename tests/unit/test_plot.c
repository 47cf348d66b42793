/* test_plot: ROC points from binned counts (the eval_counts.h layout, built
 * here by hand) and from scores on a hand-computed case; the selected-epoch
 * mark on line charts and the labelled colour bar of the confusion plot,
 * found in the PNG's pixels (read back with cairo). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <cairo.h>
#include <math.h>

#include "metrics/eval_counts.h"
#include "metrics/roc.h"
#include "plot/plot.h"

/* Two classes, 5 rows (p0, p1; label): (.1, .9; 1) (.6, .4; 0) (.6, .4; 0)
 * (.2, .8; 1) (.8, .2; 1).  Class 1 by score, highest first: .9(+) .8(+)
 * .4(-, -: one tied group) .2(+): points (0,0) (0,1/3) (0,2/3) (1,2/3) (1,1);
 * AUC: .9 and .8 beat both negatives, .2 neither: 4/6.  Class 0: its two
 * positives (.6, .6) beat .1 and .2 but not .8: 4/6. */
static void test_roc_from_scores_hand_case(void **state) {
    (void)state;
    const float s[10] = {0.1f, 0.9f, 0.6f, 0.4f, 0.6f, 0.4f, 0.2f, 0.8f, 0.8f, 0.2f};
    const int y[5] = {1, 0, 0, 1, 1};
    vf_roc r;
    vf_error err = {{0}};
    assert_int_equal(vf_roc_from_scores(&r, s, y, 5, 2, &err), 0);
    const vf_roc_curve *c = &r.curve[1];
    assert_int_equal(c->positives, 3);
    assert_int_equal(c->negatives, 2);
    assert_int_equal(c->n_points, 5);
    const double fpr[5] = {0, 0, 0, 1, 1}, tpr[5] = {0, 1.0 / 3, 2.0 / 3, 2.0 / 3, 1};
    const double thr[5] = {INFINITY, 0.9f, 0.8f, 0.4f, 0.2f};
    for (int i = 0; i < 5; i++) {
        assert_true(fabs(c->fpr[i] - fpr[i]) < 1e-15);
        assert_true(fabs(c->tpr[i] - tpr[i]) < 1e-15);
        assert_true(c->threshold[i] == thr[i]);
    }
    assert_true(fabs(c->auc - 4.0 / 6) < 1e-15);
    assert_true(fabs(r.curve[0].auc - 4.0 / 6) < 1e-15);   /* class 0 mirrors class 1 */
    vf_roc_free(&r);
    /* a class that never occurs: no curve, NaN AUC */
    const float s3[6] = {0.5f, 0.3f, 0.2f, 0.1f, 0.7f, 0.2f};
    const int y3[2] = {0, 1};
    assert_int_equal(vf_roc_from_scores(&r, s3, y3, 2, 3, &err), 0);
    assert_int_equal(r.curve[2].n_points, 0);
    assert_true(isnan(r.curve[2].auc));
    vf_roc_free(&r);
    int bad[2] = {0, 3};
    assert_int_equal(vf_roc_from_scores(&r, s3, bad, 2, 3, &err), -1);
    assert_non_null(strstr(err.msg, "label 3"));
    vf_roc_free(&r);
}

/* Counts with the layout of eval_counts.h: [n, confusion C*C, pos C*BINS, neg C*BINS]. */
static void test_roc_from_counts(void **state) {
    (void)state;
    const int C = 2;
    size_t len = 1 + C * C + 2 * (size_t)C * VF_AUC_BINS;
    uint64_t *v = calloc(len, sizeof *v);
    uint64_t *conf = v + 1, *pos = conf + C * C, *neg = pos + (size_t)C * VF_AUC_BINS;
    /* class 0: 3 positives in bins 100, 200, 200; 2 negatives in bins 200, 50.
     * class 1: 2 positives (the negatives of class 0), 3 negatives. */
    v[0] = 5;
    conf[0] = 2; conf[1] = 1; conf[2] = 1; conf[3] = 1;
    pos[100] = 1; pos[200] = 2; neg[200] = 1; neg[50] = 1;
    pos[VF_AUC_BINS + 7000] = 2; neg[VF_AUC_BINS + 10] = 3;
    vf_roc r;
    vf_error err = {{0}};
    assert_int_equal(vf_roc_from_counts(&r, v, C, NULL, &err), 0);
    assert_int_equal(r.from_histogram, 1);
    const vf_roc_curve *c = &r.curve[0];
    /* top down: bin 200 (+2, -1), bin 100 (+1), bin 50 (-1) */
    assert_int_equal(c->n_points, 4);
    const double fpr[4] = {0, 0.5, 0.5, 1}, tpr[4] = {0, 2.0 / 3, 1, 1};
    for (int i = 0; i < 4; i++) {
        assert_true(fabs(c->fpr[i] - fpr[i]) < 1e-15);
        assert_true(fabs(c->tpr[i] - tpr[i]) < 1e-15);
    }
    assert_true(isinf(c->threshold[0]) && c->threshold[1] > c->threshold[2] && c->threshold[2] > c->threshold[3]);
    /* Mann-Whitney, same bin half: positives vs neg@200, neg@50: 200:(.5,1) 200:(.5,1) 100:(0,1) -> 4/6 */
    assert_true(fabs(c->auc - 4.0 / 6) < 1e-15);
    assert_true(fabs(r.curve[1].auc - 1.0) < 1e-15);
    vf_roc_free(&r);
    /* a histogram that does not match the confusion matrix is refused */
    pos[100] = 2;
    assert_int_equal(vf_roc_from_counts(&r, v, C, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "class 0"));
    vf_roc_free(&r);
    free(v);
}

/* The PNG's pixels as 0xRRGGBB. */
static cairo_surface_t *load(const char *path) {
    cairo_surface_t *s = cairo_image_surface_create_from_png(path);
    assert_int_equal(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
    cairo_surface_flush(s);
    return s;
}

static uint32_t px(cairo_surface_t *s, int x, int y) {
    const unsigned char *d = cairo_image_surface_get_data(s);
    return ((const uint32_t *)(d + (size_t)y * cairo_image_surface_get_stride(s)))[x] & 0xffffff;
}

/* Rows of column x whose pixel is a dark grey (the mark's colour, 0.25,
 * lightened by antialiasing on the pixel edge). */
static int grey_rows(cairo_surface_t *s, int x) {
    int n = 0;
    for (int y = 0; y < cairo_image_surface_get_height(s); y++) {
        uint32_t p = px(s, x, y);
        int r = p >> 16 & 255, g = p >> 8 & 255, b = p & 255;
        n += r == g && g == b && r > 40 && r < 150;
    }
    return n;
}

static void test_lines_mark_selected_epoch(void **state) {
    (void)state;
    char dir[] = "/tmp/vf_test_plot_XXXXXX", a[64], b[64];
    assert_non_null(mkdtemp(dir));
    snprintf(a, sizeof a, "%s/a.png", dir);
    snprintf(b, sizeof b, "%s/b.png", dir);
    const double y[5] = {0.5, 0.6, 0.8, 0.7, 0.75};
    vf_plot_series s[1] = {{"val AUC", y, 5, 0}};
    vf_error err = {{0}};
    vf_plot_lines_options opt = {.mark_epoch = 3};
    assert_int_equal(vf_plot_lines_ex(a, "t", "epoch", "AUC", s, 1, 0, 1, &opt, &err), 0);
    assert_int_equal(vf_plot_lines(b, "t", "epoch", "AUC", s, 1, 0, 1, &err), 0);
    cairo_surface_t *sa = load(a), *sb = load(b);
    /* plot area: left 90, width 720 (W - 90 - (legend + 80), W = 890 + legend); epoch 3 of 5 at the middle */
    int x = 90 + 360;
    int with = grey_rows(sa, x) + grey_rows(sa, x + 1) + grey_rows(sa, x - 1);
    int without = grey_rows(sb, x) + grey_rows(sb, x + 1) + grey_rows(sb, x - 1);
    print_message("grey rows at epoch 3: %d with the mark, %d without\n", with, without);
    assert_true(with > 300);   /* dashed: 6 on, 4 off over 470 rows, 3 columns */
    assert_true(without < 60);   /* the tick label "3" */
    cairo_surface_destroy(sa);
    cairo_surface_destroy(sb);
    unlink(a);
    unlink(b);
    rmdir(dir);
}

/* The colour bar's label is a rotated line of text: in the figure's right
 * 50 columns, where the tick labels alone darken 5 short groups of rows, it
 * darkens most rows along the bar. */
static void test_confusion_colour_bar_label(void **state) {
    (void)state;
    char dir[] = "/tmp/vf_test_plot_XXXXXX", a[64];
    assert_non_null(mkdtemp(dir));
    snprintf(a, sizeof a, "%s/c.png", dir);
    const int64_t cm[9] = {5, 1, 0, 2, 7, 1, 0, 0, 9};
    const char *names[3] = {"nevus", "melanoma", "keratosis"};
    vf_error err = {{0}};
    assert_int_equal(vf_plot_confusion(a, "t", cm, 3, names, &err), 0);
    cairo_surface_t *s = load(a);
    const int W = cairo_image_surface_get_width(s), H = cairo_image_surface_get_height(s);
    int rows = 0;
    for (int y = 0; y < H; y++) {
        int dark = 0;
        for (int x = W - 50; x < W; x++) {
            uint32_t p = px(s, x, y);
            dark |= (p >> 16 & 255) < 200 && (p >> 8 & 255) < 200 && (p & 255) < 200;
        }
        rows += dark;
    }
    print_message("rows with dark pixels in the right 50 columns: %d\n", rows);
    assert_true(rows > 90);   /* the ticks alone: about 45 */
    cairo_surface_destroy(s);
    unlink(a);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roc_from_scores_hand_case),
        cmocka_unit_test(test_roc_from_counts),
        cmocka_unit_test(test_lines_mark_selected_epoch),
        cmocka_unit_test(test_confusion_colour_bar_label),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
