#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Installs, from Debian's packages, what building and testing need, and
# only what is missing: a machine that has it all is left untouched.
set -eu

pkgs="nginx nginx-dev libcurl4-openssl-dev libcjson-dev zlib1g-dev
      libdeflate-dev gcc make
      dpkg-dev perl curl valgrind gdb"

. "$(dirname "$0")/apt-missing.sh"
# word splitting of $pkgs is wanted: one argument per package
apt_missing deps $pkgs

# A module built against other headers than the running nginx's loads but
# misreads nginx's structures (README, "Installing the Debian package").
v1=$(dpkg-query -W -f='${Version}' nginx)
v2=$(dpkg-query -W -f='${Version}' nginx-dev)
if [ "$v1" != "$v2" ]; then
    echo "deps: nginx $v1 and nginx-dev $v2 differ: upgrade both" >&2
    exit 1
fi
