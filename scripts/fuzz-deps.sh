#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Installs, from Debian's packages, what `make fuzz` and `make fuzz-regress`
# need, and only what is missing: clang 14 and its compiler-rt, which holds
# libFuzzer and the sanitizer runtimes, plus the zlib and cJSON headers the
# target links.  A machine that has it all is left untouched.
set -eu

pkgs="clang libclang-rt-14-dev zlib1g-dev libcjson-dev"

. "$(dirname "$0")/apt-missing.sh"
# word splitting of $pkgs is wanted: one argument per package
apt_missing fuzz-deps $pkgs
