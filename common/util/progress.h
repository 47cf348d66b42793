/* progress: how far long work is (images encoded of a data set), how fast
 * and how long it has left, for a person watching:
 *   on a terminal  one bar on stderr, redrawn at most ten times a second:
 *                  "encoding train images [#####     ] 3,412/7,007  48.7%  12.3 img/s  ETA 04:52"
 *   otherwise      one line every interval_s (default 5 s, or
 *                  $VFLCLIP_PROGRESS_INTERVAL_S) and at the end, to
 *                  stderr or, for a daemon, to the log (event=progress ...)
 *                  "encoding train images 3,412/7,007 (48.7%) 12.3 img/s eta 04:52"
 * The rate is the work done since vf_progress_begin over the time since
 * then; a caller that resumes work sets done0 to what was done before.
 * Not thread-safe: one reporter per thread; a daemon that works in
 * another thread reads done/total and formats with vf_progress_text. */
#ifndef VF_UTIL_PROGRESS_H
#define VF_UTIL_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#define VF_PROGRESS_INTERVAL_S 5.0

typedef enum { VF_PROGRESS_QUIET = 0, VF_PROGRESS_TTY, VF_PROGRESS_LINES, VF_PROGRESS_LOG } vf_progress_mode;

typedef struct vf_progress {
    char what[96];              /* "encoding train images" */
    const char *unit;           /* "img" */
    int64_t done, total;
    vf_progress_mode mode;
    double interval_s;          /* LINES / LOG: seconds between lines */
    double t0, last;            /* monotonic seconds: start of the rate, last line */
    int64_t done0;              /* done when the rate started */
    int started, open;          /* a first update was seen; a TTY line is open */
} vf_progress;

void vf_progress_begin(vf_progress *p, const char *what, const char *unit, int64_t total, vf_progress_mode mode);
/* done so far; reports when due. */
void vf_progress_set(vf_progress *p, int64_t done);
/* Reports now (a line, or the bar redrawn), due or not. */
void vf_progress_report(vf_progress *p);
/* The last report (done = total unless given otherwise) and the end of the TTY line. */
void vf_progress_end(vf_progress *p);

/* Units per second since the rate started (0 while unknown). */
double vf_progress_rate(const vf_progress *p);
/* Seconds left at that rate; -1 while unknown. */
double vf_progress_eta(const vf_progress *p);
/* "3,412/7,007 (48.7%) 12.3 img/s eta 04:52" (rate and eta left out while unknown). */
char *vf_progress_text(const vf_progress *p, char *out, size_t size);
/* "04:52", "1:02:03", "3d 04:05:06". */
char *vf_duration_text(double seconds, char *out, size_t size);
/* 7007 -> "7,007". */
char *vf_thousands(int64_t v, char *out, size_t size);

#endif
