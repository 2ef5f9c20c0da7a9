/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * Bounded inflate of compressed request bodies (README, "What a sender sees").
 * No nginx headers: the unit tests and the fuzzer link this file with
 * zlib alone.
 */


#include <stdlib.h>
#include <stdint.h>
#include <limits.h>

/* next_in as const, so that the body is never cast to writable */
#define ZLIB_CONST
#include <zlib.h>

#include "ngx_http_cio_inflate.h"


/* the first output buffer, unless max is smaller */
#define NGX_HTTP_CIO_INFLATE_MIN_BUF  4096


typedef struct {
    const char  *invalid;
    const char  *truncated;
    const char  *trailing;
} ngx_http_cio_inflate_errors_t;


const char  ngx_http_cio_inflate_nomem[] = "out of memory";


static const ngx_http_cio_inflate_errors_t  ngx_http_cio_inflate_gzip = {
    "body is not valid gzip",
    "gzip body is truncated",
    "gzip body has data after its end"
};


static const ngx_http_cio_inflate_errors_t  ngx_http_cio_inflate_deflate = {
    "body is not valid deflate",
    "deflate body is truncated",
    "deflate body has data after its end"
};


static int ngx_http_cio_inflate_is_zlib(const unsigned char *in, size_t len);


/*
 * The format comes from the magic bytes rather than from Content-Encoding:
 * clients mislabel, and a header that is valid for one format is never
 * valid for the other.  A lone 0x1f is taken as gzip, so that it is
 * reported as truncated gzip.
 */

static const ngx_http_cio_inflate_errors_t *
ngx_http_cio_inflate_format(const unsigned char *in, size_t len, int *gzip,
    int *wbits)
{
    if (in[0] == 0x1f && (len == 1 || in[1] == 0x8b)) {
        *gzip = 1;
        *wbits = 15 + 16;
        return &ngx_http_cio_inflate_gzip;
    }

    *gzip = 0;

    /* RFC 9110 says zlib, but some old clients sent raw deflate */
    *wbits = ngx_http_cio_inflate_is_zlib(in, len) ? 15 : -15;

    return &ngx_http_cio_inflate_deflate;
}


/* n < max + 1 unless over: give back what doubling overshot, add a NUL */

static int
ngx_http_cio_inflate_finish(unsigned char *buf, size_t n, size_t size,
    size_t max, unsigned char **out, size_t *out_len, const char **err)
{
    unsigned char  *p;

    if (n > max) {
        free(buf);
        *err = "inflated body is too large";
        return NGX_HTTP_CIO_INFLATE_TOO_BIG;
    }

    p = realloc(buf, n + 1);
    if (p != NULL) {
        buf = p;

    } else if (n == size) {
        free(buf);
        *err = ngx_http_cio_inflate_nomem;
        return NGX_HTTP_CIO_INFLATE_INVALID;
    }

    buf[n] = '\0';

    *out = buf;
    *out_len = n;

    return NGX_HTTP_CIO_INFLATE_OK;
}


/* doubles the output, up to cap: n is max + 1 there, which is too big */

static int
ngx_http_cio_inflate_grow(unsigned char **buf, size_t *size, size_t cap,
    const char **err)
{
    unsigned char  *p;

    if (*size == cap) {
        *err = "inflated body is too large";
        return NGX_HTTP_CIO_INFLATE_TOO_BIG;
    }

    *size = (*size <= cap / 2) ? *size * 2 : cap;

    p = realloc(*buf, *size);
    if (p == NULL) {
        *err = ngx_http_cio_inflate_nomem;
        return NGX_HTTP_CIO_INFLATE_INVALID;
    }

    *buf = p;

    return NGX_HTTP_CIO_INFLATE_OK;
}


