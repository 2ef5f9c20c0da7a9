# SPDX-License-Identifier: BSD-2-Clause
# ngx_http_cio_module
#
#   make test      install what is missing, build, run every test
#   make demo      build, start nginx + the Customer.io stand-in, send events
#   make build     $(BUILD)/ngx_http_cio_module.so against Debian's nginx-dev
#   make build NGINX_SRC=/path/to/nginx-x.y.z [NGINX=/path/to/nginx]
#                  the same for any nginx, from the upstream sources of its
#                  version, configured as its "nginx -V" shows
#   make matrix    upstream nginx from Debian's archive (trixie's, sid's
#                  when newer), the module dynamic and static against each,
#                  the end-to-end tests against them (part of make test)
#   make deps      install the build and test dependencies that are missing
#   make check-includes  nginx's headers first in every file that uses
#                  nginx (part of make test)
#   make unit      the mapper's unit tests
#   make unit-inflate  the body inflater's unit tests (and under Valgrind)
#   make fuzz      libFuzzer on the body path for FUZZ_TIME seconds
#   make fuzz-regress  the fuzz target over t/fuzz/corpus once
#   make fuzz-deps clang and libFuzzer when missing
#   make valgrind  the mapper's unit tests under Valgrind, then the nginx
#                  end-to-end tests with nginx itself under Valgrind
#   make integration  the end-to-end tests (t/*.t)
#   make san       the end-to-end tests with ASan + UBSan in the module
#                  (part of make test)
#   make test SAN=1  the whole suite with ASan + UBSan in the module
#                  (everything goes to build-san/ instead of build/)
#   make soak      60 s of load and faults, reloads, kills, a restart;
#                  prints accepted vs delivered vs dead-lettered
#                  (SOAK_ARGS="--duration 120 --rate 50 --seed 3")
#   make replay FILE=dead.jsonl KEYS=site:key [ENDPOINT=https://...]
#                  sends dead-lettered items again (scripts/cio-replay.pl)
#   make deb       the Debian package, build/deb/libnginx-mod-http-cio_*.deb
#   make clients-deps  Node, npm and Chromium for the client SDK tests
#   make bench     the performance suite (bench/README.md), not in make test
#   make mutate    small deliberate bugs, one at a time, each rebuilt and
#                  tested in build/mutate/: a table of what caught each;
#                  not in make test (some minutes), but make test runs
#                  make mutate-check: every mutation still applies
#   make bench-deps  what the benchmarks need
#   make clean     remove build/ and build-san/
#
# Each of the later sections says more about its targets.

SHELL := /bin/bash

CC ?= gcc
# test files prove runs side by side (PROVE_JOBS=1: one at a time)
PROVE_JOBS ?= 2
UNIT_CFLAGS = -std=gnu99 -g -O1 -W -Wall -Wpointer-arith \
              -Wno-unused-parameter -Werror -Isrc
SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer

ifeq ($(SAN),1)
BUILD := build-san
UNIT_CFLAGS += $(SAN_FLAGS)
PROVE_ENV = CIO_MODULE=$(CURDIR)/$(BUILD)/ngx_http_cio_module.so \
            CIO_PRELOAD="$$($(CC) -print-file-name=libasan.so)" \
            ASAN_OPTIONS=detect_leaks=0:abort_on_error=0
else
BUILD := build
PROVE_ENV =
endif

