#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Fetches upstream nginx sources from Debian's package archive, the only
# place CI reaches: the "orig" tarball of Debian's nginx source package is
# nginx.org's release tarball.  Trixie's always; each further suite's
# (NGINX_SUITES, default "trixie sid") only when it carries a newer
# upstream version and the archive serves its tarball.
#
# apt runs with a private configuration (its own sources.list, lists and
# cache under the cache directory), so the machine's own apt sources and
# lists are left untouched.  The Debian part of a source package may be
# missing from the archive: only the .orig.tar.gz is needed, and apt has
# checked it against the signed Sources index when it lands.
#
#   NGINX_CACHE=dir   where tarballs, sources and builds are kept between
#                     runs (default /var/cache/ngx-cio-src, or
#                     ~/.cache/ngx-cio-src when that is not writable)
#
# Prints one line per source tree, oldest first: VERSION DIRECTORY.
set -euo pipefail

suites=${NGINX_SUITES:-trixie sid}
mirror=${NGINX_MIRROR:-http://deb.debian.org/debian}

cache=${NGINX_CACHE:-/var/cache/ngx-cio-src}
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/ngx-cio-src
    mkdir -p "$cache"
fi

log() { echo "nginx-src: $*" >&2; }

# one run at a time per cache: other checkouts may share it
exec 9> "$cache/.lock"
flock 9

apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" \
         "$cache/dist" "$cache/src"

: > "$apt_dir/sources.list.new"
for s in $suites; do
    echo "deb-src $mirror $s main" >> "$apt_dir/sources.list.new"
done
mv -f "$apt_dir/sources.list.new" "$apt_dir/sources.list"

apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list"
          -o "Dir::Etc::sourceparts=-"
          -o "Dir::State::Lists=$apt_dir/lists"
          -o "Dir::Cache=$apt_dir/cache"
          -o "APT::Get::List-Cleanup=0"
          -q)

if ! apt-get "${apt_opts[@]}" update > "$apt_dir/update.log" 2>&1; then
    # offline: what earlier runs brought still builds
    log "apt-get update failed (see $apt_dir/update.log);" \
        "using the lists and tarballs from earlier runs"
fi

# the upstream tarball of one suite's nginx: "URL FILE SIZE SHA256:HASH"
orig_of() {
    apt-get "${apt_opts[@]}" source --print-uris "nginx/$1" 2>/dev/null \
        | tr -d "'" | awk '$2 ~ /^nginx_[0-9.]+\.orig\.tar\.gz$/'
}

# the tarball in dist/, checked; apt-get source fetches it (and fails on
# the Debian part when that is missing, which does not matter)
fetch() {
    local suite=$1 file=$2 sum=$3 dl=$apt_dir/download

    if [ -f "$cache/dist/$file" ] \
       && echo "$sum  $cache/dist/$file" | sha256sum -c --status; then
        return 0
    fi

    rm -rf "$dl"
    mkdir -p "$dl"
    # apt downloads as _apt, which must be able to write here
    if [ "$(id -u)" -eq 0 ] && id _apt > /dev/null 2>&1; then
        chown _apt "$dl"
    fi
    (cd "$dl" && apt-get "${apt_opts[@]}" source --download-only \
        "nginx/$suite") > "$dl.log" 2>&1 || true

    if [ -f "$dl/$file" ] && echo "$sum  $dl/$file" | sha256sum -c --status
    then
        mv -f "$dl/$file" "$cache/dist/$file"
        rm -rf "$dl"
        return 0
    fi

    grep '^E:' "$dl.log" | grep -F "$file" | sed 's/^/    /' >&2 || true
    return 1
}

# the source tree, extracted once; a tarball is an upstream release, its
# top directory is nginx-VERSION
extract() {
    local version=$1 file=$2 tmp

    [ -f "$cache/src/nginx-$version/src/core/nginx.h" ] && return 0

    tmp=$(mktemp -d "$cache/src/.extract-XXXXXX")
    tar -C "$tmp" -xzf "$cache/dist/$file"
    if [ ! -f "$tmp/nginx-$version/src/core/nginx.h" ]; then
        log "$file holds no nginx-$version/ source tree"
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$cache/src/nginx-$version"
    mv "$tmp/nginx-$version" "$cache/src/nginx-$version"
    rm -rf "$tmp"
}

newest=""
out=()

for suite in $suites; do
    line=$(orig_of "$suite" | head -1)

    if [ -z "$line" ]; then
        log "$suite: no nginx source package in the lists"
        continue
    fi

    read -r _url file _size sum <<< "$line"
    sum=${sum#SHA256:}
    version=${file#nginx_}
    version=${version%.orig.tar.gz}

    if [ -n "$newest" ] \
       && ! dpkg --compare-versions "$version" gt "$newest"; then
        log "$suite: nginx $version, no newer than $newest: skipped"
        continue
    fi

    if ! fetch "$suite" "$file" "$sum"; then
        log "$suite: the archive does not serve $file: skipped"
        continue
    fi

    extract "$version" "$file"
    log "$suite: nginx $version in $cache/src/nginx-$version"
    newest=$version
    out+=("$version $cache/src/nginx-$version")
done

# offline and never fetched before: whatever tarballs are in the cache
if [ ${#out[@]} -eq 0 ]; then
    for f in "$cache"/dist/nginx_*.orig.tar.gz; do
        [ -f "$f" ] || continue
        file=${f##*/}
        version=${file#nginx_}
        version=${version%.orig.tar.gz}
        extract "$version" "$file"
        out+=("$version $cache/src/nginx-$version")
    done
fi

if [ ${#out[@]} -eq 0 ]; then
    log "no upstream nginx source: the archive is unreachable and the" \
        "cache $cache is empty"
    exit 1
fi

printf '%s\n' "${out[@]}"
