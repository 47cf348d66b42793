/* plot: cairo line charts, confusion-matrix heat maps, ROC curves and
 * recall bars -> PNG bytes -> atomic file write. */
#include "plot/plot.h"
#include "util/fileio.h"

#include <cairo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FONT "DejaVu Sans"

typedef struct png_buf { unsigned char *data; size_t len, cap; } png_buf;

static cairo_status_t png_append(void *closure, const unsigned char *data, unsigned int len) {
    png_buf *b = closure;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + len) cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d) return CAIRO_STATUS_NO_MEMORY;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return CAIRO_STATUS_SUCCESS;
}

static int save_png(cairo_surface_t *s, const char *path, vf_error *err) {
    png_buf b = {0};
    cairo_status_t st = cairo_surface_write_to_png_stream(s, png_append, &b);
    int rc = st == CAIRO_STATUS_SUCCESS ? vf_write_atomic(path, b.data, b.len, err)
                                        : vf_fail(err, "%s: cairo could not encode the PNG (%s)", path, cairo_status_to_string(st));
    free(b.data);
    return rc;
}

static void text_at(cairo_t *cr, double x, double y, const char *s, double ax, double ay) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    cairo_move_to(cr, x - e.x_bearing - ax * e.width, y - e.y_bearing - ay * e.height);
    cairo_show_text(cr, s);
}

static double text_width(cairo_t *cr, const char *s) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    return e.x_advance;
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks. */
static double nice_step(double range, int target) {
    double raw = range / target, p = pow(10, floor(log10(raw))), f = raw / p;
    return p * (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10);
}

/* matplotlib's tab10: enough for DermaMNIST's seven classes */
static const double PALETTE[][3] = {
    {0.12, 0.47, 0.71}, {1.00, 0.50, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16}, {0.58, 0.40, 0.74},
    {0.55, 0.34, 0.29}, {0.89, 0.47, 0.76}, {0.50, 0.50, 0.50}, {0.74, 0.74, 0.13}, {0.09, 0.75, 0.81},
};
#define N_PALETTE ((int)(sizeof PALETTE / sizeof *PALETTE))

/* The title in bold, centred on x, shrunk from 20 pt until it fits max_w. */
static void draw_title(cairo_t *cr, double x, double y, double max_w, const char *title) {
    cairo_save(cr);
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    double size = 20;
    cairo_set_font_size(cr, size);
    while (size > 9 && text_width(cr, title) > max_w) cairo_set_font_size(cr, size -= 1);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text_at(cr, x, y, title, 0.5, 0.5);
    cairo_restore(cr);
}