SRCS := config ngx_http_cio_module.c $(wildcard src/*.c src/*.h)

.PHONY: all deps build unit valgrind test integration san demo soak \
	replay clean matrix check-includes mutate mutate-check FORCE

# nginx's headers before any system header, in every file that uses nginx
check-includes:
	@scripts/check-includes.sh

all: build

deps:
	@scripts/deps.sh

# Debian's nginx-dev, or NGINX_SRC: nothing to install from Debian then
build: $(if $(NGINX_SRC),,deps) $(BUILD)/ngx_http_cio_module.so

# always asks scripts/build.sh, which rebuilds only what changed: the same
# file is built for Debian's nginx or for NGINX_SRC's
$(BUILD)/ngx_http_cio_module.so: FORCE
	@SAN=$(filter 1,$(SAN)) NGINX_SRC=$(NGINX_SRC) NGINX=$(NGINX) \
		scripts/build.sh

FORCE:

MAP_SRCS = src/ngx_http_cio_map.c src/ngx_http_cio_map_fast.c
MAP_DEPS = $(MAP_SRCS) src/ngx_http_cio_map.h src/ngx_http_cio_map_fast.h

$(BUILD)/test_map: t/unit/test_map.c t/fuzz/map_diff.h $(MAP_DEPS)
	@mkdir -p $(BUILD)
	$(CC) $(UNIT_CFLAGS) t/unit/test_map.c $(MAP_SRCS) \
		-lcjson -lm -o $@

unit: deps $(BUILD)/test_map
	$(BUILD)/test_map

valgrind: deps $(BUILD)/test_map $(BUILD)/ngx_http_cio_module.so
	valgrind -q --leak-check=full --error-exitcode=1 $(BUILD)/test_map
	CIO_VALGRIND=1 prove -j$(PROVE_JOBS) -I t/lib t/10-ingest.t t/15-ingest-edge.t \
		t/20-delivery.t t/41-dead-letter.t t/43-crash.t t/44-spool.t \
		t/16-status.t t/50-hostile.t t/73-journal-sync.t \
		t/79-journal-pass.t t/80-journal-shutdown.t \
		t/81-journal-sync-error.t t/82-journal-reload.t

# Two test files at a time (each waits on nginx, the stand-in and its
# own deadlines more than it computes; free ports come from a locked
# range, t/lib/Cio/Test.pm); t/60 alone after them, as it installs a
# package into the system's nginx and builds it first.
integration: build
	$(PROVE_ENV) prove -j$(PROVE_JOBS) -I t/lib \
		$(filter-out t/60-deb.t,$(wildcard t/*.t))
	$(PROVE_ENV) prove -I t/lib t/60-deb.t

# The module's own end-to-end tests once more with ASan + UBSan in the
# module; the real-client and packaging tests exercise no other module
# code, only take long.
SAN_TESTS = $(filter-out t/3% t/6%,$(wildcard t/*.t))

san: deps
	@$(MAKE) --no-print-directory SAN=1 build-san/ngx_http_cio_module.so
	CIO_MODULE=$(CURDIR)/build-san/ngx_http_cio_module.so \
	CIO_PRELOAD="$$($(CC) -print-file-name=libasan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
	prove -j$(PROVE_JOBS) -I t/lib $(SAN_TESTS)

# Valgrind and the sanitizers do not run together
test: check-includes mutate-check tools unit unit-inflate fuzz-regress \
      $(if $(filter 1,$(SAN)),,valgrind) \
      integration $(if $(filter 1,$(SAN)),,san matrix)

# scripts/mutate.pl: every mutation into a copy of the tree, rebuilt, its
# tests run (MUTATE_ARGS="--only 429 -j 1"); mutate-check only finds each
# snippet, so that a mutation the code moved away from fails make test
mutate: deps
	@perl scripts/mutate.pl $(MUTATE_ARGS)

mutate-check:
	@perl scripts/mutate.pl --check

# scripts/matrix.sh; the sources and the nginx builds are cached in
# NGINX_CACHE (default /var/cache/ngx-cio-src)
matrix:
	@NGINX_CACHE=$(NGINX_CACHE) PROVE_JOBS=$(PROVE_JOBS) scripts/matrix.sh

demo: build
	@scripts/demo.sh

# not part of test: a minute of load, bounded, on loopback
soak: build
	perl -I t/lib scripts/soak.pl $(SOAK_ARGS)

replay:
	@test -n "$(FILE)" -a -n "$(KEYS)" || { echo "usage: make replay" \
		"FILE=dead.jsonl KEYS=site:key[,site2:key2] [ENDPOINT=url]"; \
		exit 2; }
	CIO_REPLAY_KEYS="$(KEYS)" perl scripts/cio-replay.pl \
		$(if $(ENDPOINT),--endpoint $(ENDPOINT)) $(FILE)

clean:
	rm -rf build build-san

# --- inflate unit tests and fuzzing (begin)
#
#   make unit-inflate   the body inflater's unit tests, then under Valgrind
#                       (SAN=1: with ASan + UBSan instead)
#   make fuzz           libFuzzer on the whole in-process body path
#                       (inflate, map, check the items) for FUZZ_TIME
#                       seconds, default 60, on build/fuzz-corpus, a copy
#                       of t/fuzz/corpus that keeps what earlier runs found
#   make fuzz-diff      libFuzzer on t/fuzz/fuzz_diff.c: the mapper's fast
#                       path against the cJSON tree, results compared byte
#                       for byte, FUZZ_TIME seconds on FUZZ_JOBS workers
#   make fuzz-regress   both fuzz targets over each file of t/fuzz/corpus
#                       once, no fuzzing
#
# The fuzz target is always built in build/ with clang (libFuzzer comes
# with clang's compiler-rt), ASan and UBSan; scripts/fuzz-deps.sh installs
# them when missing.  Items that are not valid UTF-8 are a failure
# (FUZZ_STRICT_UTF8=0 in the environment allows them).

FUZZ_TIME ?= 60
FUZZ_CC ?= clang
FUZZ_CFLAGS = -g -O1 -W -Wall -Wno-unused-parameter -Isrc \
              -fno-omit-frame-pointer -fno-sanitize-recover=all \
              -fsanitize=fuzzer,address,undefined
FUZZ_SRCS = t/fuzz/fuzz_body.c $(MAP_SRCS) src/ngx_http_cio_inflate.c
FUZZ_OPTS = -max_len=65536 -timeout=10 -print_final_stats=1

.PHONY: unit-inflate fuzz fuzz-regress fuzz-deps fuzz-diff

# --wrap: the tests count and fail the inflater's allocations
$(BUILD)/test_inflate: t/unit/test_inflate.c src/ngx_http_cio_inflate.c \
		src/ngx_http_cio_inflate.h
	@mkdir -p $(BUILD)
	$(CC) $(UNIT_CFLAGS) t/unit/test_inflate.c src/ngx_http_cio_inflate.c \
		-Wl,--wrap=malloc,--wrap=realloc -lz -o $@

unit-inflate: deps $(BUILD)/test_inflate
	$(BUILD)/test_inflate
ifneq ($(SAN),1)
	valgrind -q --leak-check=full --error-exitcode=1 $(BUILD)/test_inflate
endif

fuzz-deps:
	@scripts/fuzz-deps.sh

# order-only: the check runs every time but does not force a rebuild
build/fuzz_body: $(FUZZ_SRCS) $(MAP_DEPS) src/ngx_http_cio_inflate.h \
		| fuzz-deps
	@mkdir -p build
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SRCS) -lcjson -lz -lm -o $@

fuzz: build/fuzz_body
	@mkdir -p build/fuzz-corpus build/fuzz-artifacts
	cp t/fuzz/corpus/* build/fuzz-corpus/
	build/fuzz_body $(FUZZ_OPTS) -max_total_time=$(FUZZ_TIME) \
		-artifact_prefix=build/fuzz-artifacts/ build/fuzz-corpus

fuzz-regress: build/fuzz_body build/fuzz_diff
	build/fuzz_body $(FUZZ_OPTS) -runs=0 t/fuzz/corpus/*
	build/fuzz_diff $(FUZZ_OPTS) -runs=0 t/fuzz/corpus/*

# the fast path against the tree mapper (t/fuzz/fuzz_diff.c), on its own
# corpus copy build/fuzz-diff-corpus; FUZZ_JOBS workers, default 1
FUZZ_JOBS ?= 1

build/fuzz_diff: t/fuzz/fuzz_diff.c t/fuzz/map_diff.h $(MAP_DEPS) \
		| fuzz-deps
	@mkdir -p build
	$(FUZZ_CC) $(FUZZ_CFLAGS) t/fuzz/fuzz_diff.c $(MAP_SRCS) \
		-lcjson -lm -o $@

fuzz-diff: build/fuzz_diff
	@mkdir -p build/fuzz-diff-corpus build/fuzz-artifacts
	cp t/fuzz/corpus/* build/fuzz-diff-corpus/
	build/fuzz_diff $(FUZZ_OPTS) -max_total_time=$(FUZZ_TIME) \
		-jobs=$(FUZZ_JOBS) -workers=$(FUZZ_JOBS) \
		-dict=t/fuzz/fuzz_diff.dict \
		-artifact_prefix=build/fuzz-artifacts/ build/fuzz-diff-corpus

# --- (end)

# --- Debian package (begin)
#
#   make deb   build/deb/libnginx-mod-http-cio_*.deb, built from debian/
#              with dh and Debian's nginx sequence (nginx_mod build system,
#              dh_nginx): the module, its load snippet in
#              /usr/share/nginx/modules-available enabled in
#              /etc/nginx/modules-enabled, Depends on the nginx ABI that
#              nginx-dev declares.  t/60-deb.t (root only) installs it into
#              the system nginx, checks it, and purges it.

.PHONY: deb

deb: deps
	@scripts/deb.sh

# --- (end)

# --- client SDK tests (begin)
#
#   make clients-deps  Node, npm and Chromium when missing; npm ci in
#                      t/clients (t/30-clients-node.t, t/31-clients-browser.t)

.PHONY: clients-deps

clients-deps:
	@scripts/clients-deps.sh

integration: clients-deps

# --- (end)

# --- benchmarks (begin)
#
#   make bench   the performance suite (bench/README.md), not part of
#                make test: edge accept rate against stock nginx (wrk),
#                latency at a fixed rate (bench/openloop.c), delivery of a
#                1,000,000-event backlog under Customer.io's request rate
#                limit, mapper instructions per event (callgrind), zone
#                bytes per event and worker RSS.  Prints a table with
#                PASS/MISS per target and writes it to bench/results.md.
#                3 to 9 minutes; BENCH_EVENTS, BENCH_SECONDS, BENCH_ROUNDS,
#                BENCH_RATE, BENCH_ONLY tune it.

BENCH_CFLAGS = -std=gnu99 -g -O2 -fstack-protector-strong -W -Wall \
               -Wno-unused-parameter -Werror -Isrc

.PHONY: bench bench-deps tools

bench-deps:
	@scripts/bench-deps.sh

# the mapper with the module's own optimization level (dpkg-buildflags)
build/bench/map_cost: bench/map_cost.c $(MAP_DEPS)
	@mkdir -p build/bench
	$(CC) $(BENCH_CFLAGS) bench/map_cost.c $(MAP_SRCS) \
		-lcjson -lm -o $@

# the same with malloc replaced by a per-call arena: a what-if, not a fix
build/bench/map_cost_arena: bench/map_cost.c $(MAP_DEPS)
	@mkdir -p build/bench
	$(CC) $(BENCH_CFLAGS) -DBENCH_ARENA bench/map_cost.c \
		$(MAP_SRCS) -lcjson -lm -o $@

build/bench/cio-standin-fast: bench/cio-standin-fast.c
	@mkdir -p build/bench
	$(CC) $(BENCH_CFLAGS) bench/cio-standin-fast.c -lcjson -o $@

build/bench/openloop: bench/openloop.c
	@mkdir -p build/bench
	$(CC) $(BENCH_CFLAGS) bench/openloop.c -o $@

BENCH_TOOLS = build/bench/map_cost build/bench/map_cost_arena \
              build/bench/cio-standin-fast build/bench/openloop

bench: build bench-deps $(BENCH_TOOLS)
	perl bench/bench.pl

# what the repository ships but make test does not run: compiled and
# syntax-checked here so that none of it rots unseen
# the fuzz targets' own main() (-DFUZZ_STANDALONE), for gcc and Valgrind
build/fuzz_body_standalone: $(FUZZ_SRCS) t/fuzz/fuzz_main.h $(MAP_DEPS)
	@mkdir -p build
	$(CC) $(BENCH_CFLAGS) -DFUZZ_STANDALONE $(FUZZ_SRCS) \
		-lcjson -lz -lm -o $@

build/fuzz_diff_standalone: t/fuzz/fuzz_diff.c t/fuzz/map_diff.h \
		t/fuzz/fuzz_main.h $(MAP_DEPS)
	@mkdir -p build
	$(CC) $(BENCH_CFLAGS) -DFUZZ_STANDALONE t/fuzz/fuzz_diff.c \
		$(MAP_SRCS) -lcjson -lm -o $@

tools: $(BENCH_TOOLS) build/fuzz_body_standalone build/fuzz_diff_standalone
	@for f in bench/*.pl scripts/*.pl t/*.t; do \
		perl -I t/lib -c $$f 2>&1 | grep -v 'syntax OK$$' && exit 1; \
	done; echo "tools: bench and fuzz targets build, scripts compile"

# --- (end)
