# SPDX-License-Identifier: BSD-2-Clause
# Sourced by the scripts that install dependencies:
#
#   apt_missing TAG PACKAGE...
#
# installs, from Debian's packages, those of the PACKAGEs that are not
# installed yet, so that a machine that has them all is left untouched.
# TAG names the caller in the one line it prints.

apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null \
        | grep -q "install ok installed"
}

apt_missing() {
    tag=$1
    shift

    missing=""
    for p in "$@"; do
        apt_installed "$p" || missing="$missing $p"
    done

    [ -n "$missing" ] || return 0

    echo "$tag: installing$missing"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # word splitting of $missing is wanted: one argument per package
    $sudo apt-get install -y -qq --no-install-recommends $missing
}
