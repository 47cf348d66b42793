#!/bin/sh
# Installs the Debian packages vflclip builds and runs with; with --test also
# those the test suite needs (the reference PyTorch from Debian, clang for the
# fuzzer, systemd-analyze).  Idempotent: when every package is already
# installed it changes nothing and needs no network.
set -eu
PKGS="build-essential pkg-config git ca-certificates
 libopenblas-dev libdnnl-dev libuv1-dev libnghttp2-dev libmbedtls-dev libprotobuf-c-dev protobuf-c-compiler
 libcjson-dev libpng-dev libjpeg62-turbo-dev libcairo2-dev libinih-dev libsystemd-dev zlib1g-dev
 libicu-dev libcsv-dev libzip-dev libcmocka-dev openssl python3 python3-numpy"
if [ "${1:-}" = "--test" ]; then
  PKGS="$PKGS clang libclang-rt-14-dev systemd python3-venv python3-dev python3-torch python3-torchvision"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
