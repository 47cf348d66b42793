#!/bin/sh
# Builds the GPU checker tests/gpu/gpu_check.c into BUILD/gpu_check (default
# build/gpu) without the Makefile, so that it builds on a GPU machine that has
# nvcc and a C compiler but none of the project's other libraries: it needs
# only kernels/cpu, kernels/cuda, common/util/{arena,vf_error}.c and
# common/coop/loss.c.  Uses OpenBLAS when pkg-config finds it, else the plain
# fallback in tests/gpu/fallback.  Prints the LD_LIBRARY_PATH to run it with.
set -eu
cd "$(dirname "$0")/../.."
BUILD=${1:-build/gpu}
mkdir -p "$BUILD/obj"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$NVCC" ] || { echo "build.sh: no nvcc found (set NVCC)"; exit 1; }
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$NVCC")")}
CC=${CC:-cc}
PY=$(command -v python3 || true)
pydir() { [ -n "$PY" ] && "$PY" -c "import os, $1 as m; print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])" 2>/dev/null || true; }

# cuDNN's header and libraries: the toolkit's, the system's, or pip's nvidia-cudnn wheel.
CUDNN_DIR=$(pydir nvidia.cudnn)
INC=""
for d in "$CUDA_HOME/include" /usr/include /usr/include/x86_64-linux-gnu ${CUDNN_DIR:+"$CUDNN_DIR/include"}; do
  if [ -f "$d/cudnn.h" ]; then INC="-I$d"; break; fi
done
[ -n "$INC" ] || echo "build.sh: WARNING: cudnn.h not found (toolkit, /usr/include, pip nvidia-cudnn): built without cuDNN, the ResNet checks will fail"
LIBPATH="$CUDA_HOME/lib64:$CUDA_HOME/lib:$CUDA_HOME/targets/x86_64-linux/lib"
for m in nvidia.cudnn nvidia.cublas nvidia.cu13 nvidia.cuda_runtime; do
  d=$(pydir $m); [ -n "$d" ] && [ -d "$d/lib" ] && LIBPATH="$LIBPATH:$d/lib"
done

if pkg-config --exists openblas 2>/dev/null; then
  BLAS_CFLAGS=$(pkg-config --cflags openblas); BLAS_LIBS=$(pkg-config --libs openblas); BLAS_SRC=""
else
  echo "build.sh: no OpenBLAS here; the C reference uses tests/gpu/fallback/cblas_fallback.c (slower)"
  BLAS_CFLAGS="-Itests/gpu/fallback"; BLAS_LIBS=""; BLAS_SRC="tests/gpu/fallback/cblas_fallback.c"
fi

CFLAGS="-O3 -march=native -std=c11 -D_GNU_SOURCE -DVF_HAVE_CUDA=1 -fopenmp -Wall -Wno-unused-parameter -Wno-format-truncation -Icommon -Ikernels -Itests/gpu $BLAS_CFLAGS"
NVCCFLAGS="-O3 -std=c++17 -arch=sm_90 -Xcompiler -fPIC -Ikernels -Icommon $INC"
C_SRC="$(ls kernels/cpu/*.c | grep -v blas_setup.c) common/util/arena.c common/util/vf_error.c common/coop/loss.c
 tests/gpu/check.c tests/gpu/check_ops.c tests/gpu/check_models.c tests/gpu/gpu_check.c $BLAS_SRC"
objs=""
pids=""
for f in kernels/cuda/*.cu; do
  o="$BUILD/obj/$(basename "$f" .cu).cu.o"; objs="$objs $o"
  "$NVCC" $NVCCFLAGS -c "$f" -o "$o" & pids="$pids $!"
done
for f in $C_SRC; do
  o="$BUILD/obj/$(echo "$f" | tr / _ | sed 's/\.c$//').o"; objs="$objs $o"
  $CC $CFLAGS -c "$f" -o "$o" & pids="$pids $!"
done
fail=0
for p in $pids; do wait "$p" || fail=1; done
[ "$fail" = 0 ] || { echo "build.sh: compilation failed"; exit 1; }
$CC -fopenmp $objs -o "$BUILD/gpu_check" -L"$CUDA_HOME/lib64" -L"$CUDA_HOME/targets/x86_64-linux/lib" -lcudart $BLAS_LIBS -lstdc++ -ldl -lpthread -lm
echo "build.sh: built $BUILD/gpu_check"
echo "LD_LIBRARY_PATH=$LIBPATH"
