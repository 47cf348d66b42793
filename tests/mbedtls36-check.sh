#!/bin/sh
# Builds the tree against mbedTLS 3.6 (Debian 13's) and runs the TLS tests on
# that build, next to the usual Debian 12 / mbedTLS 2.28 one:
#
#   tests/mbedtls36-check.sh            (or: make mbedtls36-check)
#   tests/mbedtls36-check.sh --all      every unit program and the whole pytest suite on that build
#
# Debian 13's libmbedtls-dev and its three runtime libraries are fetched with
# `apt-get download` through an apt configuration of their own (a trixie
# source list, package lists and cache under $WORK; the system's sources and
# packages are not touched) and unpacked with dpkg -x into $WORK/prefix.  The
# tree is then built in $BUILD with -I/-L into that prefix (and an rpath, so
# the programs the Python tests start load 3.6, not the system's 2.28), and
# test_pki, test_rpc_wire and the gRPC / PKI Python tests run on it.
#
# With --all the whole tree is built against 3.6 and every unit-test program
# and Python test runs on it (as `make check` does on 2.28, without the fuzz
# and sanitizer passes), so what runs against 2.28 runs against 3.6 too.
#
# Environment:
#   MBEDTLS36_WORK    where the apt state, .debs and prefix go (/tmp/vf-mbedtls36)
#   MBEDTLS36_PREFIX  an unpacked prefix to use instead of fetching one
#                     (holds usr/include/mbedtls and usr/lib/<triplet>)
#   BUILD             build directory (build-mbedtls36)
#   JOBS              make -j (2)
#   PYTHON            the test virtualenv's python (.venv/bin/python)
#   MIRROR            Debian mirror (http://deb.debian.org/debian)
set -eu
cd "$(dirname "$0")/.."
WORK=${MBEDTLS36_WORK:-/tmp/vf-mbedtls36}
BUILD=${BUILD:-build-mbedtls36}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-.venv/bin/python}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TRIPLET=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)

fetch() {
  prefix=$1
  mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main" >"$WORK/apt/trixie.list"
  set -- -o Dir::Etc::sourcelist="$WORK/apt/trixie.list" -o Dir::Etc::sourceparts=- \
         -o Dir::State::Lists="$WORK/apt/lists" -o Dir::Cache="$WORK/apt/cache" -o APT::Sandbox::User=root
  echo "mbedtls36-check: fetching Debian 13's libmbedtls-dev (apt state in $WORK/apt)"
  apt-get "$@" -q update >"$WORK/apt/update.log" 2>&1 || { cat "$WORK/apt/update.log"; exit 1; }
  version=$(apt-cache "$@" show libmbedtls-dev | sed -n 's/^Version: //p' | sort -V | tail -1)
  case $version in
    3.6.*) ;;
    *) echo "mbedtls36-check: trixie's libmbedtls-dev is '$version', not 3.6"; exit 1 ;;
  esac
  # the -dev package and the runtime libraries it depends on (libmbedcrypto16, libmbedtls21, libmbedx509-7)
  libs=$(apt-cache "$@" show "libmbedtls-dev=$version" | sed -n 's/^Depends: //p' | tr ',' '\n' | sed 's/ *(.*//; s/^ *//' | grep '^libmbed')
  pkgs="libmbedtls-dev=$version"
  for l in $libs; do pkgs="$pkgs $l=$version"; done
  (cd "$WORK/debs" && rm -f ./*.deb && apt-get "$@" -q download $pkgs)
  rm -rf "$prefix"
  for d in "$WORK"/debs/*.deb; do dpkg -x "$d" "$prefix"; done
}

if [ -n "${MBEDTLS36_PREFIX:-}" ]; then
  P=$MBEDTLS36_PREFIX
else
  P=$WORK/prefix
  [ -f "$P/usr/include/mbedtls/build_info.h" ] || fetch "$P"
fi
INC=$P/usr/include
LIBDIR=$P/usr/lib/$TRIPLET
VERSION=$(sed -n 's/^#define MBEDTLS_VERSION_STRING *"\(.*\)"/\1/p' "$INC/mbedtls/build_info.h")
case $VERSION in
  3.6.*) echo "mbedtls36-check: mbedTLS $VERSION in $P" ;;
  *) echo "mbedtls36-check: $INC holds mbedTLS '$VERSION', not 3.6"; exit 1 ;;
esac

# CPPFLAGS / LDLIBS from the environment come first in the Makefile's (it
# appends to them), so these headers and libraries win over /usr/include's.
# A calling make's command-line variables (MAKEFLAGS) must not override them.
unset MAKEFLAGS MFLAGS MAKELEVEL
export CPPFLAGS="-I$INC"
export LDLIBS="-L$LIBDIR -Wl,-rpath,$LIBDIR"
ALL=0
[ "${1:-}" = --all ] && ALL=1
if [ $ALL = 1 ]; then
  make BUILD="$BUILD" NVCC= -j"$JOBS" all
else
  make BUILD="$BUILD" NVCC= -j"$JOBS" "$BUILD/vflclip" "$BUILD/vflclip-aggregator" "$BUILD/vflclip-image-party" \
    "$BUILD/vflclip-knowledge-party" "$BUILD/tests/test_pki" "$BUILD/tests/test_rpc_wire"
fi

for b in "$BUILD/vflclip" "$BUILD/tests/test_pki"; do
  if ! ldd "$b" | grep -q "libmbedtls.so.*$LIBDIR"; then
    echo "mbedtls36-check: $b does not load mbedTLS from $LIBDIR:"; ldd "$b" | grep mbed; exit 1
  fi
done
echo "mbedtls36-check: built against mbedTLS $VERSION (ldd: $(ldd "$BUILD/vflclip" | grep -o 'libmbedtls.so[^ ]*' | head -1))"

export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ $ALL = 1 ]; then
  tests/run-unit.sh "$BUILD"
  VF_BUILD="$BUILD" "$PYTHON" -m pytest -q tests/python
  echo "mbedtls36-check --all: OK (mbedTLS $VERSION: every unit program and Python test)"
  exit 0
fi
"$BUILD/tests/test_pki"
"$BUILD/tests/test_rpc_wire"
VF_BUILD="$BUILD" "$PYTHON" -m pytest -q tests/python/test_grpc_negative.py tests/python/test_grpc_interop.py \
  tests/python/test_grpc_c2c.py tests/python/test_pki.py
echo "mbedtls36-check: OK (mbedTLS $VERSION)"