/* A 1x1 surface's context for measuring text before the figure is sized. */
static cairo_t *probe_create(void) {
    cairo_surface_t *probe = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
    cairo_t *pc = cairo_create(probe);
    cairo_surface_destroy(probe);   /* the context keeps its reference */
    cairo_select_font_face(pc, FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(pc, 14);
    return pc;
}

/* A white W x H canvas with the normal face selected; *surf gets its surface. */
static cairo_t *canvas_open(int W, int H, cairo_surface_t **surf) {
    *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(*surf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    return cr;
}

/* Writes the finished figure to path (atomically) and frees the canvas. */
static int canvas_save(cairo_t *cr, cairo_surface_t *surf, const char *path, vf_error *err) {
    cairo_destroy(cr);
    cairo_surface_flush(surf);
    int rc = save_png(surf, path, err);
    cairo_surface_destroy(surf);
    return rc;
}

/* Colour, width and dash of series s, the same in the plot and its legend. */
static void series_pen(cairo_t *cr, int s, int dashed) {
    const double *c = PALETTE[s % N_PALETTE];
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    cairo_set_line_width(cr, 2.5);
    double dash[] = {8, 5};
    cairo_set_dash(cr, dash, dashed ? 2 : 0, 0);
}

int vf_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                  const vf_plot_series *series, int n_series, double y_min, double y_max, vf_error *err) {
    return vf_plot_lines_ex(path, title, xlabel, ylabel, series, n_series, y_min, y_max, NULL, err);
}

int vf_plot_lines_ex(const char *path, const char *title, const char *xlabel, const char *ylabel,
                     const vf_plot_series *series, int n_series, double y_min, double y_max,
                     const vf_plot_lines_options *opt, vf_error *err) {
    /* The legend sits right of the frame, so it never hides a curve. */
    double legend_w = 0;
    {
        cairo_t *pc = probe_create();
        for (int s = 0; s < n_series; s++) legend_w = fmax(legend_w, text_width(pc, series[s].name));
        cairo_destroy(pc);
    }
    const int W = 820 + (int)legend_w + 70, H = 600;
    const double L = 90, R = legend_w + 80, T = 60, B = 70;
    int n_max = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int s = 0; s < n_series; s++) {
        if (series[s].n > n_max) n_max = series[s].n;
        for (int i = 0; i < series[s].n; i++)
            if (isfinite(series[s].y[i])) { lo = fmin(lo, series[s].y[i]); hi = fmax(hi, series[s].y[i]); }
    }
    if (y_min < y_max) { lo = y_min; hi = y_max; }
    else if (!isfinite(lo)) { lo = 0; hi = 1; }
    else {
        double pad = hi > lo ? 0.05 * (hi - lo) : fmax(0.05 * fabs(hi), 0.05);
        lo -= pad;
        hi += pad;
    }
    int x_hi = n_max > 1 ? n_max : 2;

    cairo_surface_t *surf;
    cairo_t *cr = canvas_open(W, H, &surf);
    const double pw = W - L - R, ph = H - T - B;
#define PX(x) (L + ((x) - 1) / (double)(x_hi - 1) * pw)
#define PY(y) (T + ph - ((y) - lo) / (hi - lo) * ph)

    /* grid and ticks */
    cairo_set_font_size(cr, 14);
    char lab[64];
    double ystep = nice_step(hi - lo, 6);
    for (double v = ceil(lo / ystep) * ystep; v <= hi + 1e-9 * ystep; v += ystep) {
        cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
        cairo_set_line_width(cr, 1);
        cairo_move_to(cr, L, PY(v));
        cairo_line_to(cr, L + pw, PY(v));
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        snprintf(lab, sizeof lab, "%g", fabs(v) < 1e-12 * ystep ? 0.0 : v);
        text_at(cr, L - 8, PY(v), lab, 1.0, 0.5);
    }
    double xstep = fmax(1, nice_step(x_hi - 1, 8));
    xstep = ceil(xstep);
    for (double x = 1; x <= x_hi + 1e-9; x += xstep) {
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        snprintf(lab, sizeof lab, "%g", x);
        text_at(cr, PX(x), T + ph + 8, lab, 0.5, 0.0);
    }
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_line_width(cr, 1.5);
    cairo_rectangle(cr, L, T, pw, ph);
    cairo_stroke(cr);

    /* labels */
    cairo_set_font_size(cr, 16);
    text_at(cr, L + pw / 2, H - 22, xlabel, 0.5, 0.5);
    cairo_save(cr);
    cairo_translate(cr, 24, T + ph / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_at(cr, 0, 0, ylabel, 0.5, 0.5);
    cairo_restore(cr);
    draw_title(cr, W / 2.0, T / 2, W - 20, title);

    /* the selected epoch: a dashed vertical line, labelled at the top */
    if (opt && opt->mark_epoch >= 1 && opt->mark_epoch <= x_hi) {
        char mark[96];
        if (opt->mark_label) snprintf(mark, sizeof mark, "%s", opt->mark_label);
        else snprintf(mark, sizeof mark, "selected epoch %d", opt->mark_epoch);
        double mx = PX(opt->mark_epoch);
        double dash[] = {6, 4};
        cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
        cairo_set_line_width(cr, 1.5);
        cairo_set_dash(cr, dash, 2, 0);
        cairo_move_to(cr, mx, T);
        cairo_line_to(cr, mx, T + ph);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_set_font_size(cr, 13);
        double tw = text_width(cr, mark);
        int left = mx + 6 + tw > L + pw;   /* near the right edge: the label goes left of the line */
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_rectangle(cr, left ? mx - 8 - tw : mx + 4, T + 4, tw + 4, 18);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
        text_at(cr, left ? mx - 6 : mx + 6, T + 13, mark, left ? 1.0 : 0.0, 0.5);
    }

    /* series, clipped to the plot area */
    cairo_save(cr);
    cairo_rectangle(cr, L, T, pw, ph);
    cairo_clip(cr);
    for (int s = 0; s < n_series; s++) {
        series_pen(cr, s, series[s].dashed);
        int pen = 0;
        for (int i = 0; i < series[s].n; i++) {
            double y = series[s].y[i];
            if (!isfinite(y)) { pen = 0; continue; }
            if (pen) cairo_line_to(cr, PX(i + 1), PY(y));
            else cairo_move_to(cr, PX(i + 1), PY(y));
            pen = 1;
        }
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        for (int i = 0; i < series[s].n; i++)
            if (isfinite(series[s].y[i])) {
                cairo_arc(cr, PX(i + 1), PY(series[s].y[i]), 3.5, 0, 2 * M_PI);
                cairo_fill(cr);
            }
    }
    cairo_restore(cr);

    cairo_set_font_size(cr, 14);
    double lx = L + pw + 18, ly = T + 4;
    for (int s = 0; s < n_series; s++) {
        series_pen(cr, s, series[s].dashed);
        cairo_move_to(cr, lx, ly + 22 * s + 8);
        cairo_line_to(cr, lx + 34, ly + 22 * s + 8);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        text_at(cr, lx + 42, ly + 22 * s + 8, series[s].name, 0.0, 0.5);
    }
#undef PX
#undef PY
    return canvas_save(cr, surf, path, err);
}

/* White -> blue ramp. */
static void heat_colour(double f, double *r, double *g, double *b) {
    f = f < 0 ? 0 : f > 1 ? 1 : f;
    *r = 0.97 - f * (0.97 - 0.03);
    *g = 0.98 - f * (0.98 - 0.19);
    *b = 1.00 - f * (1.00 - 0.42);
}

int vf_plot_confusion(const char *path, const char *title, const int64_t *cm, int C, const char *const *class_names,
                      vf_error *err) {
    if (C < 1 || C > 64) return vf_fail(err, "%s: cannot plot a %dx%d confusion matrix", path, C, C);
    /* Measure the class names to size the margins. */
    cairo_t *pc = probe_create();
    double name_w = 0;
    for (int k = 0; k < C; k++) name_w = fmax(name_w, text_width(pc, class_names[k]));
    cairo_select_font_face(pc, FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    cairo_set_font_size(pc, 20);
    double title_w = text_width(pc, title);
    cairo_destroy(pc);

    const double cell = C <= 10 ? 70 : 700.0 / C;
    const double L = name_w + 60, T = 70, Bm = name_w * 0.75 + 70, R = 140;
    const int W = (int)ceil(fmax(L + cell * C + R, fmin(title_w + 40, 1400))), H = (int)ceil(T + cell * C + Bm);

    cairo_surface_t *surf;
    cairo_t *cr = canvas_open(W, H, &surf);
    draw_title(cr, W / 2.0, T / 2, W - 20, title);

    char lab[32];
    for (int i = 0; i < C; i++) {
        int64_t row = 0;
        for (int j = 0; j < C; j++) row += cm[(size_t)i * C + j];
        for (int j = 0; j < C; j++) {
            int64_t v = cm[(size_t)i * C + j];
            double f = row ? (double)v / row : 0, r, g, b;
            heat_colour(f, &r, &g, &b);
            double x = L + j * cell, y = T + i * cell;
            cairo_set_source_rgb(cr, r, g, b);
            cairo_rectangle(cr, x, y, cell, cell);
            cairo_fill(cr);
            cairo_set_source_rgb(cr, f > 0.5 ? 1 : 0.1, f > 0.5 ? 1 : 0.1, f > 0.5 ? 1 : 0.1);
            cairo_set_font_size(cr, fmin(18, cell * 0.3));
            snprintf(lab, sizeof lab, "%lld", (long long)v);
            text_at(cr, x + cell / 2, y + cell / 2, lab, 0.5, 0.5);
        }
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, L, T, cell * C, cell * C);
    cairo_stroke(cr);

    cairo_set_font_size(cr, 14);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    for (int k = 0; k < C; k++) {
        text_at(cr, L - 8, T + (k + 0.5) * cell, class_names[k], 1.0, 0.5);
        cairo_save(cr);   /* column names rotated 45 degrees, ending under their column */
        cairo_translate(cr, L + (k + 0.5) * cell, T + C * cell + 8);
        cairo_rotate(cr, -M_PI / 4);
        cairo_text_extents_t e;
        cairo_text_extents(cr, class_names[k], &e);
        cairo_move_to(cr, -e.x_advance, e.height);
        cairo_show_text(cr, class_names[k]);
        cairo_restore(cr);
    }
    cairo_set_font_size(cr, 16);
    text_at(cr, L + cell * C / 2, H - 18, "predicted class", 0.5, 0.5);
    cairo_save(cr);
    cairo_translate(cr, 18, T + cell * C / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_at(cr, 0, 0, "true class", 0.5, 0.5);
    cairo_restore(cr);

    /* colour bar: fraction of the true class */
    double bx = L + cell * C + 30, bh = cell * C;
    for (int i = 0; i < 100; i++) {
        double r, g, b;
        heat_colour(1 - i / 99.0, &r, &g, &b);
        cairo_set_source_rgb(cr, r, g, b);
        cairo_rectangle(cr, bx, T + bh * i / 100.0, 20, bh / 100.0 + 1);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_rectangle(cr, bx, T, 20, bh);
    cairo_stroke(cr);
    cairo_set_font_size(cr, 12);
    double tick_w = 0;
    for (int i = 0; i <= 4; i++) {
        snprintf(lab, sizeof lab, "%.2f", 1 - i / 4.0);
        text_at(cr, bx + 26, T + bh * i / 4.0, lab, 0.0, 0.5);
        tick_w = fmax(tick_w, text_width(cr, lab));
    }
    cairo_set_font_size(cr, 14);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_save(cr);
    cairo_translate(cr, bx + 26 + tick_w + 16, T + bh / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_at(cr, 0, 0, "fraction of true class", 0.5, 0.5);
    cairo_restore(cr);
    return canvas_save(cr, surf, path, err);
}

/* Grid lines and 0.0..1.0 ticks on both axes of a panel of w x h at (L, T)
 * whose axes both run over 0..1 (reliability diagram, ROC). */
static void unit_grid(cairo_t *cr, double L, double T, double w, double h, double font) {
    cairo_set_font_size(cr, font);
    for (int i = 0; i <= 10; i += 2) {
        double v = i / 10.0, x = L + v * w, y = T + h - v * h;
        char lab[16];
        snprintf(lab, sizeof lab, "%.1f", v);
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_set_line_width(cr, 1);
        cairo_move_to(cr, L, y); cairo_line_to(cr, L + w, y);
        cairo_move_to(cr, x, T + h); cairo_line_to(cr, x, T);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        text_at(cr, L - 8, y, lab, 1, 0.5);
        text_at(cr, x, T + h + 8, lab, 0.5, 0);
    }
}

int vf_plot_reliability(const char *path, const char *title, const long *count, const double *conf, const double *acc,
                        int n_bins, vf_error *err) {
    if (n_bins < 1) return vf_fail(err, "%s: a reliability diagram needs at least one bin", path);
    const int W = 700, H = 640;
    const double L = 90, R = 40, T = 60, B = 70, pw = W - L - R, ph = H - T - B;
    cairo_surface_t *surf;
    cairo_t *cr = canvas_open(W, H, &surf);
#define RX(x) (L + (x) * pw)
#define RY(y) (T + ph - (y) * ph)
    unit_grid(cr, L, T, pw, ph, 12);
    /* per-bin accuracy bars (empty bins left out), gap to confidence in red */
    for (int b = 0; b < n_bins; b++) {
        if (!count[b] || !isfinite(acc[b]) || !isfinite(conf[b])) continue;
        double x0 = (double)b / n_bins, x1 = (double)(b + 1) / n_bins;
        cairo_set_source_rgb(cr, PALETTE[0][0], PALETTE[0][1], PALETTE[0][2]);
        cairo_rectangle(cr, RX(x0) + 1, RY(acc[b]), (x1 - x0) * pw - 2, acc[b] * ph);
        cairo_fill(cr);
        double lo = fmin(acc[b], conf[b]), hi = fmax(acc[b], conf[b]);
        cairo_set_source_rgba(cr, 0.84, 0.15, 0.16, 0.35);
        cairo_rectangle(cr, RX(x0) + 1, RY(hi), (x1 - x0) * pw - 2, (hi - lo) * ph);
        cairo_fill(cr);
        char lab[24];
        snprintf(lab, sizeof lab, "%ld", count[b]);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        cairo_set_font_size(cr, 10);
        text_at(cr, RX((x0 + x1) / 2), RY(fmax(acc[b], conf[b])) - 4, lab, 0.5, 1);
    }
    /* perfect calibration */
    double dash[] = {6, 4};
    cairo_set_dash(cr, dash, 2, 0);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1.5);
    cairo_move_to(cr, RX(0), RY(0)); cairo_line_to(cr, RX(1), RY(1));
    cairo_stroke(cr);
    cairo_set_dash(cr, dash, 0, 0);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_rectangle(cr, L, T, pw, ph);
    cairo_stroke(cr);
    cairo_set_font_size(cr, 16);
    text_at(cr, W / 2.0, 20, title, 0.5, 0);
    cairo_set_font_size(cr, 14);
    text_at(cr, L + pw / 2, H - 30, "confidence (top-class probability)", 0.5, 0);
    cairo_save(cr);
    cairo_translate(cr, 25, T + ph / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_at(cr, 0, 0, "accuracy (bar; red: gap to confidence; number: images)", 0.5, 0.5);
    cairo_restore(cr);
#undef RX
#undef RY
    return canvas_save(cr, surf, path, err);
}

static const char *class_label(const char *const *names, int k, char *buf, size_t n) {
    if (names && names[k]) return names[k];
    snprintf(buf, n, "class %d", k);
    return buf;
}

int vf_plot_roc(const char *path, const char *title, const vf_roc *roc, const char *const *class_names, vf_error *err) {
    const int C = roc->n_classes;
    if (C < 1 || !roc->curve) return vf_fail(err, "%s: no ROC curves to plot", path);
    char (*legend)[200] = malloc((size_t)C * sizeof *legend);
    if (!legend) return vf_fail(err, "%s: out of memory", path);
    cairo_t *pc = probe_create();
    double legend_w = 0;
    for (int k = 0; k < C; k++) {
        char nb[32];
        const vf_roc_curve *c = &roc->curve[k];
        const char *name = class_label(class_names, k, nb, sizeof nb);
        if (c->n_points > 0 && isfinite(c->auc)) snprintf(legend[k], sizeof legend[k], "%s (AUC %.3f)", name, c->auc);
        else snprintf(legend[k], sizeof legend[k], "%s (AUC n/a: no %s)", name, c->positives ? "negatives" : "samples");
        legend_w = fmax(legend_w, text_width(pc, legend[k]));
    }
    cairo_destroy(pc);

    const double side = 540, L = 90, T = 60, B = 90, R = legend_w + 80;
    const int W = (int)ceil(L + side + R), H = (int)ceil(T + side + B);
    cairo_surface_t *surf;
    cairo_t *cr = canvas_open(W, H, &surf);
#define QX(x) (L + (x) * side)
#define QY(y) (T + side - (y) * side)
    unit_grid(cr, L, T, side, side, 13);
    /* chance */
    double dash[] = {6, 4};
    cairo_set_dash(cr, dash, 2, 0);
    cairo_set_source_rgb(cr, 0.55, 0.55, 0.55);
    cairo_set_line_width(cr, 1.2);
    cairo_move_to(cr, QX(0), QY(0));
    cairo_line_to(cr, QX(1), QY(1));
    cairo_stroke(cr);
    cairo_set_dash(cr, NULL, 0, 0);
    /* curves */
    cairo_save(cr);
    cairo_rectangle(cr, L - 2, T - 2, side + 4, side + 4);
    cairo_clip(cr);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (int k = 0; k < C; k++) {
        const vf_roc_curve *c = &roc->curve[k];
        if (c->n_points < 2) continue;
        series_pen(cr, k, 0);
        cairo_set_line_width(cr, 2.2);
        cairo_move_to(cr, QX(c->fpr[0]), QY(c->tpr[0]));
        for (int i = 1; i < c->n_points; i++) cairo_line_to(cr, QX(c->fpr[i]), QY(c->tpr[i]));
        cairo_stroke(cr);
    }
    cairo_restore(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1.5);
    cairo_rectangle(cr, L, T, side, side);
    cairo_stroke(cr);
    /* legend right of the frame */
    cairo_set_font_size(cr, 14);
    double lx = L + side + 20, ly = T + 6;
    for (int k = 0; k < C; k++) {
        const vf_roc_curve *c = &roc->curve[k];
        double y = ly + 24 * k + 8;
        if (c->n_points >= 2) {
            series_pen(cr, k, 0);
            cairo_move_to(cr, lx, y);
            cairo_line_to(cr, lx + 30, y);
            cairo_stroke(cr);
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        } else {
            cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
        }
        text_at(cr, lx + 38, y, legend[k], 0.0, 0.5);
    }
    {
        double y = ly + 24 * C + 8;
        cairo_set_dash(cr, dash, 2, 0);
        cairo_set_source_rgb(cr, 0.55, 0.55, 0.55);
        cairo_set_line_width(cr, 1.2);
        cairo_move_to(cr, lx, y);
        cairo_line_to(cr, lx + 30, y);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
        text_at(cr, lx + 38, y, "chance (AUC 0.5)", 0.0, 0.5);
    }
    draw_title(cr, W / 2.0, T / 2, W - 20, title);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_set_font_size(cr, 16);
    text_at(cr, L + side / 2, T + side + 40, "False positive rate (1 - specificity)", 0.5, 0.5);
    cairo_save(cr);
    cairo_translate(cr, 26, T + side / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_at(cr, 0, 0, "True positive rate (sensitivity)", 0.5, 0.5);
    cairo_restore(cr);
    cairo_set_font_size(cr, 12);
    cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
    text_at(cr, L + side / 2, T + side + 70,
            roc->from_histogram ? "one class vs the rest; curves from summed score histograms (log-odds bins)"
                                : "one class vs the rest; one point per distinct score",
            0.5, 0.5);
#undef QX
#undef QY
    free(legend);
    return canvas_save(cr, surf, path, err);
}

int vf_plot_recall_bars(const char *path, const char *title, const double *recall, const int64_t *support, int C,
                        const char *const *class_names, vf_error *err) {
    if (C < 1 || C > 256) return vf_fail(err, "%s: cannot plot recall bars for %d classes", path, C);
    char (*label)[200] = malloc((size_t)C * sizeof *label);
    if (!label) return vf_fail(err, "%s: out of memory", path);
    cairo_t *pc = probe_create();
    double name_w = 0;
    for (int k = 0; k < C; k++) {
        char nb[32];
        const char *name = class_label(class_names, k, nb, sizeof nb);
        if (support) snprintf(label[k], sizeof label[k], "%s (n = %lld)", name, (long long)support[k]);
        else snprintf(label[k], sizeof label[k], "%s", name);
        name_w = fmax(name_w, text_width(pc, label[k]));
    }
    cairo_destroy(pc);
    const double bar_h = 30, gap = 12, pw = 520;
    const double L = name_w + 30, T = 80, R = 90, B = 80, ph = C * (bar_h + gap) + gap;
    const int W = (int)ceil(fmax(L + pw + R, 640)), H = (int)ceil(T + ph + B);
    cairo_surface_t *surf;
    cairo_t *cr = canvas_open(W, H, &surf);
#define BX(v) (L + (v) * pw)
    cairo_set_font_size(cr, 13);
    for (int i = 0; i <= 10; i += 2) {
        double v = i / 10.0;
        char lab[16];
        snprintf(lab, sizeof lab, "%.1f", v);
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_set_line_width(cr, 1);
        cairo_move_to(cr, BX(v), T);
        cairo_line_to(cr, BX(v), T + ph);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        text_at(cr, BX(v), T + ph + 8, lab, 0.5, 0);
    }
    double sum = 0;
    int defined = 0;
    char val[32];
    for (int k = 0; k < C; k++) {
        double y = T + gap + k * (bar_h + gap);
        cairo_set_font_size(cr, 14);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        text_at(cr, L - 10, y + bar_h / 2, label[k], 1.0, 0.5);
        if (!isfinite(recall[k])) {
            cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_ITALIC, CAIRO_FONT_WEIGHT_NORMAL);
            cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
            text_at(cr, BX(0) + 8, y + bar_h / 2, "no samples", 0.0, 0.5);
            cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
            continue;
        }
        double r = recall[k] < 0 ? 0 : recall[k] > 1 ? 1 : recall[k];
        sum += recall[k];
        defined++;
        const double *c = PALETTE[k % N_PALETTE];
        cairo_set_source_rgb(cr, c[0], c[1], c[2]);
        cairo_rectangle(cr, BX(0), y, r * pw, bar_h);
        cairo_fill(cr);
        snprintf(val, sizeof val, "%.3f", recall[k]);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        text_at(cr, BX(r) + 6, y + bar_h / 2, val, 0.0, 0.5);
    }
    if (defined) {
        double mean = sum / defined, dash[] = {6, 4};
        cairo_set_dash(cr, dash, 2, 0);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        cairo_set_line_width(cr, 1.5);
        cairo_move_to(cr, BX(mean), T - 6);
        cairo_line_to(cr, BX(mean), T + ph);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        snprintf(val, sizeof val, "balanced accuracy %.3f", mean);
        cairo_set_font_size(cr, 13);
        text_at(cr, BX(mean), T - 10, val, 0.5, 1.0);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1.5);
    cairo_rectangle(cr, L, T, pw, ph);
    cairo_stroke(cr);
    draw_title(cr, W / 2.0, 28, W - 20, title);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_set_font_size(cr, 16);
    text_at(cr, L + pw / 2, T + ph + 50, "Recall (sensitivity): fraction of the class predicted as it", 0.5, 0.5);
#undef BX
    free(label);
    return canvas_save(cr, surf, path, err);
}
