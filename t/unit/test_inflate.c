/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * Unit tests of the bounded body inflater, linked alone with zlib.  The
 * compressed inputs are made here with zlib's own deflate, so that each
 * case states exactly what it feeds in.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=realloc: the wrappers record the
 * largest block the inflater asks for (a bomb must not cost more than max
 * bytes) and can fail the n-th allocation (out-of-memory paths must not
 * leak, which Valgrind and ASan check).  zlib's own state is allocated
 * inside libz.so, which the wrapping does not reach.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "ngx_http_cio_inflate.h"


#define MB  (1024 * 1024)


static int  passed, failed;


/* allocation accounting, on only around the call under test */
static int     tracking;
static size_t  biggest;
static long    fail_in;          /* fail the allocation after this many */
static long    nallocs;


void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);


static int
fail_now(size_t n)
{
    if (!tracking) {
        return 0;
    }

    nallocs++;

    if (n > biggest) {
        biggest = n;
    }

    return fail_in >= 0 && fail_in-- == 0;
}


void *
__wrap_malloc(size_t n)
{
    return fail_now(n) ? NULL : __real_malloc(n);
}


void *
__wrap_realloc(void *p, size_t n)
{
    return fail_now(n) ? NULL : __real_realloc(p, n);
}


static void
ok(int cond, const char *name, const char *detail)
{
    if (cond) {
        passed++;
        return;
    }

    failed++;
    printf("not ok: %s\n", name);

    if (detail) {
        printf("    %s\n", detail);
    }
}


typedef struct {
    int             rc;
    unsigned char  *out;
    size_t          out_len;
    const char     *err;
} result_t;


static result_t
run(const unsigned char *in, size_t len, size_t max)
{
    result_t  r;

    biggest = 0;
    nallocs = 0;
    tracking = 1;
    r.rc = ngx_http_cio_inflate(in, len, max, &r.out, &r.out_len, &r.err);
    tracking = 0;

    return r;
}


/* compress with zlib: wbits 15 zlib, 31 gzip, -15 raw deflate */
static unsigned char *
pack(const void *data, size_t len, int wbits, int level, gz_header *head,
    size_t *out_len)
{
    size_t          cap;
    z_stream        zs;
    unsigned char  *buf;

    memset(&zs, 0, sizeof(z_stream));

    if (deflateInit2(&zs, level, Z_DEFLATED, wbits, 9, Z_DEFAULT_STRATEGY)
        != Z_OK)
    {
        abort();
    }

    if (head && deflateSetHeader(&zs, head) != Z_OK) {
        abort();
    }

    /* deflateBound() ignores the gzip header's optional fields */
    cap = deflateBound(&zs, len) + 1024;
    buf = malloc(cap);
    if (buf == NULL) {
        abort();
    }

    zs.next_in = (Bytef *) data;
    zs.avail_in = len;
    zs.next_out = buf;
    zs.avail_out = cap;

    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
        abort();
    }

    *out_len = zs.total_out;
    deflateEnd(&zs);

    return buf;
}


/* a + b as one new buffer */
static unsigned char *
cat(const unsigned char *a, size_t alen, const unsigned char *b,
    size_t blen, size_t *len)
{
    unsigned char  *p;

    p = malloc(alen + blen + 1);
    if (p == NULL) {
        abort();
    }

    memcpy(p, a, alen);
    memcpy(p + alen, b, blen);
    *len = alen + blen;

    return p;
}


/* expects rc 0 and exactly want[0..wlen) */
static void
expect_ok(const char *name, const unsigned char *in, size_t len,
    size_t max, const void *want, size_t wlen)
{
    char      detail[200];
    result_t  r;

    r = run(in, len, max);

    snprintf(detail, sizeof(detail), "rc %d, err %s, len %zu (want %zu)",
             r.rc, r.err ? r.err : "(null)", r.out_len, wlen);

    ok(r.rc == 0 && r.err == NULL && r.out != NULL && r.out_len == wlen
       && memcmp(r.out, want, wlen) == 0 && r.out[wlen] == '\0',
       name, detail);

    free(r.out);
}


/* expects rc (-1 or -2) and, when err is given, exactly that reason */
static void
expect_fail(const char *name, const unsigned char *in, size_t len,
    size_t max, int rc, const char *err)
{
    char      detail[200];
    result_t  r;

    r = run(in, len, max);

    snprintf(detail, sizeof(detail), "rc %d (want %d), err \"%s\"",
             r.rc, rc, r.err ? r.err : "(null)");

    ok(r.rc == rc && r.out == NULL && r.out_len == 0 && r.err != NULL
       && (err == NULL || strcmp(r.err, err) == 0), name, detail);

    free(r.out);
}


