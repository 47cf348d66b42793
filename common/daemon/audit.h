/* audit: the aggregator's audit log — one line per security-relevant event
 * (run start, abort, results fetched, party refused), naming the certificate
 * that asked (role, name, serial).  Appended with O_APPEND and fsynced line
 * by line, so a crash loses at most the line being written and never
 * rewrites history. */
#ifndef VF_DAEMON_AUDIT_H
#define VF_DAEMON_AUDIT_H

#include "pki/pki.h"
#include "util/vf_error.h"

/* Appends "<ISO time> event=<event> role=.. name=.. serial=.. <details>\n". */
int vf_audit(const char *path, const char *event, const vf_peer_identity *who, const char *details, vf_error *err);

#endif
