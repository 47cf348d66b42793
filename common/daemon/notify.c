/* notify: sd_notify READY/STATUS/WATCHDOG on libsystemd (see notify.h). */
#include "daemon/notify.h"
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

static uv_timer_t g_watchdog;
static int g_watchdog_on;

void vf_notify_ready(const char *status) {
    if (status) sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    else sd_notify(0, "READY=1");
}

void vf_notify_status(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", buf);
}

void vf_notify_stopping(void) { sd_notify(0, "STOPPING=1"); }

static void on_watchdog(uv_timer_t *t) { sd_notify(0, "WATCHDOG=1"); }

long vf_watchdog_start(uv_loop_t *loop) {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return 0;
    long ms = (long)(usec / 2000);
    if (ms < 1) ms = 1;
    uv_timer_init(loop, &g_watchdog);
    uv_timer_start(&g_watchdog, on_watchdog, 0, (uint64_t)ms);
    uv_unref((uv_handle_t *)&g_watchdog);   /* the watchdog alone keeps no loop alive */
    g_watchdog_on = 1;
    vf_log(VF_INFO, "event=watchdog interval_ms=%ld", ms);
    return ms;
}

void vf_watchdog_stop(void) {
    if (!g_watchdog_on) return;
    g_watchdog_on = 0;
    uv_timer_stop(&g_watchdog);
    uv_close((uv_handle_t *)&g_watchdog, NULL);
}