static const char  json[] =
    "{\"userId\":\"u-42\",\"event\":\"Order Completed\","
    "\"properties\":{\"total\":42.5,\"currency\":\"EUR\"},"
    "\"timestamp\":\"2023-11-14T22:13:20.123Z\"}";


static void
test_round_trips(void)
{
    uLong           zlen;
    size_t          len, hlen, blen;
    gz_header       head;
    unsigned char  *z, *big;
    unsigned int    i, seed;

    z = pack(json, sizeof(json) - 1, 31, 6, NULL, &len);
    expect_ok("gzip round trip", z, len, 32768, json, sizeof(json) - 1);
    free(z);

    z = pack(json, sizeof(json) - 1, 15, 6, NULL, &len);
    expect_ok("zlib (Content-Encoding: deflate) round trip", z, len, 32768,
              json, sizeof(json) - 1);
    free(z);

    z = pack(json, sizeof(json) - 1, -15, 6, NULL, &len);
    expect_ok("raw deflate round trip", z, len, 32768,
              json, sizeof(json) - 1);
    free(z);

    /* compress() is what a zlib-using client most likely calls */
    zlen = compressBound(sizeof(json) - 1);
    z = malloc(zlen);
    if (z == NULL || compress(z, &zlen, (const Bytef *) json,
                              sizeof(json) - 1) != Z_OK)
    {
        abort();
    }
    expect_ok("compress() round trip", z, zlen, 32768,
              json, sizeof(json) - 1);
    free(z);

    z = pack(json, sizeof(json) - 1, 31, 0, NULL, &len);
    expect_ok("gzip of stored blocks (level 0)", z, len, 32768,
              json, sizeof(json) - 1);
    free(z);

    z = pack(json, sizeof(json) - 1, 31, 9, NULL, &len);
    expect_ok("gzip level 9", z, len, 32768, json, sizeof(json) - 1);
    free(z);

    z = pack("", 0, 31, 6, NULL, &len);
    expect_ok("gzip of nothing", z, len, 32768, "", 0);
    free(z);

    z = pack("", 0, 15, 6, NULL, &len);
    expect_ok("zlib of nothing", z, len, 32768, "", 0);
    free(z);

    /* every optional gzip header field, as gzip -N or other tools write */
    memset(&head, 0, sizeof(gz_header));
    head.text = 1;
    head.time = 1700000000;
    head.os = 3;
    head.extra = (Bytef *) "AB\2\0xy";
    head.extra_len = 6;
    head.name = (Bytef *) "events.json";
    head.comment = (Bytef *) "from a test";
    head.hcrc = 1;

    z = pack(json, sizeof(json) - 1, 31, 6, &head, &hlen);
    expect_ok("gzip with FEXTRA, FNAME, FCOMMENT and FHCRC", z, hlen, 32768,
              json, sizeof(json) - 1);
    free(z);

    /* many doublings of the output buffer; pseudo-random, little slack */
    blen = 3 * MB + 123;
    big = malloc(blen);
    if (big == NULL) {
        abort();
    }

    seed = 1;
    for (i = 0; i < blen; i++) {
        seed = seed * 1103515245 + 12345;
        big[i] = "{}[],:\"abcdefghij0123456789"[(seed >> 16) % 27];
    }

    z = pack(big, blen, 31, 6, NULL, &len);
    expect_ok("3 MB gzip round trip", z, len, 16 * MB, big, blen);
    ok(biggest <= 16 * MB + 1, "3 MB round trip: no block above max + 1",
       NULL);
    free(z);

    z = pack(big, blen, 15, 1, NULL, &len);
    expect_ok("3 MB zlib round trip", z, len, 16 * MB, big, blen);
    free(z);

    /* a small body under a huge limit must not allocate the limit */
    z = pack(json, sizeof(json) - 1, 31, 6, NULL, &len);
    expect_ok("small body, 1 GB limit", z, len, 1024 * MB,
              json, sizeof(json) - 1);
    ok(biggest <= 4096, "small body, 1 GB limit: small buffer", NULL);
    free(z);

    free(big);
}


