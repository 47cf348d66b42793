/* progress: done/total, rate and time left, as a bar or as lines (see progress.h). */
#include "util/progress.h"
#include "util/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

char *vf_thousands(int64_t v, char *out, size_t size) {
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
    char tmp[48];
    int j = 0;
    if (v < 0) tmp[j++] = '-';
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) tmp[j++] = ',';
        tmp[j++] = digits[i];
    }
    tmp[j] = 0;
    snprintf(out, size, "%s", tmp);
    return out;
}

char *vf_duration_text(double seconds, char *out, size_t size) {
    if (!(seconds >= 0) || seconds > 1e9) {
        snprintf(out, size, "?");
        return out;
    }
    long t = (long)(seconds + 0.5);
    if (t >= 86400) snprintf(out, size, "%ldd %02ld:%02ld:%02ld", t / 86400, t / 3600 % 24, t / 60 % 60, t % 60);
    else if (t >= 3600) snprintf(out, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, size, "%02ld:%02ld", t / 60, t % 60);
    return out;
}

void vf_progress_begin(vf_progress *p, const char *what, const char *unit, int64_t total, vf_progress_mode mode) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->unit = unit ? unit : "";
    p->total = total;
    p->mode = mode;
    p->interval_s = VF_PROGRESS_INTERVAL_S;
    const char *env = getenv("VFLCLIP_PROGRESS_INTERVAL_S");
    char *end;
    double v = env ? strtod(env, &end) : 0;
    if (env && end != env && !*end && v > 0 && v <= 86400) p->interval_s = v;
    p->t0 = p->last = now_s();
}

double vf_progress_rate(const vf_progress *p) {
    double el = now_s() - p->t0;
    return p->started && el > 0 && p->done > p->done0 ? (double)(p->done - p->done0) / el : 0;
}

double vf_progress_eta(const vf_progress *p) {
    double r = vf_progress_rate(p);
    if (p->done >= p->total) return 0;
    return r > 0 ? (double)(p->total - p->done) / r : -1;
}

char *vf_progress_text(const vf_progress *p, char *out, size_t size) {
    char d[32], t[32], eta[32];
    double pct = p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 100.0, r = vf_progress_rate(p), e = vf_progress_eta(p);
    int n = snprintf(out, size, "%s/%s (%.1f%%)", vf_thousands(p->done, d, sizeof d), vf_thousands(p->total, t, sizeof t), pct);
    if (r > 0 && n > 0 && (size_t)n < size) n += snprintf(out + n, size - (size_t)n, " %.1f %s/s", r, p->unit);
    if (e >= 0 && p->done < p->total && n > 0 && (size_t)n < size)
        snprintf(out + n, size - (size_t)n, " eta %s", vf_duration_text(e, eta, sizeof eta));
    return out;
}

static void report(vf_progress *p, int final) {
    char text[256];
    if (p->mode == VF_PROGRESS_TTY) {
        const int width = 20;
        int fill = p->total > 0 ? (int)((double)width * (double)p->done / (double)p->total) : width;
        if (fill > width) fill = width;
        char d[32], t[32], eta[32];
        double r = vf_progress_rate(p), e = vf_progress_eta(p);
        int n = snprintf(text, sizeof text, "%s [%.*s%*s] %s/%s %5.1f%%", p->what, fill, "####################", width - fill, "",
                         vf_thousands(p->done, d, sizeof d), vf_thousands(p->total, t, sizeof t),
                         p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 100.0);
        if (r > 0) n += snprintf(text + n, sizeof text - (size_t)n, "  %.1f %s/s", r, p->unit);
        if (e >= 0 && !final) snprintf(text + n, sizeof text - (size_t)n, "  ETA %s", vf_duration_text(e, eta, sizeof eta));
        fprintf(stderr, "\r\033[K%s%s", text, final ? "\n" : "");
        p->open = !final;
        fflush(stderr);
    } else if (p->mode == VF_PROGRESS_LINES) {
        fprintf(stderr, "%s %s\n", p->what, vf_progress_text(p, text, sizeof text));
        fflush(stderr);
    } else if (p->mode == VF_PROGRESS_LOG) {
        char what[128];
        vf_log(VF_INFO, "event=progress what=\"%s\" done=%lld total=%lld rate=%.4g eta_s=%.0f text=\"%s\"",
               vf_log_quote(what, sizeof what, p->what), (long long)p->done, (long long)p->total, vf_progress_rate(p),
               vf_progress_eta(p), vf_progress_text(p, text, sizeof text));
    }
}

void vf_progress_set(vf_progress *p, int64_t done) {
    double t = now_s();
    p->started = 1;
    p->done = done;
    if (p->mode == VF_PROGRESS_QUIET) return;
    double every = p->mode == VF_PROGRESS_TTY ? 0.1 : p->interval_s;
    if (t - p->last >= every && done < p->total) {
        p->last = t;
        report(p, 0);
    }
}

void vf_progress_report(vf_progress *p) {
    p->last = now_s();
    report(p, 0);
}

void vf_progress_end(vf_progress *p) {
    if (p->mode == VF_PROGRESS_QUIET) return;
    report(p, 1);
    p->open = 0;
}
