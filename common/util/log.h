/* log: structured one-line logs on stderr.
 *   vf_log(VF_INFO, "event=run_start run=%s step=%d peer=%s", ...)
 * Every line starts with an ISO-8601 UTC timestamp, the level and the program
 * name, then the caller's key=value pairs.  One call is always one line:
 * control characters in the formatted text (a peer's string with a newline
 * in it) are written as \xNN, so nobody can forge a line. */
#ifndef VF_LOG_H
#define VF_LOG_H

enum { VF_DEBUG = 0, VF_INFO = 1, VF_WARN = 2, VF_ERROR = 3 };

void vf_log_set_program(const char *name);
void vf_log_set_level(int level);
void vf_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#include <stddef.h>
/* A value for key="value" in a log or audit line: src with control
 * characters, quotes and backslashes escaped (\n, \", \\, \xNN), cut to fit
 * cap bytes.  Returns dst.  For text a peer or an operator chose. */
const char *vf_log_quote(char *dst, size_t cap, const char *src);
/* Rewrites line in place (cap bytes) with its control characters as \xNN,
 * so it stays one line. */
void vf_log_one_line(char *line, size_t cap);

#endif