static void
test_members(void)
{
    size_t          alen, blen, elen, len, tlen;
    unsigned char  *a, *b, *e, *ab, *t, *aeb, *abz;
    static const char  part1[] = "{\"batch\":[{\"type\":\"track\",";
    static const char  part2[] = "\"event\":\"x\",\"userId\":\"u\"}]}";
    static const char  whole[] = "{\"batch\":[{\"type\":\"track\","
                                 "\"event\":\"x\",\"userId\":\"u\"}]}";

    a = pack(part1, sizeof(part1) - 1, 31, 6, NULL, &alen);
    b = pack(part2, sizeof(part2) - 1, 31, 6, NULL, &blen);
    e = pack("", 0, 31, 6, NULL, &elen);

    ab = cat(a, alen, b, blen, &len);
    expect_ok("two concatenated gzip members", ab, len, 32768,
              whole, sizeof(whole) - 1);
    expect_ok("members: max exactly the sum of both", ab, len,
              sizeof(whole) - 1, whole, sizeof(whole) - 1);
    expect_fail("members: max one below the sum", ab, len,
                sizeof(whole) - 2, -2, "inflated body is too large");
    expect_fail("members: max below the first one alone", ab, len,
                sizeof(part1) - 2, -2, "inflated body is too large");
    expect_fail("members: second one truncated", ab, len - 1, 32768, -1,
                "gzip body is truncated");
    expect_fail("members: second one cut after its magic", ab, alen + 2,
                32768, -1, "gzip body is truncated");
    expect_fail("members: a lone 0x1f after the first", ab, alen + 1,
                32768, -1, "gzip body is truncated");

    ab[alen + 2] ^= 0x01;
    expect_fail("members: second one with method 9", ab, len,
                32768, -1, NULL);
    ab[alen + 2] ^= 0x01;

    t = cat(a, alen, e, elen, &tlen);
    aeb = cat(t, tlen, b, blen, &tlen);
    expect_ok("three members, the middle one empty", aeb, tlen, 32768,
              whole, sizeof(whole) - 1);
    free(t);
    free(aeb);

    /* a zlib stream is one stream: a second one is trailing data */
    free(b);
    b = pack(part2, sizeof(part2) - 1, 15, 6, NULL, &blen);
    t = pack(part1, sizeof(part1) - 1, 15, 6, NULL, &tlen);
    abz = cat(t, tlen, b, blen, &len);
    expect_fail("two zlib streams", abz, len, 32768, -1,
                "deflate body has data after its end");
    free(abz);
    free(t);

    /* gzip then zlib: the second has no gzip magic */
    abz = cat(a, alen, b, blen, &len);
    expect_fail("gzip member then a zlib stream", abz, len, 32768, -1,
                "gzip body has data after its end");
    free(abz);

    free(a);
    free(b);
    free(e);
    free(ab);
}


