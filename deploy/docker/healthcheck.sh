#!/bin/sh
# The image's HEALTHCHECK (vflclip-healthcheck): asks the aggregator's Admin
# API (`vflclip status`, mutual TLS with an admin certificate) whether it
# answers, and with VFLCLIP_HEALTH_PARTY=<name> whether that party is
# connected to it.  The admin kit is the one named by VFLCLIP_ADMIN_CONFIG
# (docs/deploy.md: a read-only "monitor" admin kit is enough); without one
# nothing can be asked, which it says, reporting healthy.
set -u
if [ -z "${VFLCLIP_ADMIN_CONFIG:-}" ]; then
    echo "vflclip-healthcheck: VFLCLIP_ADMIN_CONFIG is not set: the Admin API is not asked"
    exit 0
fi
out=$(vflclip status --json --timeout-ms "${VFLCLIP_HEALTH_TIMEOUT_MS:-5000}" 2>&1) || {
    echo "vflclip-healthcheck: the aggregator does not answer: $out"
    exit 1
}
if [ -n "${VFLCLIP_HEALTH_PARTY:-}" ]; then
    case $out in
        *"\"name\":\"$VFLCLIP_HEALTH_PARTY\""*) ;;
        *) echo "vflclip-healthcheck: $VFLCLIP_HEALTH_PARTY is not connected to the aggregator"; exit 1 ;;
    esac
fi
echo "vflclip-healthcheck: ok"
