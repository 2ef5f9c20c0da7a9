/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * Bounded inflate of compressed request bodies.  Several SDKs send
 * Content-Encoding: gzip (rudder-sdk-node by default, analytics-kotlin
 * always, analytics-python and the Amplitude browser SDK optionally) and
 * nginx only gunzips responses, so the module inflates bodies itself.
 * Pure C on top of zlib, with no nginx headers, so that the unit tests and
 * the fuzzer link it alone.
 */


#ifndef _NGX_HTTP_CIO_INFLATE_H_INCLUDED_
#define _NGX_HTTP_CIO_INFLATE_H_INCLUDED_


#include <stddef.h>


#define NGX_HTTP_CIO_INFLATE_OK        0
#define NGX_HTTP_CIO_INFLATE_INVALID  -1
#define NGX_HTTP_CIO_INFLATE_TOO_BIG  -2


/* the *err of a -1 that is the server's fault, not the client's */
extern const char  ngx_http_cio_inflate_nomem[];


/*
 * Inflates a gzip body (one member or several concatenated ones, as gzip
 * writes them), a zlib-wrapped deflate body (what Content-Encoding:
 * deflate means in practice) or, failing both headers, raw deflate.  The
 * format is recognised from the first bytes, not from Content-Encoding.
 *
 * Returns 0 and a malloc'd NUL-terminated *out of *out_len bytes (the
 * caller frees it), or
 * -1: not valid gzip/zlib/deflate data (bad header, bad checksum,
 *     truncated, data after the last member, empty input), *err set to
 *     a short static reason such as "body is not valid gzip", fit for a
 *     400 answer; or out of memory, *err set to
 *     ngx_http_cio_inflate_nomem, which the caller compares by address to
 *     answer 500 instead, so that clients retry rather than drop;
 * -2: the inflated size would exceed max; *err is set as well.
 *
 * The output buffer grows geometrically and never beyond max + 1 bytes;
 * with zlib's own state (about 40k) that is all the memory used, so a gzip
 * bomb costs no more than a body of max bytes, and inflating stops as
 * soon as max is passed.  The limit counts the output of all members.
 */
int ngx_http_cio_inflate(const unsigned char *in, size_t len, size_t max,
    unsigned char **out, size_t *out_len, const char **err);


#endif /* _NGX_HTTP_CIO_INFLATE_H_INCLUDED_ */
