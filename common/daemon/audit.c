/* audit: append-only, fsynced audit lines (see audit.h). */
#include "daemon/audit.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int vf_audit(const char *path, const char *event, const vf_peer_identity *who, const char *details, vf_error *err) {
    char line[2048], ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(line, sizeof line - 1, "%s event=%s role=%s name=%s serial=%s %s", ts, event,
             who ? vf_role_name(who->role) : "local", who ? who->name : "-", who ? who->serial_hex : "-",
             details ? details : "");
    vf_log_one_line(line, sizeof line - 1);   /* one event, one line, whatever a peer put in details */
    int n = (int)strlen(line);
    line[n++] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return vf_fail(err, "%s: cannot open the audit log: %s", path, strerror(errno));
    ssize_t w = write(fd, line, (size_t)n);
    int rc = 0;
    if (w != n) rc = vf_fail(err, "%s: cannot append to the audit log: %s", path, w < 0 ? strerror(errno) : "short write");
    else if (fsync(fd) != 0) rc = vf_fail(err, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return rc;
}
