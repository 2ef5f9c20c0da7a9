#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Builds ngx_http_cio_module.so for any nginx binary from the upstream
# sources of its exact version (make build NGINX_SRC=...), the way nginx
# documents it for dynamic modules: configure with the arguments that
# "nginx -V" shows, then "make modules".  Called by scripts/build.sh.
#
#   NGINX_SRC=dir   an nginx-x.y.z source tree
#   NGINX=path      the nginx binary (default: nginx in PATH, then
#                   /usr/sbin/nginx)
#   CIO_BUILD_DIR   where the build and the .so go (default build/)
#
# A distribution's nginx that carries its own patches needs the
# distribution's sources (Debian and Ubuntu: the nginx-dev package, which
# plain "make build" uses), not nginx.org's.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=${CIO_BUILD_DIR:-$top/build}
stamp="$out/.configured"

die() { echo "build: $*" >&2; exit 1; }

[ -z "${SAN:-}" ] || die "SAN=1 builds against Debian's nginx-dev only"

src=$(cd "$NGINX_SRC" 2>/dev/null && pwd) \
    || die "NGINX_SRC=$NGINX_SRC: no such directory"
[ -f "$src/src/core/nginx.h" ] && [ -f "$src/configure" ] \
    || die "NGINX_SRC=$src is not an nginx source tree (nginx-x.y.z/)"

bin=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$bin" ] || die "no nginx binary at $bin: set NGINX=/path/to/nginx"

src_v=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' \
        "$src/src/core/nginx.h")
bin_v=$("$bin" -v 2>&1 | sed -n 's#^nginx version: [^/]*/\([0-9.]*\).*#\1#p')

# nginx refuses a module built for another version at load_module
[ "$src_v" = "$bin_v" ] \
    || die "$bin is nginx $bin_v but NGINX_SRC is nginx $src_v:" \
           "get nginx-$bin_v.tar.gz from nginx.org"

line=$("$bin" -V 2>&1 | sed -n 's/^configure arguments: //p')

# nginx -V quotes arguments with spaces in single quotes, as a shell
# would take them; xargs splits them so without running anything
args=()
dropped=()
compat=no
while IFS= read -r a; do
    case $a in
    '')
        ;;
    # other modules, and libraries built from their own sources, are not
    # there to build against; --with-compat leaves them out of the ABI
    --add-module=* | --add-dynamic-module=* | --with-*=dynamic \
    | --with-openssl=* | --with-openssl-opt=* | --with-pcre=* \
    | --with-pcre-opt=* | --with-zlib=* | --with-zlib-opt=* \
    | --with-libatomic=*)
        dropped+=("$a")
        ;;
    --with-compat)
        compat=yes
        args+=("$a")
        ;;
    *)
        args+=("$a")
        ;;
    esac
done < <(printf '%s' "$line" | xargs -r -n1 printf '%s\n')

if [ $compat = no ]; then
    # without it, a module loads only into a binary configured exactly
    # like the one it was built with; adding it here would not load at all
    echo "build: $bin was built without --with-compat: the module will" \
         "load only into nginx binaries built with exactly its arguments" >&2
fi

want="any $src $src_v $bin ${args[*]} $(md5sum < "$top/config")"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$out/nginx" "$out/objs" "$stamp"
    mkdir -p "$out"
    cp -r "$src" "$out/nginx"
    for a in ${dropped[@]+"${dropped[@]}"}; do
        echo "build: left out $a" >&2
    done
    (cd "$out/nginx" && ./configure ${args[@]+"${args[@]}"} \
        --add-dynamic-module="$top" --builddir="$out/objs") \
        > "$out/configure.log" 2>&1 || {
            tail -30 "$out/configure.log" >&2
            echo "build: configure failed, the whole log is" \
                 "$out/configure.log" >&2
            exit 1
        }
    echo "$want" > "$stamp"
fi

make -s -f "$out/objs/Makefile" -C "$out/nginx" modules
"$top/scripts/install-so.sh" "$out"
echo "for nginx $bin_v ($bin)"
