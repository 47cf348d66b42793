/* log: structured one-line logs on stderr.
 *   vf_log(VF_INFO, "event=run_start run=%s step=%d peer=%s", ...)
 * Every line starts with an ISO-8601 UTC timestamp, the level and the program
 * name, then the caller's key=value pairs. */
#ifndef VF_LOG_H
#define VF_LOG_H

enum { VF_DEBUG = 0, VF_INFO = 1, VF_WARN = 2, VF_ERROR = 3 };

void vf_log_set_program(const char *name);
void vf_log_set_level(int level);
void vf_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
