#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Installs what the client SDK tests (t/30-clients-node.t,
# t/31-clients-browser.t) need, and only what is missing:
#   - Debian's nodejs, npm, chromium and chromium-driver;
#   - Node 20 when the system's node is older (Debian 12's nodejs is 18):
#     the npm registry's own build, package node-linux-<arch>, into
#     t/clients/.node, which the tests run first (Cio::Test::node_bin);
#   - the SDKs pinned in t/clients/package-lock.json, with `npm ci`, when
#     t/clients/node_modules is absent or older than the lock file.
# A machine that has it all is left untouched.  Idempotent; run as root or
# with sudo.  Under CI (CI=true) anything that cannot be installed is an
# error: the client tests must run there, not skip.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
clients="$top/t/clients"
need=20

. "$top/scripts/apt-missing.sh"

ci=0
case "${CI:-}" in 1|true|TRUE|True|yes) ci=1 ;; esac

# not under CI a missing prerequisite is a warning: the tests skip
give_up() {
    echo "clients-deps: $*" >&2
    [ "$ci" -eq 0 ] || exit 1
    echo "clients-deps: the client SDK tests will be skipped" >&2
    exit 0
}

pkgs="chromium chromium-driver"
# Node from another source (e.g. NodeSource's nodejs) counts as present
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
# word splitting of $pkgs is wanted: one argument per package
apt_missing clients-deps $pkgs

major() {
    "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

# @segment/analytics-node 3 and playwright-core need Node >= 20
node="$clients/.node/bin/node"
[ -x "$node" ] || node=$(command -v node)
if [ "$(major "$node")" -lt "$need" ]; then
    case $(uname -m) in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) give_up "no Node $need build on the npm registry for $(uname -m)" ;;
    esac
    echo "clients-deps: node $("$node" -v) is older than $need:" \
         "node-linux-$arch@$need from the npm registry into t/clients/.node"
    mkdir -p "$clients/.node/bin"
    npm install --prefix "$clients/.node" --no-audit --no-fund \
        --no-save --loglevel=error "node-linux-$arch@$need" \
        || give_up "npm could not install node-linux-$arch@$need"
    ln -sf "../node_modules/node-linux-$arch/bin/node" \
        "$clients/.node/bin/node"
    node="$clients/.node/bin/node"
    [ "$(major "$node")" -ge "$need" ] \
        || give_up "$node is not Node $need"
fi

# npm itself is a node script: run it with that node
PATH="$(dirname "$node"):$PATH"
export PATH

# npm ci when node_modules is missing, or older than the lock file (npm
# writes node_modules/.package-lock.json on every install)
stamp="$clients/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$clients/package-lock.json" -nt "$stamp" ] \
   || [ "$clients/package.json" -nt "$stamp" ]; then
    echo "clients-deps: npm ci in t/clients"
    # playwright-core downloads no browser: Debian's chromium is used
    (cd "$clients" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
        npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
fi
