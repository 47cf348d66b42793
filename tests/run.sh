#!/bin/sh
# The test command (README, .ci/run): installs what the tests need on a fresh
# Debian 12 machine, builds everything and runs the whole suite.
set -eu
cd "$(dirname "$0")/.."
deploy/install-deps.sh --test
make -j"$(nproc)" all
make venv
make check
