# ngx_http_cio_module
#
#   make test      install what is missing, build, run every test
#   make demo      build, start nginx + the Customer.io stand-in, send events
#   make build     build/ngx_http_cio_module.so against Debian's nginx-dev
#   make unit      the mapper's unit tests
#   make valgrind  the mapper's unit tests under Valgrind, then the nginx
#                  end-to-end tests with nginx itself under Valgrind
#   make test SAN=1  the same suite with ASan + UBSan in the module
#   make soak      60 s of load and faults, reloads, kills, a restart;
#                  prints accepted vs delivered vs dead-lettered
#                  (SOAK_ARGS="--duration 120 --rate 50 --seed 3")
#   make replay FILE=dead.jsonl KEYS=site:key [ENDPOINT=https://...]
#                  sends dead-lettered items again (scripts/cio-replay.pl)

SHELL := /bin/bash

CC ?= gcc
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

.PHONY: all deps build unit valgrind test integration demo soak replay \
	clean

all: build

deps:
	@scripts/deps.sh

build: deps $(BUILD)/ngx_http_cio_module.so

$(BUILD)/ngx_http_cio_module.so: $(SRCS) scripts/build.sh
	@SAN=$(filter 1,$(SAN)) scripts/build.sh

$(BUILD)/test_map: t/unit/test_map.c src/ngx_http_cio_map.c \
		src/ngx_http_cio_map.h
	@mkdir -p $(BUILD)
	$(CC) $(UNIT_CFLAGS) t/unit/test_map.c src/ngx_http_cio_map.c \
		-lcjson -lm -o $@

unit: deps $(BUILD)/test_map
	$(BUILD)/test_map

valgrind: deps $(BUILD)/test_map $(BUILD)/ngx_http_cio_module.so
	valgrind -q --leak-check=full --error-exitcode=1 build/test_map
	CIO_VALGRIND=1 prove -I t/lib t/10-ingest.t t/20-delivery.t \
		t/41-dead-letter.t t/43-crash.t t/44-spool.t

integration: build
	$(PROVE_ENV) prove -I t/lib t/

# Valgrind and the sanitizers do not run together
test: unit $(if $(filter 1,$(SAN)),,valgrind) integration

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
