#!/bin/sh
# Creates the test virtualenv on Debian's python3 so that it sees Debian's
# python3-torch, then installs the pinned reference tools from PyPI.
set -eu
VENV=${1:-.venv}
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$(dirname "$0")/requirements.txt"
