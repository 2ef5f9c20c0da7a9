#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# The include rule of the project (nginx's own): a file that uses nginx
# includes nginx's headers, or ngx_http_cio.h which does, before any other
# header, so that glibc is read once, with nginx's feature macros
# (_GNU_SOURCE); a system header first broke the build on nginx >= 1.23.
# The pure C parts (map, inflate, sender) include no nginx header at all:
# the unit tests, the fuzzer and the bench link them alone.
set -eu

cd "$(dirname "$0")/.."
bad=0

for f in ngx_http_cio_module.c src/*.c; do
    first=$(grep -m1 '^#include' "$f" || true)
    uses_ngx=$(grep -Ec '^#include [<"](ngx_(config|core|http|event)|ngx_http_cio)\.h' "$f" || true)

    case "$f" in
    src/ngx_http_cio_map*.c|src/ngx_http_cio_inflate.c|src/ngx_http_cio_sender.c)
        if [ "$uses_ngx" != 0 ]; then
            echo "$f: a pure C part includes an nginx header" >&2
            bad=1
        fi
        ;;
    *)
        case "$first" in
        '#include "ngx_http_cio.h"'|'#include <ngx_config.h>') ;;
        *)
            echo "$f: the first include must be ngx_http_cio.h or" \
                 "ngx_config.h, not: $first" >&2
            bad=1
            ;;
        esac
        ;;
    esac
done

[ "$bad" = 0 ] && echo "check-includes: nginx's headers first in every file"
exit "$bad"
