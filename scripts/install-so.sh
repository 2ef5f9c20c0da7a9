#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Puts OUT/objs/ngx_http_cio_module.so at OUT/ngx_http_cio_module.so when
# it changed.  A rename, not a copy over the old file: an nginx running
# from it would crash if its mapped pages changed under it.
set -eu

out=$1
so=ngx_http_cio_module.so

if ! cmp -s "$out/objs/$so" "$out/$so"; then
    cp "$out/objs/$so" "$out/.$so.tmp"
    mv -f "$out/.$so.tmp" "$out/$so"
fi
echo "built $out/$so"
