# vflclip top-level build.
#   make          build everything under build/
#   make check    run every test (C unit tests, the Python reference tests, each
#                 fuzz target for a few seconds, the unit/gRPC/federation tests
#                 again under ASan+UBSan)
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

PKGS     := openblas libuv libnghttp2 libprotobuf-c libcjson libpng libjpeg cairo inih libsystemd zlib icu-uc libzip
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# oneDNN (libdnnl-dev): bf16 image towers on CPUs with AVX512_BF16/AMX (kernels/cpu/matmul_bf16.h);
# a build without it computes in fp32 only.
DNNL_LIBS  := $(if $(wildcard /usr/include/dnnl.h),-ldnnl)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lmbedtls -lmbedx509 -lmbedcrypto -lcsv $(DNNL_LIBS)

# Portable by default: what is built (and installed, and shipped in the
# image) runs on any x86-64 with SSE4.2/POPCNT (x86-64-v2, 2009 on); OpenBLAS
# picks its kernels at run time, and the hot loops of kernels/cpu/ carry AVX2
# and AVX-512 clones chosen at run time (VF_CPU_DISPATCH in
# kernels/cpu/cpu_dispatch.h).  `make NATIVE=1` builds for this machine only
# (-march=native); docs/BENCHMARKS.md compares the two.
ifeq ($(NATIVE),1)
OPT     ?= -O3 -march=native
else ifeq ($(shell uname -m),x86_64)
OPT     ?= -O3 -march=x86-64-v2 -mtune=generic
else
OPT     ?= -O3
endif
CFLAGS  ?= $(OPT) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-format-truncation -fno-strict-aliasing -fopenmp
CPPFLAGS += -Icommon -Ikernels -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP $(if $(DNNL_LIBS),-DVF_HAVE_DNNL)
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

# --version (common/daemon/version.c): the tree's git revision and the build's
# optimisation flags; version.o alone is rebuilt when either changes.
VF_GIT_REV := $(or $(shell git describe --always --dirty --exclude='*' 2>/dev/null),unknown)
VF_VERSION_STAMP := $(shell mkdir -p $(BUILD)/gen && { echo '$(VF_GIT_REV) $(OPT)' | cmp -s - $(BUILD)/gen/version-stamp || echo '$(VF_GIT_REV) $(OPT)' > $(BUILD)/gen/version-stamp; })
$(BUILD)/obj/common/daemon/version.o: $(BUILD)/gen/version-stamp
$(BUILD)/obj/common/daemon/version.o: CPPFLAGS += -DVF_GIT_REV='"$(VF_GIT_REV)"' -DVF_BUILD_OPT='"$(OPT)"'

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
	$(MAKE) fuzz-smoke
	$(MAKE) asan

check-unit: all
	tests/run-unit.sh $(BUILD)

bench: all venv
	tests/bench/run.sh $(BUILD)

