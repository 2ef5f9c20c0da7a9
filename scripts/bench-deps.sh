#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Installs, from Debian's packages, what `make bench` needs on top of the
# build and test dependencies, and only what is missing: wrk (HTTP load),
# valgrind (callgrind), linux-perf (profiling, optional at run time),
# libcurl and libcjson headers (the bench drivers), and the echo module
# for the fair edge baseline (stock nginx that reads the body into
# memory, echo_read_request_body).
set -eu

pkgs="wrk valgrind gcc make libcjson-dev libcurl4-openssl-dev perl curl
libnginx-mod-http-echo"
# perf is only for profiling by hand (bench/README.md); install it if the
# distribution has it, but a bench run does not need it
optional="linux-perf"

. "$(dirname "$0")/apt-missing.sh"
# word splitting of $pkgs is wanted: one argument per package
apt_missing bench-deps $pkgs

if ! command -v perf >/dev/null 2>&1; then
    for p in $optional; do
        if apt-cache show "$p" >/dev/null 2>&1; then
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo=sudo
            DEBIAN_FRONTEND=noninteractive \
                $sudo apt-get install -y -qq --no-install-recommends "$p" \
                || echo "bench-deps: $p not installed (optional)"
        fi
    done
fi
