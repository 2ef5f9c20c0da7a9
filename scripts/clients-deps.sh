#!/bin/sh
# Installs what the client SDK tests (t/30-clients-node.t,
# t/31-clients-browser.t) need, and only what is missing:
#   - Debian's nodejs, npm, chromium and chromium-driver;
#   - the SDKs pinned in t/clients/package-lock.json, with `npm ci`, when
#     t/clients/node_modules is absent or older than the lock file.
# A machine that has it all is left untouched.  Idempotent; run as root or
# with sudo.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
clients="$top/t/clients"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null \
        | grep -q "install ok installed"
}

missing=""
# Node 20 from another source (e.g. NodeSource's nodejs) counts as present
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || installed npm || missing="$missing npm"
for p in chromium chromium-driver; do
    installed "$p" || missing="$missing $p"
done

if [ -n "$missing" ]; then
    echo "clients-deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends $missing
fi

# @segment/analytics-node 3 and playwright-core need Node >= 20.  Debian
# 12's own nodejs is 18: there the SDKs are not installed and the client
# tests skip, saying why.  (The project's machines have Node 20.)
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "clients-deps: node $(node -v) is older than 20: the client SDK" \
         "tests will be skipped" >&2
    exit 0
fi

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