# ---- install ----------------------------------------------------------------
#   make install [PREFIX=/usr/local] [DESTDIR=...]   the four programs, the
#       systemd units (ExecStart= pointing at $(BINDIR)), example INI files,
#       man pages made from the programs' --help/--help-config
#       (deploy/gen-man.sh) and the guides
#   make uninstall [PREFIX=...] [DESTDIR=...]         removes exactly those files
# The units go where systemd looks for them under PREFIX (/usr/local/lib/
# systemd/system or /usr/lib/systemd/system); they read the kits from
# /etc/vflclip/<kit>/ whatever PREFIX is (docs/deploy.md section 4).
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
DOCDIR   ?= $(PREFIX)/share/doc/vflclip
EXAMPLEDIR ?= $(DOCDIR)/examples
UNITDIR  ?= $(PREFIX)/lib/systemd/system
INSTALL  ?= install
INST_PROGS := vflclip $(addprefix vflclip-,$(ROLES))
INST_UNITS := $(notdir $(wildcard deploy/systemd/*.service))
INST_MAN1  := $(addsuffix .1,$(INST_PROGS))
INST_MAN5  := $(addsuffix .ini.5,$(addprefix vflclip-,$(ROLES)))
INST_EXAMPLES := $(addsuffix .ini,$(ROLES)) run.ini
INST_DOCS  := README.md $(wildcard docs/*.md)
.PHONY: install uninstall man

man: $(BUILD)/man/.stamp
$(BUILD)/man/.stamp: $(addprefix $(BUILD)/,$(INST_PROGS)) deploy/gen-man.sh
	rm -rf $(BUILD)/man && deploy/gen-man.sh $(BUILD) $(BUILD)/man && touch $@

# Example configurations: every key with its default (--help-config), set up
# for the systemd units (key from the credentials, state in the state dir);
# comment lines folded under 160 characters (the INI reader takes lines of at
# most 200).
$(BUILD)/examples/%.ini: $(BUILD)/vflclip-%
	@mkdir -p $(dir $@)
	$< --help-config | sed -e 's|^key = key.pem$$|key = $${CREDENTIALS_DIRECTORY}/key.pem|' \
	  -e 's|^dir = state$$|dir = $${STATE_DIRECTORY}|' | awk '/^; / && length($$0) > 160 { s = substr($$0, 3); \
	    while (length(s) > 156) { i = 156; while (i > 1 && substr(s, i, 1) != " ") i--; if (i <= 1) i = 156; \
	      print "; " substr(s, 1, i - 1); s = substr(s, i + 1) } print "; " s; next } { print }' > $@
$(BUILD)/examples/run.ini: $(BUILD)/vflclip
	@mkdir -p $(dir $@)
	$< run keys > $@

install: $(addprefix $(BUILD)/,$(INST_PROGS)) $(BUILD)/man/.stamp $(addprefix $(BUILD)/examples/,$(INST_EXAMPLES))
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
	  $(DESTDIR)$(DOCDIR) $(DESTDIR)$(EXAMPLEDIR)
	$(INSTALL) -m 0755 $(addprefix $(BUILD)/,$(INST_PROGS)) $(DESTDIR)$(BINDIR)/
	for u in $(INST_UNITS); do \
	  sed 's|/usr/local/bin/|$(BINDIR)/|g' deploy/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	$(INSTALL) -m 0644 $(addprefix $(BUILD)/man/man1/,$(INST_MAN1)) $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 0644 $(addprefix $(BUILD)/man/man5/,$(INST_MAN5)) $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 0644 $(addprefix $(BUILD)/examples/,$(INST_EXAMPLES)) $(DESTDIR)$(EXAMPLEDIR)/
	$(INSTALL) -m 0644 $(INST_DOCS) $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(INST_PROGS)) $(addprefix $(DESTDIR)$(UNITDIR)/,$(INST_UNITS)) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(INST_MAN1)) $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(INST_MAN5)) \
	  $(addprefix $(DESTDIR)$(EXAMPLEDIR)/,$(INST_EXAMPLES)) $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(INST_DOCS)))
	-rmdir $(DESTDIR)$(EXAMPLEDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null

# ---- fuzzing and sanitizers (tests/fuzz) --------------------------------------
#   make fuzz        builds every libFuzzer target tests/fuzz/fuzz_<name>.c with
#                    clang (ASan+UBSan) into $(BUILD)/fuzz and runs each for
#                    FUZZ_SECONDS from its seed corpus tests/fuzz/corpus/<name>
#                    (tests/fuzz/run.sh); a crash fails the target and leaves
#                    its input at $(BUILD)/fuzz/crash-<name>-*
#   make fuzz-smoke  the same, FUZZ_SMOKE_SECONDS (3) each: `make check` runs it
#   make asan        rebuilds the library, `vflclip`, the three daemons and the
#                    unit tests with ASan+UBSan (CPU code only) in $(BUILD)/asan
#                    and runs the unit tests, the gRPC tests and the federation
#                    tests on them; any sanitizer report fails the test
# The fuzz library is every LIB_SRC file compiled once with
# -fsanitize=fuzzer-no-link,address,undefined into $(BUILD)/fuzz/libvflclip.a;
# each target links it (and, for a daemon's handlers, that daemon's objects
# other than main.c, FUZZ_EXTRA_<name>; fuzz_knowledge_party and
# fuzz_image_party #include their daemon's main.c to reach its static
# handlers, fuzz_admin links the aggregator's as fuzz_aggregator does).
# OpenMP pragmas are left out (one thread: reproducible) and omp_* calls go
# to gcc's libgomp, so no clang OpenMP runtime is needed.
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 30
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS  := -g -O1 -std=c11 -D_GNU_SOURCE -Wno-unknown-pragmas $(FUZZ_SAN) -idirafter $(FUZZ_DIR)/include
FUZZ_LIB     := $(FUZZ_DIR)/libvflclip.a
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(LIB_SRC)) $(patsubst $(BUILD)/gen/%.c,$(FUZZ_DIR)/obj/gen/%.o,$(PROTO_C))
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN     := $(patsubst tests/fuzz/%.c,$(FUZZ_DIR)/%,$(FUZZ_SRC))
FUZZ_EXTRA_aggregator      := $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(filter-out aggregator/main.c,$(wildcard aggregator/*.c)))
FUZZ_EXTRA_knowledge_party := $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(filter-out knowledge-party/main.c,$(wildcard knowledge-party/*.c)))
FUZZ_EXTRA_image_party     := $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(filter-out image-party/main.c,$(wildcard image-party/*.c)))
FUZZ_EXTRA_admin           := $(FUZZ_EXTRA_aggregator)
.PHONY: fuzz fuzz-build fuzz-smoke asan

# gcc's omp.h alone (clang's comes with libomp-dev, which the test set-up lacks)
$(FUZZ_DIR)/include/omp.h:
	@mkdir -p $(dir $@)
	cp "$$(gcc -print-file-name=include)/omp.h" $@

$(FUZZ_DIR)/obj/gen/%.o: $(BUILD)/gen/%.c | $(PROTO_H) $(FUZZ_DIR)/include/omp.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Icommon -Ikernels -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_DIR)/obj/%.o: %.c | $(PROTO_H) $(FUZZ_DIR)/include/omp.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Icommon -Ikernels -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $$(FUZZ_EXTRA_$$*) $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(filter %.o,$^) $(FUZZ_LIB) $(PKG_LIBS) -lgomp -lm -lpthread -o $@

fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	tests/fuzz/run.sh $(BUILD) $(FUZZ_SECONDS)

fuzz-smoke: $(FUZZ_BIN)
	tests/fuzz/run.sh $(BUILD) $(FUZZ_SMOKE_SECONDS)

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)

# Sanitizer reports end the process with a non-zero status (halt_on_error).
# The federation tests do not read a daemon's exit status, so every report of
# every process is also looked for afterwards: ASan/LSan write theirs to
# $(BUILD)/asan/reports/asan.<pid> (log_path), and UBSan (which ignores
# log_path when it runs inside ASan) writes to stderr, which for a daemon is
# its log under pytest's --basetemp $(BUILD)/asan/pytest; any report found
# fails the target.  LeakSanitizer stays on; the one suppression
# (tests/fuzz/lsan.supp) is fontconfig's process-lifetime cache behind
# cairo's plot text.
ASAN_REPORTS := $(CURDIR)/$(BUILD)/asan/reports
ASAN_PYTEST  := $(CURDIR)/$(BUILD)/asan/pytest
ASAN_ENV := ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:exitcode=86:log_path=$(ASAN_REPORTS)/asan \
            UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=87 \
            LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp:print_suppressions=0
ASAN_FOUND := grep -rlE 'runtime error:|ERROR: (Address|Leak|UndefinedBehavior)Sanitizer' $(ASAN_REPORTS) $(ASAN_PYTEST)
asan:
	$(MAKE) BUILD=$(BUILD)/asan NVCC= OPT="-O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
	  $(BUILD)/asan/vflclip $(patsubst $(BUILD)/%,$(BUILD)/asan/%,$(TEST_BIN) $(ROLE_BIN))
	rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS)
	$(ASAN_ENV) tests/run-unit.sh $(BUILD)/asan; s=$$?; \
	$(ASAN_ENV) VF_BUILD=$(BUILD)/asan $(PYTHON) -m pytest -q --basetemp=$(ASAN_PYTEST) \
	  tests/python/test_grpc_interop.py tests/python/test_grpc_negative.py $(wildcard tests/python/test_federation*.py) || s=1; \
	if $(ASAN_FOUND) >/dev/null; then \
	  echo "sanitizer reports (ASan/UBSan/LSan):"; \
	  for f in $$($(ASAN_FOUND)); do echo "== $$f"; grep -m1 -A14 -E 'runtime error:|ERROR: .*Sanitizer' $$f; done; s=1; fi; \
	exit $$s

# The same tree against mbedTLS 3.6 (Debian 13's packages, fetched and
# unpacked under /tmp, system untouched), built in $(BUILD)-mbedtls36, and the
# TLS tests on it (tests/mbedtls36-check.sh; docs/rpc.md).
.PHONY: mbedtls36-check
mbedtls36-check:
	BUILD=$(BUILD)-mbedtls36 JOBS=2 PYTHON=$(PYTHON) tests/mbedtls36-check.sh
# ... and every unit program and Python test on that build.
.PHONY: mbedtls36-check-all
mbedtls36-check-all:
	BUILD=$(BUILD)-mbedtls36 JOBS=2 PYTHON=$(PYTHON) tests/mbedtls36-check.sh --all

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
