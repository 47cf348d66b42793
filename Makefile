# vflclip top-level build.
#   make          build everything under build/
#   make check    run every test (C unit tests, then the Python reference tests)
#   make bench    run the benchmarks (CPU; the GPU ones live in tests/gpu/run.sh)
#
# Sources are discovered: every .c file under common/ and kernels/cpu/ goes into
# build/libvflclip.a; common/cli/*.c is the `vflclip` program; each role folder
# is one daemon; tests/unit/test_*.c are cmocka programs.  A new file needs no
# edit here.

BUILD   ?= build
CC      ?= cc
NVCC    ?= $(shell command -v nvcc 2>/dev/null)
PYTHON  ?= .venv/bin/python

PKGS     := openblas libuv libnghttp2 libprotobuf-c libcjson libpng libjpeg cairo inih libsystemd zlib icu-uc libcrypto libzip
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lmbedtls -lmbedx509 -lmbedcrypto -lcsv

OPT     ?= -O3 -march=native
CFLAGS  ?= $(OPT) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-format-truncation -fno-strict-aliasing -fopenmp
CPPFLAGS += -Icommon -Ikernels -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) -lm -lpthread -fopenmp

# ---- sources --------------------------------------------------------------
LIB_DIRS := $(filter-out common/cli,$(patsubst %/,%,$(sort $(dir $(wildcard common/*/*.c common/*/*/*.c kernels/cpu/*.c)))))
LIB_SRC  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
PROTO    := $(wildcard proto/*.proto)
PROTO_C  := $(patsubst proto/%.proto,$(BUILD)/gen/proto/%.pb-c.c,$(PROTO))
PROTO_H  := $(PROTO_C:.c=.h)
PROTO_O  := $(patsubst $(BUILD)/gen/%.c,$(BUILD)/obj/gen/%.o,$(PROTO_C))
LIB_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(PROTO_O)
CLI_SRC  := $(wildcard common/cli/*.c)
CLI_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(CLI_SRC))
ROLES    := aggregator image-party knowledge-party
ROLE_BIN := $(foreach r,$(ROLES),$(if $(wildcard $(r)/*.c),$(BUILD)/vflclip-$(r)))
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_HELPERS := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out tests/unit/test_%,$(wildcard tests/unit/*.c)))
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
LIB      := $(BUILD)/libvflclip.a

# ---- CUDA (optional at build time, detected at run time) -------------------
CU_SRC   := $(wildcard kernels/cuda/*.cu)
ifneq ($(NVCC),)
ifneq ($(CU_SRC),)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
NVCCFLAGS ?= -O3 -std=c++17 -arch=sm_90 -Xcompiler -fPIC -Ikernels -Icommon
CU_OBJ   := $(patsubst %.cu,$(BUILD)/obj/%.o,$(CU_SRC))
CPPFLAGS += -DVF_HAVE_CUDA=1
LDLIBS   += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/targets/x86_64-linux/lib -lcudart -lcublas -lcublasLt -lcudnn -lstdc++
endif
endif

.SECONDEXPANSION:
# Keep object files that make sees as intermediates (role and test objects),
# so a second `make` relinks nothing.
.SECONDARY:
.PHONY: all check check-unit check-python bench clean deps venv
all: $(LIB) $(BUILD)/vflclip $(ROLE_BIN) $(TEST_BIN) $(BENCH_BIN)

$(BUILD)/gen/proto/%.pb-c.c $(BUILD)/gen/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen/proto
	protoc-c --proto_path=proto --c_out=$(BUILD)/gen/proto $<

# Generated protobuf-c sources compile under obj/gen so the generic rule
# below never sees them and make's built-in rule is never used.
$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ) $(CU_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/vflclip: $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) $(CLI_OBJ) $(LIB) $(LDLIBS) -o $@

$(BUILD)/vflclip-%: $(LIB) $$(addprefix $(BUILD)/obj/,$$(subst .c,.o,$$(wildcard $$*/*.c)))
	$(CC) $(CFLAGS) $(filter %.o,$^) $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(TEST_HELPERS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(TEST_HELPERS) $(LIB) $(LDLIBS) -lcmocka -o $@

$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDLIBS) -o $@

# ---- set-up, tests, benchmarks ---------------------------------------------
deps:
	deploy/install-deps.sh

venv: .venv/.installed
.venv/.installed: tests/python/requirements.txt
	tests/python/make-venv.sh .venv
	touch $@

check: all venv
	tests/run-unit.sh $(BUILD)
	$(PYTHON) -m pytest -q -rs tests/python

check-unit: all
	tests/run-unit.sh $(BUILD)

bench: all venv
	tests/bench/run.sh $(BUILD)

# ---- fuzzing and sanitizers (the gRPC transport; tests/fuzz) ---------------
#   make fuzz   builds the libFuzzer target for the server's HTTP/2 + gRPC
#               decoding with clang and runs it FUZZ_SECONDS (tests/fuzz/run.sh)
#   make asan   rebuilds the library, `vflclip` and the unit tests with ASan+UBSan
#               (CPU code only) in $(BUILD)/asan and runs the unit tests and the
#               gRPC tests on them
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 30
FUZZ_SRC     := $(wildcard common/rpc/*.c common/pki/*.c common/util/*.c)
.PHONY: fuzz asan
$(BUILD)/fuzz/fuzz_rpc_server: tests/fuzz/fuzz_rpc_server.c $(FUZZ_SRC) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -Icommon -Ikernels -I$(BUILD)/gen $(PKG_CFLAGS) $< $(FUZZ_SRC) $(PKG_LIBS) -lm -lpthread -o $@

fuzz: $(BUILD)/fuzz/fuzz_rpc_server venv
	tests/fuzz/run.sh $(BUILD) $(FUZZ_SECONDS)

asan:
	$(MAKE) BUILD=$(BUILD)/asan NVCC= OPT="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer" \
	  $(BUILD)/asan/vflclip $(patsubst $(BUILD)/%,$(BUILD)/asan/%,$(TEST_BIN))
	tests/run-unit.sh $(BUILD)/asan
	VF_BUILD=$(BUILD)/asan $(PYTHON) -m pytest -q tests/python/test_grpc_interop.py tests/python/test_grpc_negative.py

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
