#!/bin/sh
# Installs, from Debian's packages, what building and testing need, and
# only what is missing: a machine that has it all is left untouched.
set -eu

pkgs="nginx nginx-dev libcurl4-openssl-dev libcjson-dev zlib1g-dev gcc make
      dpkg-dev perl curl valgrind"

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
         | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends $missing
fi

# A module built against other headers than the running nginx's loads but
# misreads nginx's structures (nginx-anchors.md, the Debian ABI trap).
v1=$(dpkg-query -W -f='${Version}' nginx)
v2=$(dpkg-query -W -f='${Version}' nginx-dev)
if [ "$v1" != "$v2" ]; then
    echo "deps: nginx $v1 and nginx-dev $v2 differ: upgrade both" >&2
    exit 1
fi