int
ngx_http_cio_inflate(const unsigned char *in, size_t len, size_t max,
    unsigned char **out, size_t *out_len, const char **err)
{
    int                                   rc, gzip, wbits;
    size_t                                cap, size, n, pos, avail;
    z_stream                              zs;
    unsigned char                        *buf;
    const ngx_http_cio_inflate_errors_t  *e;

    *out = NULL;
    *out_len = 0;
    *err = NULL;

    if (len == 0) {
        *err = "compressed body is empty";
        return NGX_HTTP_CIO_INFLATE_INVALID;
    }

    e = ngx_http_cio_inflate_format(in, len, &gzip, &wbits);

    /* room for max bytes and the NUL, or for the one byte too many */
    cap = (max < SIZE_MAX) ? max + 1 : SIZE_MAX;

    /* JSON usually inflates 5 to 20 times; doubling covers the rest */
    size = (len <= cap / 8) ? len * 8 : cap;

    if (size < NGX_HTTP_CIO_INFLATE_MIN_BUF) {
        size = (cap < NGX_HTTP_CIO_INFLATE_MIN_BUF)
               ? cap : NGX_HTTP_CIO_INFLATE_MIN_BUF;
    }

    buf = malloc(size);
    if (buf == NULL) {
        *err = ngx_http_cio_inflate_nomem;
        return NGX_HTTP_CIO_INFLATE_INVALID;
    }

    zs.zalloc = Z_NULL;
    zs.zfree = Z_NULL;
    zs.opaque = Z_NULL;
    zs.next_in = Z_NULL;
    zs.avail_in = 0;

    if (inflateInit2(&zs, wbits) != Z_OK) {
        free(buf);
        *err = ngx_http_cio_inflate_nomem;
        return NGX_HTTP_CIO_INFLATE_INVALID;
    }

    n = 0;
    pos = 0;

    for ( ;; ) {

        if (n == size) {
            rc = ngx_http_cio_inflate_grow(&buf, &size, cap, err);
            if (rc != NGX_HTTP_CIO_INFLATE_OK) {
                goto failed;
            }
        }

        /* zlib counts in uInt; bodies over 4G are fed in slices */

        zs.next_in = in + pos;
        zs.avail_in = (uInt) ((len - pos > UINT_MAX) ? UINT_MAX : len - pos);

        avail = (size - n > UINT_MAX) ? UINT_MAX : size - n;
        zs.next_out = buf + n;
        zs.avail_out = (uInt) avail;

        rc = inflate(&zs, Z_NO_FLUSH);

        pos = (size_t) (zs.next_in - in);
        n += avail - zs.avail_out;

        switch (rc) {

        case Z_OK:
            continue;

        case Z_STREAM_END:

            if (pos == len) {
                goto done;
            }

            /*
             * gzip(1) writes concatenated files as concatenated members,
             * and RFC 1952 allows it; anything else after the end is
             * rejected rather than silently dropped.
             */

            if (gzip
                && in[pos] == 0x1f
                && (len - pos == 1 || in[pos + 1] == 0x8b))
            {
                if (inflateReset(&zs) != Z_OK) {
                    rc = NGX_HTTP_CIO_INFLATE_INVALID;
                    *err = e->invalid;
                    goto failed;
                }

                continue;
            }

            rc = NGX_HTTP_CIO_INFLATE_INVALID;
            *err = e->trailing;
            goto failed;

        case Z_BUF_ERROR:

            if (zs.avail_out == 0) {
                /* the output is full: grow it on the next turn */
                continue;
            }

            /* all the input is consumed and the stream has not ended */
            rc = NGX_HTTP_CIO_INFLATE_INVALID;
            *err = e->truncated;
            goto failed;

        case Z_MEM_ERROR:
            rc = NGX_HTTP_CIO_INFLATE_INVALID;
            *err = ngx_http_cio_inflate_nomem;
            goto failed;

        default:
            /* Z_DATA_ERROR (also bad CRC or length), Z_NEED_DICT */
            rc = NGX_HTTP_CIO_INFLATE_INVALID;
            *err = e->invalid;
            goto failed;
        }
    }

done:

    inflateEnd(&zs);

    return ngx_http_cio_inflate_finish(buf, n, size, max, out, out_len, err);

failed:

    inflateEnd(&zs);
    free(buf);

    return rc;
}


/*
 * An RFC 1950 header: deflate, a window of at most 32k, and check bits
 * that make one in 31 random pairs pass.  FDICT passes here and is
 * rejected by inflate() as Z_NEED_DICT.
 */

static int
ngx_http_cio_inflate_is_zlib(const unsigned char *in, size_t len)
{
    if (len < 2) {
        return 0;
    }

    return (in[0] & 0x0f) == Z_DEFLATED
           && (in[0] >> 4) <= 7
           && ((in[0] << 8) | in[1]) % 31 == 0;
}