static void
test_broken(void)
{
    int             all;
    char            name[100];
    size_t          len, tlen, i, first;
    unsigned char  *z, *bad;
    result_t        r;

    z = pack(json, sizeof(json) - 1, 31, 6, NULL, &len);

    /* every proper prefix, including the lone magic byte */
    all = 1;
    first = 0;
    for (i = 1; i < len; i++) {
        r = run(z, i, 32768);
        if (r.rc != -1 || r.out != NULL) {
            all = 0;
            first = first ? first : i;
        }
        free(r.out);
    }
    snprintf(name, sizeof(name), "every truncated gzip prefix is -1 "
             "(first bad: %zu of %zu)", first, len);
    ok(all, name, NULL);

    expect_fail("gzip without its last byte", z, len - 1, 32768, -1,
                "gzip body is truncated");
    expect_fail("gzip, header only", z, 10, 32768, -1,
                "gzip body is truncated");

    bad = cat(z, len, z, 0, &len);
    bad[len - 8] ^= 0x01;
    expect_fail("gzip with a corrupted CRC", bad, len, 32768, -1,
                "body is not valid gzip");
    bad[len - 8] ^= 0x01;

    bad[len - 1] ^= 0x01;
    expect_fail("gzip with a corrupted ISIZE", bad, len, 32768, -1,
                "body is not valid gzip");
    bad[len - 1] ^= 0x01;

    bad[2] = 7;
    expect_fail("gzip with compression method 7", bad, len, 32768, -1,
                "body is not valid gzip");
    bad[2] = 8;

    bad[3] = 0xe0;
    expect_fail("gzip with reserved flag bits", bad, len, 32768, -1,
                "body is not valid gzip");
    bad[3] = 0;

    expect_ok("gzip unchanged after the flips", bad, len, 32768,
              json, sizeof(json) - 1);
    free(bad);

    bad = cat(z, len, (const unsigned char *) "x", 1, &tlen);
    expect_fail("gzip followed by a byte of garbage", bad, tlen, 32768, -1,
                "gzip body has data after its end");
    free(bad);

    bad = cat(z, len, (const unsigned char *) "\0\0\0\0", 4, &len);
    expect_fail("gzip followed by zero padding", bad, len, 32768, -1,
                "gzip body has data after its end");
    free(bad);
    free(z);

    /* zlib: every prefix, a bad Adler-32, trailing data, a dictionary */
    z = pack(json, sizeof(json) - 1, 15, 6, NULL, &len);

    all = 1;
    first = 0;
    for (i = 1; i < len; i++) {
        r = run(z, i, 32768);
        if (r.rc != -1 || r.out != NULL) {
            all = 0;
            first = first ? first : i;
        }
        free(r.out);
    }
    snprintf(name, sizeof(name), "every truncated zlib prefix is -1 "
             "(first bad: %zu of %zu)", first, len);
    ok(all, name, NULL);

    bad = cat(z, len, z, 0, &len);
    bad[len - 1] ^= 0x80;
    expect_fail("zlib with a corrupted Adler-32", bad, len, 32768, -1,
                "body is not valid deflate");
    bad[len - 1] ^= 0x80;

    /* FDICT: the stream needs a preset dictionary nobody sends */
    bad[1] = (unsigned char) ((bad[1] & 0xc0) | 0x20);
    while (((bad[0] << 8) | bad[1]) % 31 != 0) {
        bad[1]++;
    }
    expect_fail("zlib asking for a preset dictionary", bad, len, 32768, -1,
                "body is not valid deflate");
    free(bad);

    bad = cat(z, len, (const unsigned char *) "\n", 1, &len);
    expect_fail("zlib followed by a newline", bad, len, 32768, -1,
                "deflate body has data after its end");
    free(bad);
    free(z);

    /* raw deflate: all prefixes stay -1 as well */
    z = pack(json, sizeof(json) - 1, -15, 6, NULL, &len);

    all = 1;
    for (i = 1; i < len; i++) {
        r = run(z, i, 32768);
        all = all && r.rc == -1;
        free(r.out);
    }
    ok(all, "every truncated raw deflate prefix is -1", NULL);
    free(z);

    /* not compressed at all */
    expect_fail("empty input", NULL, 0, 32768, -1,
                "compressed body is empty");
    expect_fail("plain JSON", (const unsigned char *) json,
                sizeof(json) - 1, 32768, -1, NULL);
    expect_fail("a lone gzip magic byte", (const unsigned char *) "\x1f", 1,
                32768, -1, "gzip body is truncated");
    expect_fail("gzip magic and nothing else",
                (const unsigned char *) "\x1f\x8b", 2, 32768, -1,
                "gzip body is truncated");
    expect_fail("reserved deflate block type 3",
                (const unsigned char *) "\x07\x00", 2, 32768, -1,
                "body is not valid deflate");
}


