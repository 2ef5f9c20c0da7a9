#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# The build matrix (make matrix): upstream nginx from Debian's package
# archive (scripts/nginx-src.sh: trixie's, sid's when it is newer and
# served), each built with
#
#   --with-compat --with-threads --with-http_v2_module --with-http_ssl_module
#   --with-http_realip_module
#
# and warnings as errors; the module against each, dynamic (the README's
# "make build NGINX_SRC=... NGINX=..." recipe, so that it keeps working)
# and static (--add-module, compiled into the binary).  Then the
# end-to-end tests: MATRIX_TESTS against the newest version's nginx with
# its dynamic module, t/10-ingest.t against every other build.
#
# The plain nginx builds (no module in them) are kept in the cache
# directory keyed by version and flags, so a later run, from any checkout,
# only builds the module; the static builds are kept there too, one per
# checkout, and make recompiles only what changed.
#
#   NGINX_CACHE=dir    the cache (scripts/nginx-src.sh)
#   MATRIX_TESTS="..." the tests for the newest version
#   MATRIX_JOBS=n      parallel compiler jobs (default 2)
#   PROVE_JOBS=n       test files run side by side (default 2)
#
# Results go to build/matrix/VERSION/: nginx, ngx_http_cio_module.so,
# nginx-static; the table at the end to build/matrix/results.txt.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
jobs=${MATRIX_JOBS:-2}
# the journal's tests that do not read nginx's debug log (this nginx has
# none; t/73, t/75, t/79 and t/80 count its syncs and writes there)
tests=${MATRIX_TESTS:-t/02-examples.t t/10-ingest.t t/20-delivery.t
                      t/43-crash.t t/50-hostile.t t/70-journal-crash.t
                      t/71-journal-damage.t t/72-journal-full.t
                      t/78-journal-ahead.t t/81-journal-sync-error.t
                      t/82-journal-reload.t}
# and realip, which one of the examples uses, as every packaging has it
flags=(--with-compat --with-threads --with-http_v2_module
       --with-http_ssl_module --with-http_realip_module)
ccopt="-g -O2 -Werror"

log() { echo "matrix: $*" >&2; }

. "$top/scripts/apt-missing.sh"
apt_missing matrix gcc make libssl-dev libpcre2-dev zlib1g-dev \
    libcurl4-openssl-dev libcjson-dev

mapfile -t sources < <("$top/scripts/nginx-src.sh")

cache=$(dirname "$(dirname "${sources[0]#* }")")
mkdir -p "$cache/build"

key() { printf '%s\n' "$@" | md5sum | cut -c1-12; }

# configure (once per key) and make in a copy of SRC in DIR
build_nginx() {
    local src=$1 dir=$2 want=$3
    shift 3

    exec 8> "$dir.lock"
    flock 8
    [ ! -d "$dir" ] || touch "$dir"

    if [ ! -f "$dir/.configured" ] \
       || [ "$(cat "$dir/.configured")" != "$want" ]; then
        rm -rf "$dir"
        cp -r "$src" "$dir"
        (cd "$dir" && ./configure "$@") > "$dir/configure.log" 2>&1 || {
            tail -30 "$dir/configure.log" >&2
            log "configure failed, the whole log is $dir/configure.log"
            return 1
        }
        echo "$want" > "$dir/.configured"
    fi

    make -s -j"$jobs" -C "$dir" > "$dir/make.log" 2>&1 || {
        tail -40 "$dir/make.log" >&2
        log "make failed, the whole log is $dir/make.log"
        return 1
    }
    exec 8>&-
}

# builds no run has used for two weeks: older versions, flags, checkouts
find "$cache/build" -mindepth 1 -maxdepth 1 -type d -mtime +14 \
    -exec rm -rf {} +

# results of versions this run does not build
for d in "$top"/build/matrix/*/; do
    [ -d "$d" ] || continue
    v=$(basename "$d")
    printf '%s\n' "${sources[@]}" | grep -q "^$v " || rm -rf "$d"
done

cc_v=$(${CC:-cc} --version | head -1)
results=()
newest=""

for s in "${sources[@]}"; do
    v=${s%% *}
    src=${s#* }
    out=$top/build/matrix/$v
    mkdir -p "$out"

    # nginx itself, without the module: the same for every checkout
    start=$(date +%s)
    k=$(key "$v" "$(sha256sum < "$src/src/core/nginx.c")" "$cc_v" \
        "${flags[@]}" "$ccopt")
    plain=$cache/build/nginx-$v-$k
    log "nginx $v: building nginx ($plain)"
    build_nginx "$src" "$plain" "$k" "${flags[@]}" --with-cc-opt="$ccopt"
    cp "$plain/objs/nginx" "$out/.nginx.tmp"
    mv -f "$out/.nginx.tmp" "$out/nginx"
    log "nginx $v: nginx in $(( $(date +%s) - start ))s"

    # the module, dynamic, as the README tells users to build it
    start=$(date +%s)
    MAKEFLAGS="-j$jobs" NGINX_SRC=$src NGINX=$out/nginx \
        CIO_BUILD_DIR=$out/dynamic "$top/scripts/build.sh" >&2
    cp "$out/dynamic/ngx_http_cio_module.so" "$out/.so.tmp"
    mv -f "$out/.so.tmp" "$out/ngx_http_cio_module.so"
    log "nginx $v: dynamic module in $(( $(date +%s) - start ))s"

    # the module compiled in; one build tree per checkout
    start=$(date +%s)
    k=$(key "$v" "$(sha256sum < "$src/src/core/nginx.c")" "$cc_v" \
        "${flags[@]}" "$ccopt" "$top" "$(md5sum < "$top/config")")
    static=$cache/build/nginx-$v-static-$k
    log "nginx $v: building nginx with the module ($static)"
    build_nginx "$src" "$static" "$k" "${flags[@]}" \
        --with-cc-opt="$ccopt" --add-module="$top"
    cp "$static/objs/nginx" "$out/.nginx-static.tmp"
    mv -f "$out/.nginx-static.tmp" "$out/nginx-static"
    log "nginx $v: static in $(( $(date +%s) - start ))s"

    newest=$v
done

# prove's summary for one build: "ok" or the failed files
run_tests() {
    local what=$1 nginx=$2 module=$3
    shift 3

    log "$what: prove $*"
    if CIO_NGINX=$nginx CIO_MODULE=$module \
        prove -j"${PROVE_JOBS:-2}" -I "$top/t/lib" "$@" >&2
    then
        results+=("$what: $* ok")
    else
        results+=("$what: $* FAILED")
    fi
}

cd "$top"
for s in "${sources[@]}"; do
    v=${s%% *}
    out=$top/build/matrix/$v
    if [ "$v" = "$newest" ]; then
        # word splitting of $tests is wanted: one argument per file
        run_tests "nginx $v dynamic" "$out/nginx" \
            "$out/ngx_http_cio_module.so" $tests
    else
        run_tests "nginx $v dynamic" "$out/nginx" \
            "$out/ngx_http_cio_module.so" t/10-ingest.t
    fi
    run_tests "nginx $v static" "$out/nginx-static" static t/10-ingest.t
done

printf '%s\n' "${results[@]}" | tee "$top/build/matrix/results.txt"
! grep -q FAILED "$top/build/matrix/results.txt"
