#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Builds build/ngx_http_cio_module.so against Debian's nginx-dev, the way
# dh_nginx does: its conf_flags, --with-compat, out of tree.  The nginx
# sources are copied so that nothing is written under /usr/share.
#
#   SAN=1  builds with AddressSanitizer and UndefinedBehaviorSanitizer
#
# Any other nginx: the sources of its exact version, configured with the
# arguments its "nginx -V" shows, plus --with-compat:
#
#   NGINX_SRC=dir   an nginx-x.y.z source tree (nginx.org's tarball)
#   NGINX=path      the nginx binary the module is for (default: nginx
#                   in PATH, then /usr/sbin/nginx)
#   CIO_BUILD_DIR   where the build and the .so go (default build/)
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
src=/usr/share/nginx/src
out=${CIO_BUILD_DIR:-$top/build${SAN:+-san}}
stamp="$out/.configured"

if [ -n "${NGINX_SRC:-}" ]; then
    exec "$top/scripts/build-any.sh"
fi

cflags="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)"
ldflags="$(dpkg-buildflags --get LDFLAGS) -fPIC"

if [ "${SAN:-}" = 1 ]; then
    cflags="-g -O1 -fPIC -fno-omit-frame-pointer -fsanitize=address,undefined"
    ldflags="-fPIC -fsanitize=address,undefined"
fi

want="$(dpkg-query -W -f='${Version}' nginx-dev) $cflags $ldflags $(cat "$top/config" | md5sum)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$out/nginx" "$out/objs"
    mkdir -p "$out"
    cp -r "$src" "$out/nginx"
    . "$out/nginx/conf_flags"
    (cd "$out/nginx" && ./configure \
        --with-cc-opt="$cflags" --with-ld-opt="$ldflags" \
        "${NGX_CONF_FLAGS[@]}" \
        --add-dynamic-module="$top" --builddir="$out/objs") \
        > "$out/configure.log" 2>&1 || {
            tail -30 "$out/configure.log" >&2
            exit 1
        }
    echo "$want" > "$stamp"
fi

make -s -f "$out/objs/Makefile" -C "$out/nginx" modules
"$top/scripts/install-so.sh" "$out"
