/* log: timestamped key=value lines on stderr (see log.h). */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *g_program = "vflclip";
static int g_level = VF_INFO;

void vf_log_set_program(const char *name) { g_program = name; }
void vf_log_set_level(int level) { g_level = level; }

void vf_log(int level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < g_level) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s prog=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level & 3], g_program);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && n < (int)sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    vf_log_one_line(line, sizeof line);
    fprintf(stderr, "%s\n", line);
}

/* Appends the escaped form of c at dst[*at] if it fits in cap (with the NUL). */
static int put_escaped(char *dst, size_t cap, size_t *at, unsigned char c, int quotes) {
    char esc[8];
    int n;
    if (c == '\n') n = snprintf(esc, sizeof esc, "\\n");
    else if (quotes && (c == '"' || c == '\\')) n = snprintf(esc, sizeof esc, "\\%c", c);
    else if (c < 0x20 || c == 0x7f) n = snprintf(esc, sizeof esc, "\\x%02x", c);
    else esc[0] = (char)c, esc[1] = 0, n = 1;
    if (*at + (size_t)n >= cap) return -1;
    memcpy(dst + *at, esc, (size_t)n);
    *at += (size_t)n;
    return 0;
}

const char *vf_log_quote(char *dst, size_t cap, const char *src) {
    size_t at = 0;
    for (; src && *src && put_escaped(dst, cap, &at, (unsigned char)*src, 1) == 0; src++) {}
    dst[at] = 0;
    return dst;
}

void vf_log_one_line(char *line, size_t cap) {
    size_t len = strnlen(line, cap), i = 0;
    while (i < len && (unsigned char)line[i] >= 0x20 && line[i] != 0x7f) i++;
    if (i == len) return;   /* the usual case: nothing to escape */
    char copy[4096];
    size_t at = i;
    snprintf(copy, sizeof copy, "%s", line + i);
    for (const char *p = copy; *p && put_escaped(line, cap, &at, (unsigned char)*p, 0) == 0; p++) {}
    line[at] = 0;
}
