#!/bin/sh
# Installs, from Debian's packages, what `make fuzz` and `make fuzz-regress`
# need, and only what is missing: clang 14 and its compiler-rt, which holds
# libFuzzer and the sanitizer runtimes, plus the zlib and cJSON headers the
# target links.  A machine that has it all is left untouched.
set -eu

pkgs="clang libclang-rt-14-dev zlib1g-dev libcjson-dev"

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
         | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "fuzz-deps: installing$missing"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends $missing
fi