static void
test_limits(void)
{
    size_t          len;
    unsigned char  *z;

    z = pack(json, sizeof(json) - 1, 31, 6, NULL, &len);
    expect_ok("max exactly the inflated size", z, len, sizeof(json) - 1,
              json, sizeof(json) - 1);
    ok(biggest <= sizeof(json), "max exactly: no block above max + 1",
       NULL);
    expect_fail("max one below the inflated size", z, len,
                sizeof(json) - 2, -2, "inflated body is too large");
    expect_fail("max 0, non-empty body", z, len, 0, -2, NULL);
    free(z);

    z = pack("", 0, 31, 6, NULL, &len);
    expect_ok("max 0, empty body", z, len, 0, "", 0);
    free(z);

    /* exactly at the first buffer size and one past it */
    {
        static unsigned char  four_k[4097];

        memset(four_k, 'a', sizeof(four_k));

        z = pack(four_k, 4096, 15, 6, NULL, &len);
        expect_ok("4096 bytes, max 4096", z, len, 4096, four_k, 4096);
        expect_ok("4096 bytes, max 4097", z, len, 4097, four_k, 4096);
        expect_fail("4096 bytes, max 4095", z, len, 4095, -2, NULL);
        free(z);

        z = pack(four_k, 4097, 15, 6, NULL, &len);
        expect_ok("4097 bytes, max 4097", z, len, 4097, four_k, 4097);
        expect_fail("4097 bytes, max 4096", z, len, 4096, -2, NULL);
        free(z);
    }
}


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
test_bomb(void)
{
    char            detail[100];
    size_t          len, cap, i, mlen;
    double          t;
    z_stream        zs;
    unsigned char  *zeros, *z, *m, *m2;
    result_t        r;

    /*
     * 100 MB of zeros, deflated in 1 MB slices: about 100k of gzip.
     * Z_RLE finds the same runs as the default strategy but several
     * times faster, which matters under Valgrind.
     */
    zeros = calloc(1, MB);
    cap = 4 * MB;
    z = malloc(cap + 1);
    if (zeros == NULL || z == NULL) {
        abort();
    }

    memset(&zs, 0, sizeof(z_stream));
    if (deflateInit2(&zs, 9, Z_DEFLATED, 31, 9, Z_RLE) != Z_OK) {
        abort();
    }

    zs.next_out = z;
    zs.avail_out = cap;

    for (i = 0; i < 100; i++) {
        zs.next_in = zeros;
        zs.avail_in = MB;
        if (deflate(&zs, i == 99 ? Z_FINISH : Z_NO_FLUSH)
            != (i == 99 ? Z_STREAM_END : Z_OK))
        {
            abort();
        }
    }

    len = zs.total_out;
    deflateEnd(&zs);

    t = now();
    r = run(z, len, MB);
    t = now() - t;

    snprintf(detail, sizeof(detail), "rc %d, %zu bytes of input, %.3f s",
             r.rc, len, t);
    ok(r.rc == -2 && r.out == NULL, "gzip bomb: 100 MB of zeros, max 1 MB",
       detail);
    ok(t < 5.0, "gzip bomb: quick", detail);

    snprintf(detail, sizeof(detail), "biggest block %zu", biggest);
    ok(biggest <= MB + 1, "gzip bomb: no block above max + 1", detail);

    /*
     * Proof that inflating stopped at the limit: with the CRC broken or
     * garbage after the end, reading the bomb to its end would answer -1.
     */

    z[len - 8] ^= 0xff;
    expect_fail("gzip bomb with a bad CRC: still -2", z, len, MB, -2, NULL);
    z[len - 8] ^= 0xff;

    z[len] = 'x';
    expect_fail("gzip bomb with trailing garbage: still -2", z, len + 1,
                MB, -2, NULL);

    free(z);

    /* 200 members of 1 MB of zeros each: the limit is on their sum */
    m = pack(zeros, MB, 31, 9, NULL, &mlen);
    z = malloc(200 * mlen);
    if (z == NULL) {
        abort();
    }

    for (i = 0; i < 200; i++) {
        memcpy(z + i * mlen, m, mlen);
    }

    expect_fail("multi-member bomb: 200 x 1 MB, max 1 MB", z, 200 * mlen,
                MB, -2, "inflated body is too large");
    ok(biggest <= MB + 1, "multi-member bomb: no block above max + 1",
       NULL);
    expect_fail("multi-member bomb: 200 x 1 MB, max 3.5 MB", z,
                200 * mlen, 3 * MB + MB / 2, -2, NULL);
    m2 = calloc(1, 3 * MB);
    if (m2 == NULL) {
        abort();
    }
    expect_ok("multi-member: 3 x 1 MB, max 3 MB", z, 3 * mlen, 3 * MB,
              m2, 3 * MB);
    free(m2);
    expect_ok("one member of it, max 1 MB", z, mlen, MB, zeros, MB);

    free(m);
    free(z);
    free(zeros);
}


/* every allocation of the inflater in turn fails: no leak, right error */
static void
test_nomem(void)
{
    int             all;
    long            k, total;
    size_t          len;
    unsigned char  *z, *big;
    result_t        r;

    big = malloc(MB);
    if (big == NULL) {
        abort();
    }
    memset(big, 'x', MB);

    z = pack(big, MB, 31, 6, NULL, &len);

    fail_in = -1;
    r = run(z, len, 2 * MB);
    total = nallocs;
    ok(r.rc == 0 && r.out_len == MB && total > 2,
       "nomem: baseline needs several allocations", NULL);
    free(r.out);

    all = 1;
    for (k = 0; k < total; k++) {
        fail_in = k;
        r = run(z, len, 2 * MB);
        /* failing the final shrinking realloc() is harmless */
        all = all && ((r.rc == -1 && r.out == NULL
                       && r.err == ngx_http_cio_inflate_nomem)
                      || (r.rc == 0 && r.out_len == MB));
        free(r.out);
    }
    fail_in = -1;

    ok(all, "nomem: each failed allocation is -1 with the nomem reason",
       NULL);

    free(z);
    free(big);
}


int
main(void)
{
    fail_in = -1;

    test_round_trips();
    test_members();
    test_broken();
    test_limits();
    test_bomb();
    test_nomem();

    printf("%d passed, %d failed\n", passed, failed);

    return failed ? 1 : 0;
}
