#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Builds the Debian binary package libnginx-mod-http-cio the way Debian
# builds its own third-party nginx modules: debian/ with dh, the "nginx"
# sequence and its nginx_mod build system (from nginx-dev), dh_nginx for
# the load snippet and the nginx ABI dependency.
#
# The tree (minus build output, .git and node_modules) is copied to
# build/deb/src and built there with "dpkg-buildpackage -us -uc -b", so the
# .deb lands in build/deb/.  The log is build/deb/build.log.  Prints the
# path of the .deb.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/build/deb"
src="$out/src"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

# Build dependencies, from Debian's packages, only those that are missing.
# nginx-dev provides dh-sequence-nginx (the sequence, dh_nginx and the
# nginx_mod build system); dh_auto_test runs /usr/sbin/nginx, from nginx.
pkgs="debhelper dpkg-dev nginx nginx-dev libcurl4-openssl-dev libcjson-dev
      zlib1g-dev gcc make"
. "$(dirname "$0")/apt-missing.sh"
# word splitting of $pkgs is wanted: one argument per package
apt_missing deb $pkgs

# The package depends on the ABI nginx-dev declares: built against an
# nginx-dev that is not the installed nginx's, it could not be installed
# here (or worse, would be, on a patch that changed the ABI silently).
v1=$(dpkg-query -W -f='${Version}' nginx)
v2=$(dpkg-query -W -f='${Version}' nginx-dev)
if [ "$v1" != "$v2" ]; then
    echo "deb: nginx $v1 and nginx-dev $v2 differ: upgrade both" >&2
    exit 1
fi

mkdir -p "$out"
rm -rf "$src"
rm -f "$out"/libnginx-mod-http-cio*.deb \
      "$out"/libnginx-mod-http-cio_*.buildinfo \
      "$out"/libnginx-mod-http-cio_*.changes
mkdir -p "$src"

tar -C "$top" -cf - \
    --exclude=./build --exclude='./build-*' --exclude=./.git \
    --exclude=node_modules --exclude='./obj-*' . \
    | tar -C "$src" -xf -

log="$out/build.log"
start=$(date +%s)
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) > "$log" 2>&1; then
    tail -40 "$log" >&2
    echo "deb: dpkg-buildpackage failed, the whole log is $log" >&2
    exit 1
fi

deb=$(ls "$out"/libnginx-mod-http-cio_*.deb)
echo "deb: built in $(( $(date +%s) - start ))s, log in $log" >&2
echo "$deb"
