/* notify: the daemons' side of systemd's service protocol (Type=notify).
 * READY=1 once the daemon serves (or, for a party, has its model and data
 * loaded), STATUS= lines for `systemctl status`, and WATCHDOG=1 from a libuv
 * timer at half of WatchdogSec, so a wedged event loop gets restarted.
 * Without NOTIFY_SOCKET (not under systemd) every call is a no-op. */
#ifndef VF_DAEMON_NOTIFY_H
#define VF_DAEMON_NOTIFY_H

#include <uv.h>

void vf_notify_ready(const char *status);
void vf_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vf_notify_stopping(void);
/* Starts the watchdog timer when systemd asked for one (WATCHDOG_USEC);
 * returns the interval in ms, 0 when there is none. */
long vf_watchdog_start(uv_loop_t *loop);
void vf_watchdog_stop(void);

#endif
