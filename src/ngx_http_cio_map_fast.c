/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The mapper's fast path: the calls SDKs send all day (identify, track,
 * page and screen, alone or in a /v1/batch) mapped in one pass over the
 * request's own bytes.  Strings are referenced in place and unescaped
 * only where a rule reads them; property values are copied as the client
 * wrote them once checked; numbers keep their own digits when that is
 * what cJSON would print.  No tree and no allocation per string: one
 * work area per request (the item and attribute buffers, the names seen),
 * then one malloc() per item for the result.
 *
 * The items are byte for byte those of the tree mapper
 * (ngx_http_cio_map.c), which stays the reference: t/fuzz/fuzz_diff.c
 * runs both on every input.  Anything this file does not handle exactly
 * (a refusal, a rare rule, an odd shape) it declines, and the tree maps
 * it: Amplitude, group, alias, person actions, device and deletion
 * events, an identify naming a group, calls without a messageId (their
 * dedupe id hashes the tree's own print of the call), \u0000 escapes,
 * repeated keys that rules read, nesting deeper than 20, items over the
 * work area.  The operator's filters and integrations are applied here.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stddef.h>
#include <limits.h>
#include <float.h>
#include <math.h>

#if (defined __SSE2__)
#include <emmintrin.h>
#define FJ_SSE2  1
#else
#define FJ_SSE2  0
#endif

#include "ngx_http_cio_map.h"
#include "ngx_http_cio_map_fast.h"


#define FJ_DECLINE        NGX_HTTP_CIO_MAP_DECLINED

#if (defined __GNUC__)
#define fj_inline         inline __attribute__((always_inline))
#else
#define fj_inline         inline
#endif

/* far below the contract's 32 (§7.4): deeper calls go to the tree */
#define FJ_MAX_DEPTH      20

/* with the entries, under glibc's 128 KiB mmap() threshold */
#define FJ_OUT_SIZE       (36 * 1024)
#define FJ_ATTRS_SIZE     (36 * 1024)
#define FJ_SCRATCH_SIZE   (16 * 1024)
#define FJ_MAX_ENTRIES    (NGX_HTTP_CIO_MAP_MAX_ATTRS + 4)
#define FJ_HASH_SIZE      1024               /* a power of two */

#define FJ_ONES           0x0101010101010101ULL
#define FJ_HIGHS          0x8080808080808080ULL

#define FJ_MAX_EXACT      9007199254740992.0
#define FJ_FUTURE_MS      (366LL * 24 * 3600 * 1000)
#define FJ_MS_FROM        100000000000.0


enum {
    FJ_NONE = 0,
    FJ_STR,
    FJ_NUM,
    FJ_OBJ,
    FJ_ARR,
    FJ_TRUE,
    FJ_FALSE,
    FJ_NULL
};


/* a value of the body: a string's bytes between its quotes, else it all */
typedef struct {
    const unsigned char  *p;
    size_t                len;
    int                   type;
    int                   esc;       /* a string with \ or a control byte;
                                        a container the tree would print
                                        otherwise (fj_skip()) */
} fj_val_t;


typedef struct {
    const unsigned char  *p;
    const unsigned char  *end;
    int                   first;
    unsigned char         close;
} fj_in_t;


typedef struct {
    char                 *start;
    char                 *pos;
    char                 *end;
} fj_buf_t;


/* an attribute written to the attributes buffer as ,"key":value */
typedef struct {
    const char           *key;
    size_t                klen;
    size_t                off;
    size_t                len;
    size_t                slot;
    fj_val_t              val;
    int64_t               secs;
    unsigned              conv:1;   /* an ISO-8601 string, now secs */
    unsigned              deleted:1;
} fj_entry_t;


/* the first occurrence of each key a rule reads */
typedef struct {
    fj_val_t              type;
    fj_val_t              user;
    fj_val_t              anon;
    fj_val_t              event;
    fj_val_t              name;
    fj_val_t              props;
    fj_val_t              traits;
    fj_val_t              context;
    fj_val_t              ts;
    fj_val_t              ots;
    fj_val_t              sent_at;
    fj_val_t              mid;
    fj_val_t              intg;
    fj_val_t              gid;
    fj_val_t              prev;
    fj_val_t              wkey;
    fj_val_t              batch;
} fj_call_t;


typedef struct {
    const ngx_http_cio_map_opts_t  *opts;
    ngx_http_cio_map_result_t      *res;
    unsigned                        changes;
    unsigned                        nomem;       /* scratch ran out */
    size_t                          nfiltered;
    fj_val_t                        batch_sent_at;
    int                             batch_sent_rc;   /* 1: not parsed */
    int64_t                         batch_sent_ms;
    fj_val_t                        batch_ctx;
    fj_val_t                        batch_intg;
    fj_buf_t                        out;
    fj_buf_t                        attrs;
    fj_buf_t                        scratch;
    fj_call_t                      *calls;       /* of a batch */
    size_t                          ncalls;
    size_t                          ncap;
    size_t                          nentries;
    size_t                          nlive;
    fj_entry_t                      entries[FJ_MAX_ENTRIES];
    unsigned short                  hash[FJ_HASH_SIZE];
    char                            mem[FJ_OUT_SIZE + FJ_ATTRS_SIZE
                                        + FJ_SCRATCH_SIZE];
} fj_ctx_t;


static const struct {
    const char  *name;
    size_t       len;
    size_t       off;
} fj_keys[] = {       /* in order of length, indexed by fj_key_index() */
    { "type", 4, offsetof(fj_call_t, type) },
    { "name", 4, offsetof(fj_call_t, name) },
    { "event", 5, offsetof(fj_call_t, event) },
    { "batch", 5, offsetof(fj_call_t, batch) },
    { "userId", 6, offsetof(fj_call_t, user) },
    { "traits", 6, offsetof(fj_call_t, traits) },
    { "sentAt", 6, offsetof(fj_call_t, sent_at) },
    { "context", 7, offsetof(fj_call_t, context) },
    { "groupId", 7, offsetof(fj_call_t, gid) },
    { "writeKey", 8, offsetof(fj_call_t, wkey) },
    { "timestamp", 9, offsetof(fj_call_t, ts) },
    { "messageId", 9, offsetof(fj_call_t, mid) },
    { "properties", 10, offsetof(fj_call_t, props) },
    { "previousId", 10, offsetof(fj_call_t, prev) },
    { "anonymousId", 11, offsetof(fj_call_t, anon) },
    { "integrations", 12, offsetof(fj_call_t, intg) },
    { "originalTimestamp", 17, offsetof(fj_call_t, ots) },
    { NULL, 0, 0 }
};


/* bytes that end a plain run inside a string: " \ and controls */
static unsigned char  fj_special[256];


static int fj_value(fj_in_t *in, fj_val_t *v, int depth);
static int fj_skip(fj_in_t *in, int depth, int *dirty);
static int fj_next(fj_in_t *in, fj_val_t *key, fj_val_t *val, int depth);
static int fj_emit_value(fj_ctx_t *ctx, fj_buf_t *b, fj_in_t *in,
    fj_val_t *v, fj_entry_t *e, int depth);


/* tokenizer */

static void
fj_init_table(void)
{
    int  c;

    if (fj_special['"']) {
        return;
    }

    for (c = 0; c < 0x20; c++) {
        fj_special[c] = 1;
    }

    fj_special['\\'] = 1;
    fj_special['"'] = 1;
}


static fj_inline void
fj_ws(fj_in_t *in)
{
    if (in->p < in->end && *in->p > ' ') {
        return;
    }

    while (in->p < in->end
           && (*in->p == ' ' || *in->p == '\n' || *in->p == '\r'
               || *in->p == '\t'))
    {
        in->p++;
    }
}


static int
fj_hex4(const unsigned char *p, const unsigned char *end, unsigned *cp)
{
    return (end - p < 4) ? -1 : ngx_http_cio_map_hex4((const char *) p, cp);
}


/*
 * The end of a run of bytes that a string holds as they are: the first
 * ", \ or control byte from p on, 8 bytes at a time (the lowest flagged
 * byte of a word is exact), or end.
 */

static fj_inline const unsigned char *
fj_plain(const unsigned char *p, const unsigned char *end)
{
    uint64_t  w, q, b, m;

#if (FJ_SSE2)
    int       bits;
    __m128i   x, quote, bslash, ctl;

    quote = _mm_set1_epi8('"');
    bslash = _mm_set1_epi8('\\');
    ctl = _mm_set1_epi8(0x1f);

    while (end - p >= 16) {
        x = _mm_loadu_si128((const __m128i *) p);

        /* min(x, 0x1f) == x: x <= 0x1f, unsigned */
        bits = _mm_movemask_epi8(
                   _mm_or_si128(
                       _mm_or_si128(_mm_cmpeq_epi8(x, quote),
                                    _mm_cmpeq_epi8(x, bslash)),
                       _mm_cmpeq_epi8(_mm_min_epu8(x, ctl), x)));

        if (bits) {
            return p + __builtin_ctz(bits);
        }

        p += 16;
    }
#endif

    while (end - p >= 8) {
        memcpy(&w, p, 8);

        q = w ^ (FJ_ONES * '"');
        b = w ^ (FJ_ONES * '\\');
        m = ((w - FJ_ONES * 0x20) & ~w)
            | ((q - FJ_ONES) & ~q)
            | ((b - FJ_ONES) & ~b);
        m &= FJ_HIGHS;

        if (m) {
#if (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
            return p + (__builtin_ctzll(m) >> 3);
#else
            break;
#endif
        }

        p += 8;
    }

    while (p < end && !fj_special[*p]) {
        p++;
    }

    return p;
}


/*
 * A string at in->p ('"'), checked as cJSON reads it, or declined: a
 * \u0000 (the tree's own rules, §7.6), a lone surrogate or a raw NUL.
 */

static int fj_string_esc(fj_in_t *in, fj_val_t *v, const unsigned char *p);


static fj_inline int
fj_string(fj_in_t *in, fj_val_t *v)
{
    const unsigned char  *p;

    p = fj_plain(in->p + 1, in->end);

    v->type = FJ_STR;
    v->p = in->p + 1;
    v->esc = 0;

    if (p < in->end && *p == '"') {
        v->len = p - v->p;
        in->p = p + 1;
        return 0;
    }

    return fj_string_esc(in, v, p);
}


/* the rest of a string from p on, which has an escape or control byte */

static int
fj_string_esc(fj_in_t *in, fj_val_t *v, const unsigned char *p)
{
    unsigned              cp, lo;
    const unsigned char  *end;

    end = in->end;

    for ( ;; ) {
        p = fj_plain(p, end);

        if (p >= end) {
            return -1;
        }

        if (*p == '"') {
            break;
        }

        v->esc = 1;

        if (*p != '\\') {
            if (*p == '\0') {
                return -1;
            }

            p++;
            continue;
        }

        if (end - p < 2) {
            return -1;
        }

        switch (p[1]) {

        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            p += 2;
            break;

        case 'u':
            if (fj_hex4(p + 2, end, &cp) != 0 || cp == 0
                || (cp >= 0xdc00 && cp <= 0xdfff))
            {
                return -1;
            }

            p += 6;

            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u'
                    || fj_hex4(p + 2, end, &lo) != 0
                    || lo < 0xdc00 || lo > 0xdfff)
                {
                    return -1;
                }

                p += 6;
            }

            break;

        default:
            return -1;
        }
    }

    v->len = p - v->p;
    in->p = p + 1;

    return 0;
}


/*
 * RFC 8259 numbers only, at most 63 bytes (cJSON's buffer).  v->esc is
 * set unless cJSON prints the number back as written ("%1.15g"): an
 * integer of at most 15 digits, or a plain decimal of at most 15
 * significant digits, no trailing zero, not below 0.0001.
 */

static int
fj_number(fj_in_t *in, fj_val_t *v)
{
    size_t                sig, lead;
    const unsigned char  *p, *end, *d;

    p = in->p;
    end = in->end;

    v->type = FJ_NUM;
    v->p = p;
    v->esc = 0;

    if (p < end && *p == '-') {
        p++;
    }

    if (p >= end || *p < '0' || *p > '9') {
        return -1;
    }

    d = p;

    if (*p++ != '0') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    /* an integer part of "0" is no significant digit */
    sig = (*d == '0') ? 0 : (size_t) (p - d);

    if (p < end && *p == '.') {
        p++;

        if (p >= end || *p < '0' || *p > '9') {
            return -1;
        }

        d = p;

        while (p < end && *p == '0') {
            p++;
        }

        lead = p - d;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        sig += (sig == 0) ? (size_t) (p - d) - lead : (size_t) (p - d);

        v->esc = (p[-1] == '0') || (v->p[v->p[0] == '-'] == '0' && lead > 3);
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        v->esc = 1;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p >= end || *p < '0' || *p > '9') {
            return -1;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    v->esc |= (sig > 15);
    v->len = p - v->p;
    in->p = p;

    return (v->len <= 63) ? 0 : -1;
}


static int
fj_literal(fj_in_t *in, fj_val_t *v, const char *word, size_t n, int type)
{
    if ((size_t) (in->end - in->p) < n || memcmp(in->p, word, n) != 0) {
        return -1;
    }

    v->type = type;
    v->p = in->p;
    v->len = n;
    v->esc = 0;
    in->p += n;

    return 0;
}


#define fj_is_ws(c)  ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')


static fj_inline int fj_canonical(const fj_val_t *v);


/*
 * A string that the attributes keep as the client wrote it: no escape,
 * at most 1000 bytes, and (when dates are converted) not "YYYY-..."
 */

static fj_inline int
fj_clean_string(const fj_val_t *v, int dates)
{
    const unsigned char  *p;

    p = v->p;

    return !v->esc && v->len <= NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE
           && !(dates && v->len >= 10 && p[4] == '-'
                && p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9'
                && p[2] >= '0' && p[2] <= '9' && p[3] >= '0'
                && p[3] <= '9');
}


/*
 * The object or array at in->p checked and skipped in one loop, with no
 * call per token: most of a body is read only to know it is valid JSON.
 * *dirty is set when the tree would print it otherwise than it is written
 * (whitespace, escapes, a date, a long string, a number in another form).
 */

static int
fj_skip(fj_in_t *in, int depth, int *dirty)
{
    int                   top, d;
    fj_val_t              v;
    const unsigned char  *p, *end;
    unsigned char         close[FJ_MAX_DEPTH];

    top = 0;
    d = 0;
    p = in->p;
    end = in->end;

value:

    if (p >= end) {
        return -1;
    }

    switch (*p) {

    case ' ': case '\t': case '\n': case '\r':
        d = 1;
        p++;
        goto value;

    case '{':
    case '[':
        if (depth + top >= FJ_MAX_DEPTH) {
            return -1;
        }

        close[top++] = (*p == '{') ? '}' : ']';

        for (p++; p < end && fj_is_ws(*p); p++) {
            d = 1;
        }

        if (p < end && *p == close[top - 1]) {
            p++;
            top--;
            goto next;
        }

        if (close[top - 1] == '}') {
            goto key;
        }

        goto value;

    case '"':
        in->p = p;

        if (fj_string(in, &v) != 0) {
            return -1;
        }

        p = in->p;
        d |= !fj_clean_string(&v, 1);
        goto next;

    case 't':
    case 'f':
    case 'n':
        in->p = p;

        if (fj_literal(in, &v, (*p == 't') ? "true"
                               : (*p == 'f') ? "false" : "null",
                       (*p == 'f') ? 5 : 4, FJ_NULL) != 0)
        {
            return -1;
        }

        p = in->p;
        goto next;

    default:
        in->p = p;

        if (fj_number(in, &v) != 0) {
            return -1;
        }

        p = in->p;
        d |= !fj_canonical(&v);
    }

next:

    if (top == 0) {
        in->p = p;
        *dirty |= d;
        return 0;
    }

    if (p >= end) {
        return -1;
    }

    if (*p == ',') {
        p++;

        if (close[top - 1] == ']') {
            goto value;
        }

        goto key;
    }

    if (*p == close[top - 1]) {
        p++;
        top--;
        goto next;
    }

    if (!fj_is_ws(*p)) {
        return -1;
    }

    d = 1;
    p++;
    goto next;

key:

    for ( /* void */ ; p < end && fj_is_ws(*p); p++) {
        d = 1;
    }

    if (p >= end || *p != '"') {
        return -1;
    }

    in->p = p;

    if (fj_string(in, &v) != 0) {
        return -1;
    }

    for (p = in->p; p < end && fj_is_ws(*p); p++) {
        d = 1;
    }

    d |= v.esc || v.len > NGX_HTTP_CIO_MAP_MAX_ATTR_NAME;

    if (p >= end || *p != ':') {
        return -1;
    }

    p++;
    goto value;
}


/* one value at in->p, checked and skipped; v spans it */

static int
fj_value(fj_in_t *in, fj_val_t *v, int depth)
{
    const unsigned char  *start;

    fj_ws(in);

    if (in->p >= in->end) {
        return -1;
    }

    start = in->p;

    switch (*in->p) {

    case '"':
        return fj_string(in, v);

    case '{':
    case '[':
        v->esc = 0;

        if (fj_skip(in, depth, &v->esc) != 0) {
            return -1;
        }

        v->type = (*start == '{') ? FJ_OBJ : FJ_ARR;
        v->p = start;
        v->len = in->p - start;
        return 0;

    case 't':
        return fj_literal(in, v, "true", 4, FJ_TRUE);

    case 'f':
        return fj_literal(in, v, "false", 5, FJ_FALSE);

    case 'n':
        return fj_literal(in, v, "null", 4, FJ_NULL);

    default:
        return fj_number(in, v);
    }
}


/*
 * The start of the next member of an object (key set: the key and its
 * colon) or element of an array (key NULL): 1, 0 at the closing bracket,
 * -1 on anything else.
 */

static int
fj_member(fj_in_t *in, fj_val_t *key)
{
    fj_ws(in);

    if (in->p >= in->end) {
        return -1;
    }

    if (*in->p == in->close) {
        in->p++;
        return 0;
    }

    if (!in->first) {
        if (*in->p != ',') {
            return -1;
        }

        in->p++;

        if (in->p < in->end && fj_is_ws(*in->p)) {
            fj_ws(in);
        }
    }

    in->first = 0;

    if (key != NULL) {
        if (in->p >= in->end || *in->p != '"' || fj_string(in, key) != 0) {
            return -1;
        }

        if (in->p < in->end && fj_is_ws(*in->p)) {
            fj_ws(in);
        }

        if (in->p >= in->end || *in->p != ':') {
            return -1;
        }

        in->p++;
    }

    return 1;
}


/* the next member or element with its value, as fj_member() answers */

static int
fj_next(fj_in_t *in, fj_val_t *key, fj_val_t *val, int depth)
{
    int  rc;

    rc = fj_member(in, key);

    if (rc != 1) {
        return rc;
    }

    return (fj_value(in, val, depth) == 0) ? 1 : -1;
}


static void
fj_open(fj_in_t *in, const fj_val_t *v)
{
    in->p = v->p + 1;
    in->end = v->p + v->len;
    in->first = 1;
    in->close = (v->type == FJ_OBJ) ? '}' : ']';
}


/* a string's bytes as cJSON holds them; dst has room for len bytes */

static size_t
fj_unescape(const unsigned char *p, size_t len, char *dst)
{
    char                 *q;
    unsigned              cp, lo;
    const unsigned char  *end;

    q = dst;
    end = p + len;

    while (p < end) {
        if (*p != '\\') {
            *q++ = (char) *p++;
            continue;
        }

        switch (p[1]) {
        case 'b': *q++ = '\b'; p += 2; continue;
        case 'f': *q++ = '\f'; p += 2; continue;
        case 'n': *q++ = '\n'; p += 2; continue;
        case 'r': *q++ = '\r'; p += 2; continue;
        case 't': *q++ = '\t'; p += 2; continue;
        case 'u': break;
        default: *q++ = (char) p[1]; p += 2; continue;
        }

        (void) fj_hex4(p + 2, end, &cp);
        p += 6;

        if (cp >= 0xd800 && cp <= 0xdbff) {
            (void) fj_hex4(p + 2, end, &lo);
            p += 6;
            cp = 0x10000 + (((cp & 0x3ff) << 10) | (lo & 0x3ff));
        }

        if (cp < 0x80) {
            *q++ = (char) cp;

        } else if (cp < 0x800) {
            *q++ = (char) (0xc0 | (cp >> 6));
            *q++ = (char) (0x80 | (cp & 0x3f));

        } else if (cp < 0x10000) {
            *q++ = (char) (0xe0 | (cp >> 12));
            *q++ = (char) (0x80 | ((cp >> 6) & 0x3f));
            *q++ = (char) (0x80 | (cp & 0x3f));

        } else {
            *q++ = (char) (0xf0 | (cp >> 18));
            *q++ = (char) (0x80 | ((cp >> 12) & 0x3f));
            *q++ = (char) (0x80 | ((cp >> 6) & 0x3f));
            *q++ = (char) (0x80 | (cp & 0x3f));
        }
    }

    return q - dst;
}


/*
 * A string value as a NUL-terminated C string: in the scratch buffer, or
 * NULL when it does not fit.
 */

static char *
fj_cstr(fj_ctx_t *ctx, const fj_val_t *v, size_t *len)
{
    char    *s;
    size_t   n;

    if ((size_t) (ctx->scratch.end - ctx->scratch.pos) < v->len + 1) {
        /*
         * a caller may read NULL as "not a date" and go on: the whole
         * call is declined instead, for the tree to map
         */
        ctx->nomem = 1;
        return NULL;
    }

    s = ctx->scratch.pos;

    if (v->esc) {
        n = fj_unescape(v->p, v->len, s);

    } else {
        memcpy(s, v->p, v->len);
        n = v->len;
    }

    s[n] = '\0';
    ctx->scratch.pos += n + 1;

    if (len) {
        *len = n;
    }

    return s;
}


/*
 * The first member named name of the object o, as cJSON would find it;
 * with once, -1 when o has a second one: a rule that reads it names
 * someone, and the tree refuses the call (ngx_http_cio_map_twice()).
 */

static int
fj_lookup(fj_ctx_t *ctx, const fj_val_t *o, const char *name, fj_val_t *out,
    int once)
{
    int       rc, found;
    char     *mark, *s;
    size_t    n, nlen;
    fj_in_t   in;
    fj_val_t  k, v;

    out->type = FJ_NONE;

    if (o->type != FJ_OBJ) {
        return 0;
    }

    nlen = strlen(name);
    fj_open(&in, o);
    found = 0;

    while ((rc = fj_next(&in, &k, &v, 1)) == 1) {
        if (!k.esc) {
            if (k.len != nlen || memcmp(k.p, name, nlen) != 0) {
                continue;
            }

        } else {
            mark = ctx->scratch.pos;
            s = fj_cstr(ctx, &k, &n);
            ctx->scratch.pos = mark;

            if (s == NULL) {
                return -1;
            }

            if (n != nlen || memcmp(s, name, n) != 0) {
                continue;
            }
        }

        if (found) {
            return -1;
        }

        *out = v;
        found = 1;

        if (!once) {
            return 1;
        }
    }

    if (rc != 0) {
        out->type = FJ_NONE;
        return rc;
    }

    return found;
}


static int
fj_get(fj_ctx_t *ctx, const fj_val_t *o, const char *name, fj_val_t *out)
{
    return fj_lookup(ctx, o, name, out, 0);
}


/* output */

static int
fj_put(fj_buf_t *b, const char *s, size_t n)
{
    if ((size_t) (b->end - b->pos) < n) {
        return -1;
    }

    memcpy(b->pos, s, n);
    b->pos += n;

    return 0;
}


/* bytes as cJSON prints a string's contents */

static int
fj_escape(fj_buf_t *b, const char *s, size_t n)
{
    char                 *q;
    const unsigned char  *p, *end;

    static const char  hex[] = "0123456789abcdef";

    end = (const unsigned char *) s + n;
    p = fj_plain((const unsigned char *) s, end);

    if (p == end) {
        return fj_put(b, s, n);
    }

    if ((size_t) (b->end - b->pos) < 6 * n) {
        return -1;
    }

    q = b->pos;
    memcpy(q, s, p - (const unsigned char *) s);
    q += p - (const unsigned char *) s;

    for ( /* void */ ; p < end; p++) {
        if (!fj_special[*p]) {
            *q++ = (char) *p;
            continue;
        }

        *q++ = '\\';

        switch (*p) {
        case '"': *q++ = '"'; break;
        case '\\': *q++ = '\\'; break;
        case '\b': *q++ = 'b'; break;
        case '\f': *q++ = 'f'; break;
        case '\n': *q++ = 'n'; break;
        case '\r': *q++ = 'r'; break;
        case '\t': *q++ = 't'; break;
        default:
            *q++ = 'u';
            *q++ = '0';
            *q++ = '0';
            *q++ = hex[*p >> 4];
            *q++ = hex[*p & 15];
        }
    }

    b->pos = q;

    return 0;
}


/* "s" */

static int
fj_quote(fj_buf_t *b, const char *s, size_t n)
{
    if (fj_put(b, "\"", 1) != 0 || fj_escape(b, s, n) != 0) {
        return -1;
    }

    return fj_put(b, "\"", 1);
}


/* a string value of the body, quoted: in place unless it has escapes */

static int
fj_quote_val(fj_ctx_t *ctx, fj_buf_t *b, const fj_val_t *v)
{
    int    rc;
    char  *mark, *s;

    if (!v->esc) {
        if ((size_t) (b->end - b->pos) < v->len + 2) {
            return -1;
        }

        *b->pos++ = '"';
        memcpy(b->pos, v->p, v->len);
        b->pos += v->len;
        *b->pos++ = '"';
        return 0;
    }

    mark = ctx->scratch.pos;
    s = fj_cstr(ctx, v, NULL);

    rc = (s != NULL) ? fj_quote(b, s, strlen(s)) : -1;

    ctx->scratch.pos = mark;

    return rc;
}


static int
fj_int(fj_buf_t *b, int64_t n)
{
    char      tmp[24], *p;
    uint64_t  u;

    static const char  pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930"
        "31323334353637383940414243444546474849505152535455565758596061"
        "62636465666768697071727374757677787980818283848586878889909192"
        "93949596979899";

    p = tmp + sizeof(tmp);
    u = (n < 0) ? (uint64_t) 0 - (uint64_t) n : (uint64_t) n;

    while (u >= 100) {
        p -= 2;
        memcpy(p, &pairs[(u % 100) * 2], 2);
        u /= 100;
    }

    if (u >= 10) {
        p -= 2;
        memcpy(p, &pairs[u * 2], 2);

    } else {
        *--p = (char) ('0' + u);
    }

    if (n < 0) {
        *--p = '-';
    }

    return fj_put(b, p, tmp + sizeof(tmp) - p);
}


static int
fj_same_double(double a, double b)
{
    double  m;

    m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);

    return fabs(a - b) <= m * DBL_EPSILON;
}


/* a double as cJSON 1.7 prints it */

static int
fj_double(fj_buf_t *b, double d)
{
    int     n;
    char    tmp[32];
    double  test;

    if (isnan(d) || isinf(d)) {
        return fj_put(b, "null", 4);
    }

    if (d > -1e15 && d < 1e15 && d == (double) (int64_t) d) {
        if (d == 0 && signbit(d)) {
            return fj_put(b, "-0", 2);
        }

        return fj_int(b, (int64_t) d);
    }

    n = snprintf(tmp, sizeof(tmp), "%1.15g", d);

    if (sscanf(tmp, "%lg", &test) != 1 || !fj_same_double(test, d)) {
        n = snprintf(tmp, sizeof(tmp), "%1.17g", d);
    }

    return fj_put(b, tmp, n);
}


/* a number token that cJSON would print back exactly as written */

static fj_inline int
fj_canonical(const fj_val_t *v)
{
    return !v->esc;
}


static double
fj_strtod(const fj_val_t *v)
{
    char  tmp[64];

    memcpy(tmp, v->p, v->len);
    tmp[v->len] = '\0';

    return strtod(tmp, NULL);
}


static int
fj_number_out(fj_buf_t *b, const fj_val_t *v)
{
    if (fj_canonical(v)) {
        return fj_put(b, (const char *) v->p, v->len);
    }

    return fj_double(b, fj_strtod(v));
}


/*
 * Dates, ids, e-mails and placeholders: the tree mapper's own functions
 * (ngx_http_cio_map_fast.h), so that the two paths cannot drift apart.
 */

/* a string value that may be a date: "YYYY-" at least */

static int
fj_iso_val(fj_ctx_t *ctx, const fj_val_t *v, int64_t *ms)
{
    int                   rc;
    char                 *mark, *s;
    const unsigned char  *p;

    p = v->p;

    if (v->len < 10
        || (!v->esc
            && (p[4] != '-' || p[0] < '0' || p[0] > '9'
        || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9'
        || p[3] < '0' || p[3] > '9')))
    {
        return -1;
    }

    mark = ctx->scratch.pos;
    s = fj_cstr(ctx, v, NULL);
    rc = (s != NULL) ? ngx_http_cio_map_iso8601(s, ms) : -1;
    ctx->scratch.pos = mark;

    return rc;
}


/* a number as a time: seconds below 10^11, else milliseconds (§3.1) */

static void
fj_time_num(double d, int64_t *ms)
{
    if (!(d > -1e15 && d < 1e15)) {
        *ms = (d < 0) ? -1 : (int64_t) 1e15;
        return;
    }

    if (d > -FJ_MS_FROM && d < FJ_MS_FROM) {
        d *= 1000;
    }

    *ms = (int64_t) d;
    *ms -= ((double) *ms > d);
}


static int
fj_parse_time(fj_ctx_t *ctx, const fj_val_t *v, int64_t *ms)
{
    if (v->type == FJ_NUM) {
        fj_time_num(fj_strtod(v), ms);
        return 0;
    }

    if (v->type == FJ_STR) {
        return fj_iso_val(ctx, v, ms);
    }

    return -1;
}


static size_t
fj_utf8_len(const unsigned char *p)
{
    unsigned char  c = p[0];

    if (c < 0x80) {
        return 1;
    }

    if (c >= 0xc2 && c <= 0xdf) {
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    }

    if (c >= 0xe0 && c <= 0xef) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
            || (c == 0xe0 && p[1] < 0xa0)
            || (c == 0xed && p[1] > 0x9f))
        {
            return 0;
        }

        return 3;
    }

    if (c >= 0xf0 && c <= 0xf4) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
            || (p[3] & 0xc0) != 0x80
            || (c == 0xf0 && p[1] < 0x90)
            || (c == 0xf4 && p[1] > 0x8f))
        {
            return 0;
        }

        return 4;
    }

    return 0;
}


/* how many bytes of s to keep so that at most max remain, whole chars */

static size_t
fj_cut(const char *s, size_t n, size_t max)
{
    if (n > max) {
        n = max;

        while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    return n;
}


/* a number used as an id, as the tree writes it; -1 when not exact */

static int
fj_num_id(const fj_val_t *v, char *buf, size_t size)
{
    return ngx_http_cio_map_num_text(fj_strtod(v), buf, size);
}


/*
 * The event time (§3.1), as ngx_http_cio_map_time() computes it; *own is
 * the stated time a ULID can hold, or -1.
 */

static int64_t
fj_time(fj_ctx_t *ctx, const fj_call_t *c, int64_t *own)
{
    int       rc;
    int64_t   ms, sent, recv;

    recv = ctx->opts->received_ms;
    *own = -1;

    if (fj_parse_time(ctx, &c->ts, &ms) != 0
        && fj_parse_time(ctx, &c->ots, &ms) != 0)
    {
        return recv;
    }

    if (ms >= 0 && ms < (1LL << 48)) {
        *own = ms;
    }

    if (c->sent_at.type != FJ_NONE) {
        rc = fj_parse_time(ctx, &c->sent_at, &sent);

    } else {
        /* the batch's, read once */
        if (ctx->batch_sent_rc == 1) {
            ctx->batch_sent_rc = fj_parse_time(ctx, &ctx->batch_sent_at,
                                               &ctx->batch_sent_ms);
        }

        rc = ctx->batch_sent_rc;
        sent = ctx->batch_sent_ms;
    }

    if (rc == 0) {
        if (ms < -62135596800000LL || ms > 253402300799999LL
            || sent < -62135596800000LL || sent > 253402300799999LL)
        {
            goto impossible;
        }

        ms = recv - (sent - ms);
    }

    if (ms < 0 || ms > recv + FJ_FUTURE_MS) {
        goto impossible;
    }

    return ms;

impossible:

    ctx->changes++;

    return recv;
}


/* attributes */

static int
fj_emit_string(fj_ctx_t *ctx, fj_buf_t *b, const fj_val_t *v, fj_entry_t *e)
{
    int       rc;
    char     *mark, *s;
    size_t    n, keep;
    int64_t   ms, secs;

    if (ctx->opts->convert_timestamps && fj_iso_val(ctx, v, &ms) == 0) {
        secs = (ms >= 0) ? ms / 1000 : -((999 - ms) / 1000);

        if (e != NULL) {
            e->conv = 1;
            e->secs = secs;
        }

        return fj_int(b, secs);
    }

    if (!v->esc && v->len <= NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE) {
        return fj_quote_val(ctx, b, v);
    }

    mark = ctx->scratch.pos;
    s = fj_cstr(ctx, v, &n);

    if (s == NULL) {
        return -1;
    }

    keep = fj_cut(s, n, NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE);
    ctx->changes += (keep < n);

    rc = fj_quote(b, s, keep);
    ctx->scratch.pos = mark;

    return rc;
}


/* an object or array at in->p, written out with its values checked */

static int
fj_emit_container(fj_ctx_t *ctx, fj_buf_t *b, fj_in_t *in, int depth)
{
    int       obj, out;
    char     *mark;
    size_t    klen;
    fj_val_t  k, v;

    if (depth >= FJ_MAX_DEPTH) {
        return -1;
    }

    obj = (*in->p == '{');

    if (fj_put(b, (const char *) in->p, 1) != 0) {
        return -1;
    }

    in->p++;
    out = 0;

    for (in->first = 1; /* void */ ; in->first = 0) {
        fj_ws(in);

        if (in->p >= in->end) {
            return -1;
        }

        if (*in->p == (obj ? '}' : ']')) {
            in->p++;
            return fj_put(b, obj ? "}" : "]", 1);
        }

        if (!in->first) {
            if (*in->p != ',') {
                return -1;
            }

            in->p++;
            fj_ws(in);
        }

        klen = 0;

        if (obj) {
            if (in->p >= in->end || *in->p != '"' || fj_string(in, &k) != 0)
            {
                return -1;
            }

            mark = ctx->scratch.pos;

            if (k.esc && fj_cstr(ctx, &k, &klen) == NULL) {
                return -1;
            }

            ctx->scratch.pos = mark;
            klen = k.esc ? klen : k.len;

            fj_ws(in);

            if (in->p >= in->end || *in->p != ':') {
                return -1;
            }

            in->p++;
        }

        /* the name limit holds at every depth (§7.2): name and value go */
        if (klen > NGX_HTTP_CIO_MAP_MAX_ATTR_NAME) {
            ctx->changes++;

            if (fj_value(in, &v, depth + 1) != 0) {
                return -1;
            }

            continue;
        }

        if ((out++ && fj_put(b, ",", 1) != 0)
            || (obj && (fj_quote_val(ctx, b, &k) != 0
                        || fj_put(b, ":", 1) != 0))
            || fj_emit_value(ctx, b, in, &v, NULL, depth + 1) != 0)
        {
            return -1;
        }
    }
}


/* one value at in->p written as the tree would print its copy */

static int
fj_emit_value(fj_ctx_t *ctx, fj_buf_t *b, fj_in_t *in, fj_val_t *v,
    fj_entry_t *e, int depth)
{
    int      rc, first;
    fj_in_t  sub;

    fj_ws(in);

    if (in->p >= in->end) {
        return -1;
    }

    if (*in->p == '{' || *in->p == '[') {
        v->type = (*in->p == '{') ? FJ_OBJ : FJ_ARR;
        v->p = in->p;
        first = in->first;

        sub = *in;
        rc = fj_emit_container(ctx, b, &sub, depth);

        in->p = sub.p;
        in->first = first;
        v->len = in->p - v->p;

        return rc;
    }

    if (fj_value(in, v, depth) != 0) {
        return -1;
    }

    switch (v->type) {

    case FJ_STR:
        return fj_emit_string(ctx, b, v, e);

    case FJ_NUM:
        return fj_number_out(b, v);

    default:
        return fj_put(b, (const char *) v->p, v->len);
    }
}


static unsigned
fj_hash(const char *s, size_t n)
{
    const unsigned char  *u;

    /*
     * A few bytes, not all: names are few (300 at most are looked up)
     * and the probes compare whole names anyway.
     */
    u = (const unsigned char *) s;

    return (unsigned) n * 0x9e3779b1u
           ^ (n ? u[0] * 0x85ebca6bu ^ u[n - 1] * 0xc2b2ae35u
                  ^ u[n / 2] * 0x27d4eb2fu ^ u[n / 3] * 0x165667b1u
                : 0);
}


/* the hash slot of an attribute name: its entry + 1, or 0 if free */

static unsigned short *
fj_slot(fj_ctx_t *ctx, const char *key, size_t klen)
{
    unsigned          i;
    fj_entry_t       *e;
    unsigned short   *slot;

    i = fj_hash(key, klen) & (FJ_HASH_SIZE - 1);

    for ( ;; ) {
        slot = &ctx->hash[i];

        if (*slot == 0) {
            return slot;
        }

        e = &ctx->entries[*slot - 1];

        if (e->klen == klen && memcmp(e->key, key, klen) == 0) {
            return slot;
        }

        i = (i + 1) & (FJ_HASH_SIZE - 1);
    }
}


static fj_entry_t *
fj_find(fj_ctx_t *ctx, const char *key)
{
    unsigned short  *slot;

    slot = fj_slot(ctx, key, strlen(key));

    if (*slot == 0 || ctx->entries[*slot - 1].deleted) {
        return NULL;
    }

    return &ctx->entries[*slot - 1];
}


static void
fj_delete(fj_ctx_t *ctx, fj_entry_t *e)
{
    if (e != NULL && !e->deleted) {
        e->deleted = 1;
        ctx->nlive--;
    }
}


/* a new entry for key, its text from the attributes buffer's end on */

static fj_entry_t *
fj_entry(fj_ctx_t *ctx, unsigned short *slot, const char *key, size_t klen)
{
    fj_entry_t  *e;

    if (ctx->nentries == FJ_MAX_ENTRIES) {
        return NULL;
    }

    e = &ctx->entries[ctx->nentries++];
    e->secs = 0;
    e->conv = 0;
    e->deleted = 0;
    e->len = 0;
    e->val.type = FJ_NONE;
    e->key = key;
    e->klen = klen;
    e->off = ctx->attrs.pos - ctx->attrs.start;
    e->slot = slot - ctx->hash;
    *slot = (unsigned short) ctx->nentries;
    ctx->nlive++;

    return e;
}


/* a value the tree would print as it is written */

static int
fj_clean(fj_ctx_t *ctx, const fj_val_t *v)
{
    switch (v->type) {

    case FJ_STR:
        return fj_clean_string(v, ctx->opts->convert_timestamps);

    case FJ_NUM:
        return fj_canonical(v);

    default:
        return !v->esc;
    }
}


/*
 * The end of a value of a clean object (fj_skip() found no whitespace, no
 * escape): strings end at the next quote, containers at their bracket.
 */

static const unsigned char *
fj_clean_end(const unsigned char *p, const unsigned char *end)
{
    int  depth;

    if (*p == '"') {
        return fj_plain(p + 1, end) + 1;
    }

    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']') {
            p++;
        }

        return p;
    }

    for (depth = 0; p < end; p++) {
        if (*p == '"') {
            p = fj_plain(p + 1, end);

        } else if (*p == '{' || *p == '[') {
            depth++;

        } else if ((*p == '}' || *p == ']') && --depth == 0) {
            return p + 1;
        }
    }

    return end;
}


/*
 * The attributes from an object that the tree would print as it is
 * written (already checked): each kept member is copied whole.
 */

static int
fj_attrs_clean(fj_ctx_t *ctx, const fj_val_t *src)
{
    size_t                klen;
    fj_entry_t           *e;
    unsigned short       *slot;
    const unsigned char  *p, *end, *key, *v, *ve;

    p = src->p + 1;
    end = src->p + src->len - 1;

    while (p < end) {
        key = p + 1;
        p = fj_plain(key, end);

        if (p + 2 >= end || *p != '"' || p[1] != ':') {
            return -1;
        }

        klen = p - key;
        v = p + 2;
        ve = fj_clean_end(v, end);

        if (ve > end) {
            return -1;
        }

        p = ve + 1;

        if (klen > NGX_HTTP_CIO_MAP_MAX_ATTR_NAME
            || ctx->nentries >= NGX_HTTP_CIO_MAP_MAX_ATTRS)
        {
            ctx->changes++;
            continue;
        }

        slot = fj_slot(ctx, (const char *) key, klen);

        if (*slot != 0) {
            continue;
        }

        e = fj_entry(ctx, slot, (const char *) key, klen);

        if (e == NULL
            || fj_put(&ctx->attrs, ",", 1) != 0
            || fj_put(&ctx->attrs, (const char *) key - 1, ve - key + 1)
               != 0)
        {
            return -1;
        }

        e->len = ctx->attrs.pos - ctx->attrs.start - e->off;
        e->val.p = v + (*v == '"');
        e->val.len = ve - v - 2 * (*v == '"');
        e->val.esc = 0;
        e->val.type = (*v == '"') ? FJ_STR : (*v == '{') ? FJ_OBJ
                      : (*v == '[') ? FJ_ARR : (*v == 't') ? FJ_TRUE
                      : (*v == 'f') ? FJ_FALSE : (*v == 'n') ? FJ_NULL
                      : FJ_NUM;
    }

    return 0;
}


/*
 * The attributes of an item from traits or properties, as
 * ngx_http_cio_map_attrs() copies them: names over 150 bytes dropped, the
 * first 300 kept, a repeated name keeps its first value, strings cut and
 * dates converted at any depth (§3.2, §7.2).
 */

static int
fj_attrs(fj_ctx_t *ctx, const fj_val_t *src)
{
    int                   rc;
    char                 *key;
    size_t                i, klen;
    fj_in_t               in;
    fj_val_t              k, v;
    fj_entry_t           *e;
    unsigned short       *slot;
    const unsigned char  *start;

    /* the slots of the last item's names are all the table holds */
    for (i = 0; i < ctx->nentries; i++) {
        ctx->hash[ctx->entries[i].slot] = 0;
    }

    ctx->attrs.pos = ctx->attrs.start;
    ctx->nentries = 0;
    ctx->nlive = 0;

    if (src->type != FJ_OBJ) {
        return 0;
    }

    if (!src->esc) {
        return fj_attrs_clean(ctx, src);
    }

    fj_open(&in, src);

    while ((rc = fj_member(&in, &k)) == 1) {

        if (k.esc) {
            key = fj_cstr(ctx, &k, &klen);
            if (key == NULL) {
                return -1;
            }

        } else {
            key = (char *) k.p;
            klen = k.len;
        }

        slot = NULL;

        if (klen > NGX_HTTP_CIO_MAP_MAX_ATTR_NAME
            || ctx->nentries >= NGX_HTTP_CIO_MAP_MAX_ATTRS)
        {
            ctx->changes++;

        } else {
            slot = fj_slot(ctx, key, klen);

            if (*slot != 0) {
                slot = NULL;
            }
        }

        start = in.p;

        if (fj_value(&in, &v, 2) != 0) {
            return -1;
        }

        if (slot == NULL) {
            continue;
        }

        e = fj_entry(ctx, slot, key, klen);
        if (e == NULL) {
            return -1;
        }

        e->val = v;

        /* "key":value as written when the tree would print just that */
        if (!k.esc && fj_clean(ctx, &v)
            && v.p - (v.type == FJ_STR) == k.p + k.len + 2)
        {
            rc = fj_put(&ctx->attrs, ",", 1)
                 | fj_put(&ctx->attrs, (const char *) k.p - 1,
                          in.p - k.p + 1);

        } else {
            in.p = start;

            rc = (fj_put(&ctx->attrs, ",", 1) != 0
                  || fj_quote(&ctx->attrs, key, klen) != 0
                  || fj_put(&ctx->attrs, ":", 1) != 0
                  || fj_emit_value(ctx, &ctx->attrs, &in, &v, e, 2) != 0)
                 ? -1 : 0;
        }

        if (rc != 0) {
            return -1;
        }

        e->len = ctx->attrs.pos - ctx->attrs.start - e->off;
    }

    return rc;
}


/*
 * An attribute the module sets (created_at, anonymous_id), as
 * ngx_http_cio_map_put() does: it replaces one of the same name, else at
 * 300 the last of the sender's gives way.  text is the value as written.
 */

static int
fj_put_attr(fj_ctx_t *ctx, const char *name, const char *text, size_t n)
{
    size_t           i;
    fj_entry_t      *e, *last;
    unsigned short  *slot;

    e = fj_find(ctx, name);

    if (e != NULL) {
        fj_delete(ctx, e);

    } else if (ctx->nlive >= NGX_HTTP_CIO_MAP_MAX_ATTRS) {
        last = NULL;

        for (i = 0; i < ctx->nentries; i++) {
            e = &ctx->entries[i];

            if (!e->deleted
                && !(e->klen == 10 && memcmp(e->key, "created_at", 10) == 0)
                && !(e->klen == 12
                     && memcmp(e->key, "anonymous_id", 12) == 0))
            {
                last = e;
            }
        }

        if (last != NULL) {
            fj_delete(ctx, last);
            ctx->changes++;
        }
    }

    slot = fj_slot(ctx, name, strlen(name));
    e = fj_entry(ctx, slot, name, strlen(name));

    if (e == NULL
        || fj_put(&ctx->attrs, ",", 1) != 0
        || fj_quote(&ctx->attrs, name, strlen(name)) != 0
        || fj_put(&ctx->attrs, ":", 1) != 0
        || fj_put(&ctx->attrs, text, n) != 0)
    {
        return -1;
    }

    e->len = ctx->attrs.pos - ctx->attrs.start - e->off;

    return 0;
}


/* "attributes":{...} with the entries still there, in their order */

static int
fj_put_attrs(fj_ctx_t *ctx, fj_buf_t *b)
{
    int          first;
    size_t       i;
    fj_entry_t  *e;

    if (fj_put(b, "\"attributes\":{", 14) != 0) {
        return -1;
    }

    if (ctx->nlive == ctx->nentries && ctx->nentries > 0) {
        if (fj_put(b, ctx->attrs.start + 1,
                   ctx->attrs.pos - ctx->attrs.start - 1)
            != 0)
        {
            return -1;
        }

        return fj_put(b, "}", 1);
    }

    first = 1;

    for (i = 0; i < ctx->nentries; i++) {
        e = &ctx->entries[i];

        if (e->deleted) {
            continue;
        }

        if (fj_put(b, ctx->attrs.start + e->off + first, e->len - first)
            != 0)
        {
            return -1;
        }

        first = 0;
    }

    return fj_put(b, "}", 1);
}


/* identity (§2) */

static int
fj_present(const fj_val_t *v)
{
    return v->type == FJ_NUM || (v->type == FJ_STR && v->len > 0);
}


/* whether a string value is s once unescaped */

static int
fj_eq(fj_ctx_t *ctx, const fj_val_t *v, const char *s)
{
    int      eq;
    char    *mark, *u;
    size_t   n;

    if (v->type != FJ_STR) {
        return 0;
    }

    if (!v->esc) {
        return v->len == strlen(s) && memcmp(v->p, s, v->len) == 0;
    }

    mark = ctx->scratch.pos;
    u = fj_cstr(ctx, v, &n);
    eq = (u != NULL && n == strlen(s) && memcmp(u, s, n) == 0);
    ctx->scratch.pos = mark;

    return eq;
}


/* "identifiers":{...} of a userId (§2 rule 1) */

static int
fj_resolve(fj_ctx_t *ctx, fj_buf_t *b, const fj_val_t *v)
{
    char         num[64];
    char        *s;
    size_t       n;
    const char  *key;

    if (v->type == FJ_NUM) {
        /* its exact decimal text, as the tree writes it */
        if (fj_num_id(v, num, sizeof(num)) != 0) {
            return -1;
        }

        return (fj_put(b, "{\"id\":", 6) != 0
                || fj_put(b, num, strlen(num)) != 0)
               ? -1 : fj_put(b, "}", 1);
    }

    s = fj_cstr(ctx, v, &n);

    if (s == NULL || !ngx_http_cio_map_id_ok(s, n)) {
        return -1;
    }

    if (strncmp(s, "cio_", 4) == 0 && s[4] != '\0') {
        key = "{\"cio_id\":";
        s += 4;
        n -= 4;

    } else if (ngx_http_cio_map_is_email(s)) {
        key = "{\"email\":";

    } else {
        key = "{\"id\":";
    }

    return (fj_put(b, key, strlen(key)) != 0 || fj_quote(b, s, n) != 0)
           ? -1 : fj_put(b, "}", 1);
}


/* the context a call sees: its own keys, then its batch's (§6) */

static int
fj_ctx_get(fj_ctx_t *ctx, const fj_call_t *c, const char *name,
    fj_val_t *out)
{
    int  rc;

    rc = fj_get(ctx, &c->context, name, out);

    if (rc != 0) {
        return rc;
    }

    return fj_get(ctx, &ctx->batch_ctx, name, out);
}


/* the same, declined when the context that has it has it twice */

static int
fj_ctx_once(fj_ctx_t *ctx, const fj_call_t *c, const char *name,
    fj_val_t *out)
{
    int  rc;

    rc = fj_lookup(ctx, &c->context, name, out, 1);

    if (rc != 0) {
        return rc;
    }

    return fj_lookup(ctx, &ctx->batch_ctx, name, out, 1);
}


/*
 * The person's identifiers into b, as ngx_http_cio_map_identity(): -1
 * for every refusal (the tree words it).
 */

static int
fj_identity(fj_ctx_t *ctx, const fj_call_t *c, int identify, fj_buf_t *b,
    int *known)
{
    char      num[64], *s;
    size_t    n;
    fj_val_t  v, t;

    *known = 1;

    if (fj_present(&c->user) && !fj_eq(ctx, &c->user, "cio_")) {
        return fj_resolve(ctx, b, &c->user);
    }

    if (identify) {
        if (fj_lookup(ctx, &c->traits, "email", &v, 1) < 0) {
            return -1;
        }

        if (v.type != FJ_STR || v.len == 0) {
            if (fj_ctx_once(ctx, c, "traits", &t) < 0
                || fj_lookup(ctx, &t, "email", &v, 1) < 0)
            {
                return -1;
            }
        }

        if (v.type == FJ_STR && v.len > 0) {
            s = fj_cstr(ctx, &v, &n);

            if (s == NULL || !ngx_http_cio_map_id_ok(s, n)) {
                return -1;
            }

            return (fj_put(b, "{\"email\":", 9) != 0
                    || fj_quote(b, s, n) != 0)
                   ? -1 : fj_put(b, "}", 1);
        }
    }

    *known = 0;

    if (!fj_present(&c->anon)) {
        return -1;
    }

    if (c->anon.type == FJ_NUM) {
        if (fj_num_id(&c->anon, num, sizeof(num)) != 0) {
            return -1;
        }

        s = num;
        n = strlen(num);

    } else {
        s = fj_cstr(ctx, &c->anon, &n);
        if (s == NULL) {
            return -1;
        }
    }

    if (ngx_http_cio_map_placeholder(s) || !ngx_http_cio_map_id_ok(s, n)) {
        return -1;
    }

    return (fj_put(b, "{\"anonymous_id\":", 16) != 0
            || fj_quote(b, s, n) != 0)
           ? -1 : fj_put(b, "}", 1);
}


/* a known person's real anonymousId becomes attributes.anonymous_id */

static int
fj_anonymous(fj_ctx_t *ctx, const fj_call_t *c, int known)
{
    int       rc;
    char      num[64], *s, *mark;
    size_t    n;
    fj_buf_t  b;

    if (!known) {
        return 0;
    }

    mark = ctx->scratch.pos;

    if (c->anon.type == FJ_STR) {
        s = fj_cstr(ctx, &c->anon, &n);
        if (s == NULL) {
            return -1;
        }

    } else if (c->anon.type == FJ_NUM
               && fj_num_id(&c->anon, num, sizeof(num)) == 0)
    {
        s = num;
        n = strlen(num);

    } else {
        return 0;
    }

    if (n == 0 || ngx_http_cio_map_placeholder(s)) {
        ctx->scratch.pos = mark;
        return 0;
    }

    if (!ngx_http_cio_map_id_ok(s, n)) {
        ctx->scratch.pos = mark;
        ctx->changes++;
        return 0;
    }

    /* the quoted value, in the scratch buffer after the string itself */
    b.start = ctx->scratch.pos;
    b.pos = b.start;
    b.end = ctx->scratch.end;

    rc = fj_quote(&b, s, n);

    if (rc == 0) {
        ctx->scratch.pos = b.pos;
        rc = fj_put_attr(ctx, "anonymous_id", b.start, b.pos - b.start);
    }

    return rc;
}


/* 1: the integrations let the call reach Customer.io, 0: not, -1 */

static int
fj_integrations(fj_ctx_t *ctx, const fj_call_t *c)
{
    int              k, rc;
    char            *s, *mark;
    fj_in_t          in;
    fj_val_t         key, v;
    const fj_val_t  *sets[2];

    sets[0] = &c->intg;
    sets[1] = &ctx->batch_intg;

    for (k = 0; k < 2; k++) {
        if (sets[k]->type != FJ_OBJ) {
            continue;
        }

        fj_open(&in, sets[k]);

        while ((rc = fj_next(&in, &key, &v, 1)) == 1) {
            mark = ctx->scratch.pos;
            s = fj_cstr(ctx, &key, NULL);

            if (s == NULL) {
                return -1;
            }

            rc = ngx_http_cio_map_is_cio(s);
            ctx->scratch.pos = mark;

            if (rc) {
                return v.type != FJ_FALSE;
            }
        }

        if (rc < 0) {
            return -1;
        }
    }

    for (k = 0; k < 2; k++) {
        rc = fj_get(ctx, sets[k], "All", &v);

        if (rc < 0) {
            return -1;
        }

        if (rc == 1) {
            return v.type != FJ_FALSE;
        }
    }

    return 1;
}


/* 1: the operator's filters drop the call, 0: they keep it, -1 */

static int
fj_filtered(fj_ctx_t *ctx, const fj_call_t *c, int type, const char *event)
{
    int                             rc;
    char                           *s;
    fj_in_t                         in;
    fj_val_t                        cm, denied, e;
    const ngx_http_cio_map_opts_t  *opts;

    opts = ctx->opts;

    rc = fj_integrations(ctx, c);

    if (rc != 1) {
        return (rc == 0) ? 1 : -1;
    }

    if (type == NGX_HTTP_CIO_CALL_TRACK) {
        if (opts->nevents_allow
            && !ngx_http_cio_map_listed(event, opts->events_allow,
                                        opts->nevents_allow))
        {
            return 1;
        }

        if (ngx_http_cio_map_listed(event, opts->events_deny,
                                    opts->nevents_deny))
        {
            return 1;
        }
    }

    if (opts->nconsent_deny == 0) {
        return 0;
    }

    if (fj_ctx_get(ctx, c, "consentManagement", &cm) < 0
        || fj_get(ctx, &cm, "deniedConsentIds", &denied) < 0)
    {
        return -1;
    }

    if (denied.type != FJ_ARR) {
        return 0;
    }

    fj_open(&in, &denied);

    while ((rc = fj_next(&in, NULL, &e, 1)) == 1) {
        if (e.type != FJ_STR) {
            continue;
        }

        s = fj_cstr(ctx, &e, NULL);

        if (s == NULL) {
            return -1;
        }

        if (ngx_http_cio_map_listed(s, opts->consent_deny,
                                    opts->nconsent_deny))
        {
            return 1;
        }
    }

    return (rc == 0) ? 0 : -1;
}


/* items */

/*
 * The item in ctx->out as the call's next item: any byte that does not
 * start valid UTF-8 becomes U+FFFD, counted (§7.5), as the tree does to
 * its print; an item over max_item_size is the tree's to refuse.
 */

static int
fj_finish(fj_ctx_t *ctx, ngx_http_cio_map_call_t *out)
{
    char                 *item, *q;
    size_t                n, len, bad;
    uint64_t              w;
    const unsigned char  *p, *end;

    len = ctx->out.pos - ctx->out.start;

    if (fj_put(&ctx->out, "\0\0\0", 4) != 0) {
        return -1;
    }

    p = (const unsigned char *) ctx->out.start;
    end = p + len;
    bad = 0;

    while (p < end) {
        if (end - p >= 8) {
            memcpy(&w, p, 8);

            if ((w & FJ_HIGHS) == 0) {
                p += 8;
                continue;
            }
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        n = fj_utf8_len(p);
        bad += (n == 0);
        p += n ? n : 1;
    }

    if (ctx->opts->max_item_size
        && len + 2 * bad > ctx->opts->max_item_size)
    {
        return -1;
    }

    item = malloc(len + 2 * bad + 1);
    if (item == NULL) {
        return -1;
    }

    if (bad == 0) {
        memcpy(item, ctx->out.start, len + 1);

    } else {
        q = item;

        for (p = (const unsigned char *) ctx->out.start; p < end; p += n) {
            n = fj_utf8_len(p);

            if (n == 0) {
                memcpy(q, "\xef\xbf\xbd", 3);
                q += 3;
                n = 1;

            } else {
                memcpy(q, p, n);
                q += n;
            }
        }

        *q = '\0';
        ctx->changes += bad;
    }

    out->item[out->nitems] = item;
    out->item_len[out->nitems] = len + 2 * bad;
    out->nitems++;

    return 0;
}


/* the event, page or screen item of ngx_http_cio_map_event() */

static int
fj_event_item(fj_ctx_t *ctx, const fj_call_t *c, const fj_buf_t *ids,
    const char *action, const char *name, size_t nlen, int known)
{
    char      ulid[27], *seed;
    size_t    keep, slen;
    int64_t   ms, own;
    fj_buf_t  *b;

    keep = fj_cut(name, nlen, NGX_HTTP_CIO_MAP_MAX_NAME);
    ctx->changes += (keep < nlen);

    ms = fj_time(ctx, c, &own);

    seed = fj_cstr(ctx, &c->mid, &slen);
    if (seed == NULL) {
        return -1;
    }

    ngx_http_cio_map_ulid(own, seed, slen, ulid);

    if (fj_anonymous(ctx, c, known) != 0) {
        return -1;
    }

    b = &ctx->out;
    b->pos = b->start;

    if (fj_put(b, "{\"type\":\"person\",\"identifiers\":", 31) != 0
        || fj_put(b, ids->start, ids->pos - ids->start) != 0
        || fj_put(b, ",\"action\":\"", 11) != 0
        || fj_put(b, action, strlen(action)) != 0
        || fj_put(b, "\",\"name\":", 9) != 0
        || fj_quote(b, name, keep) != 0
        || fj_put(b, ",\"id\":\"", 7) != 0
        || fj_put(b, ulid, 26) != 0
        || fj_put(b, "\",\"timestamp\":", 14) != 0
        || fj_double(b, (double) (ms / 1000)) != 0
        || fj_put(b, ",", 1) != 0
        || fj_put_attrs(ctx, b) != 0)
    {
        return -1;
    }

    return fj_put(b, "}", 1);
}


/* created_at, else createdAt, as unix seconds (§3.3) */

static int
fj_created_at(fj_ctx_t *ctx)
{
    int          i, rc;
    char         num[32], *s, *mark;
    size_t       n;
    int64_t      ms;
    fj_buf_t     b;
    fj_entry_t  *e;

    for (i = 0; i < 2; i++) {
        e = fj_find(ctx, i ? "createdAt" : "created_at");

        if (e != NULL
            && (e->val.type == FJ_NULL
                || (e->val.type == FJ_STR && !e->conv && e->val.len == 0)))
        {
            fj_delete(ctx, e);
            ctx->changes++;
        }
    }

    e = fj_find(ctx, "created_at");

    if (e == NULL) {
        e = fj_find(ctx, "createdAt");
    }

    if (e == NULL) {
        return 0;
    }

    if (e->conv) {
        fj_time_num((double) e->secs, &ms);

    } else if (e->val.type == FJ_NUM) {
        fj_time_num(fj_strtod(&e->val), &ms);

    } else if (e->val.type == FJ_STR) {
        /* the attribute as it was kept: cut to 1000 bytes */
        mark = ctx->scratch.pos;
        s = fj_cstr(ctx, &e->val, &n);

        if (s == NULL) {
            return -1;
        }

        s[fj_cut(s, n, NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE)] = '\0';
        rc = ngx_http_cio_map_iso8601(s, &ms);
        ctx->scratch.pos = mark;

        if (rc != 0) {
            return 0;
        }

    } else {
        return 0;
    }

    if (ms < 0) {
        return 0;
    }

    fj_delete(ctx, fj_find(ctx, "createdAt"));

    b.start = num;
    b.pos = num;
    b.end = num + sizeof(num);

    if (fj_double(&b, (double) (ms / 1000)) != 0) {
        return -1;
    }

    return fj_put_attr(ctx, "created_at", num, b.pos - num);
}


static int
fj_identify(fj_ctx_t *ctx, const fj_call_t *c, fj_buf_t *ids)
{
    int        known;
    fj_val_t   v;
    fj_buf_t  *b;

    if (fj_identity(ctx, c, 1, ids, &known) != 0) {
        return -1;
    }

    /* an identify naming a group relates the person: the tree's job */
    if (fj_present(&c->gid) || fj_ctx_get(ctx, c, "groupId", &v) != 0) {
        return -1;
    }

    v = c->traits;

    if (v.type != FJ_OBJ && fj_ctx_get(ctx, c, "traits", &v) < 0) {
        return -1;
    }

    if (fj_attrs(ctx, &v) != 0
        || fj_created_at(ctx) != 0
        || fj_anonymous(ctx, c, known) != 0)
    {
        return -1;
    }

    b = &ctx->out;
    b->pos = b->start;

    if (fj_put(b, "{\"type\":\"person\",\"identifiers\":", 31) != 0
        || fj_put(b, ids->start, ids->pos - ids->start) != 0
        || fj_put(b, ",\"action\":\"identify\",", 21) != 0
        || fj_put_attrs(ctx, b) != 0)
    {
        return -1;
    }

    return fj_put(b, "}", 1);
}


/* the name of a page or screen item; NULL with *len 0 for none */

static char *
fj_page_name(fj_ctx_t *ctx, const fj_call_t *c, int type, size_t *len)
{
    fj_val_t  v, page;

    *len = 0;
    v = c->name;

    if ((v.type != FJ_STR || v.len == 0)
        && fj_get(ctx, &c->props, type == NGX_HTTP_CIO_CALL_PAGE
                                  ? "url" : "name", &v) < 0)
    {
        return NULL;
    }

    if (v.type != FJ_STR || v.len == 0) {
        if (type == NGX_HTTP_CIO_CALL_PAGE) {
            if (fj_ctx_get(ctx, c, "page", &page) < 0
                || fj_get(ctx, &page, "url", &v) < 0)
            {
                return NULL;
            }

        } else {
            v = c->event;
        }
    }

    if (v.type != FJ_STR || v.len == 0) {
        return NULL;
    }

    return fj_cstr(ctx, &v, len);
}


static int
fj_special_event(const fj_ctx_t *ctx, const char *name)
{
    size_t  i;

    static const char  *names[] = {
        "Object Deleted", "Relationship Deleted", "User Deleted",
        "User Suppressed", "User Unsuppressed", "Application Installed",
        "Application Opened", "Device Created or Updated",
        "Application Uninstalled", "Device Deleted", NULL
    };

    for (i = 0; names[i]; i++) {
        if (names[i][0] == name[0] && strcmp(name, names[i]) == 0) {
            return 1;
        }
    }

    return ngx_http_cio_map_listed(name, ctx->opts->device_events,
                                   ctx->opts->ndevice_events);
}


/* track, page and screen items */

static int
fj_event(fj_ctx_t *ctx, const fj_call_t *c, int type, fj_buf_t *ids,
    char **event)
{
    int          known;
    char        *name, buf[NGX_HTTP_CIO_MAP_MAX_NAME + 16];
    size_t       n, keep, max;
    const char  *action;

    action = "event";

    if (type == NGX_HTTP_CIO_CALL_TRACK) {
        if (c->event.type != FJ_STR || c->event.len == 0) {
            return -1;
        }

        name = fj_cstr(ctx, &c->event, &n);

        if (name == NULL || fj_special_event(ctx, name)) {
            return -1;
        }

        *event = name;

    } else {
        name = fj_page_name(ctx, c, type, &n);

        if (type == NGX_HTTP_CIO_CALL_PAGE) {
            if (name == NULL) {
                return -1;
            }

            action = "page";

        } else if (name == NULL) {
            name = "Undefined";
            n = 9;
        }
    }

    if (fj_identity(ctx, c, 0, ids, &known) != 0
        || fj_attrs(ctx, &c->props) != 0)
    {
        return -1;
    }

    if (type == NGX_HTTP_CIO_CALL_SCREEN) {
        if (ctx->opts->screen_native) {
            action = "screen";

        } else {
            /* the whole "Viewed X Screen" fits: X is what gets cut */
            max = NGX_HTTP_CIO_MAP_MAX_NAME - (sizeof("Viewed  Screen") - 1);
            keep = fj_cut(name, n, max);
            ctx->changes += (keep < n);

            n = snprintf(buf, sizeof(buf), "Viewed %.*s Screen", (int) keep,
                         name);
            name = buf;
        }
    }

    return fj_event_item(ctx, c, ids, action, name, n, known);
}


/* one call of a known type, mapped into out, or -1 to decline */

static int
fj_call(fj_ctx_t *ctx, const fj_call_t *c, int type,
    ngx_http_cio_map_call_t *out)
{
    int        rc;
    char       idsbuf[1024], *event;
    fj_buf_t   ids;

    out->type = type;

    /* without a messageId the dedupe id hashes the tree's own print */
    if (c->mid.type != FJ_STR || c->mid.len == 0) {
        return -1;
    }

    ctx->scratch.pos = ctx->scratch.start;

    ids.start = idsbuf;
    ids.pos = idsbuf;
    ids.end = idsbuf + sizeof(idsbuf);
    event = NULL;

    if (type == NGX_HTTP_CIO_CALL_IDENTIFY) {
        rc = fj_identify(ctx, c, &ids);

    } else {
        rc = fj_event(ctx, c, type, &ids, &event);
    }

    if (rc != 0) {
        return -1;
    }

    rc = fj_filtered(ctx, c, type, event);

    if (rc != 0) {
        if (rc < 0) {
            return -1;
        }

        out->filtered = 1;
        ctx->nfiltered++;
        return 0;
    }

    return fj_finish(ctx, out);
}


static int fj_batch_calls(fj_ctx_t *ctx, fj_in_t *in);


/* the index of a key in fj_keys (in order of length), or of its end */

static fj_inline int
fj_key_index(const char *s, size_t n)
{
    int  i;

    /* each length's first index in fj_keys; 17, its end, for none */
    static const unsigned char  first[18] = {
        17, 17, 17, 17, 0, 2, 4, 7, 9, 10, 12, 14, 15, 17, 17, 17, 17, 16
    };

    if (n == 0 || n >= sizeof(first)) {
        return 17;
    }

    i = first[n];

    for ( /* void */ ; fj_keys[i].len == n; i++) {
        if (memcmp(fj_keys[i].name, s, n) == 0) {
            return i;
        }
    }

    return 17;
}


/*
 * The object at in->p, checked, with the keys that rules read noted in c:
 * a call, or a batch body (batch set: its calls go to ctx->calls).
 */

static int
fj_fields(fj_ctx_t *ctx, fj_in_t *in, fj_call_t *c, int batch)
{
    int        rc, i;
    char      *mark, *s;
    size_t     n;
    fj_in_t    obj;
    fj_val_t   k, v, *f;

    memset(c, 0, sizeof(fj_call_t));

    fj_ws(in);

    if (in->p >= in->end || *in->p != '{') {
        return -1;
    }

    obj.p = in->p + 1;
    obj.end = in->end;
    obj.first = 1;
    obj.close = '}';

    while ((rc = fj_member(&obj, &k)) == 1) {
        mark = ctx->scratch.pos;

        if (k.esc) {
            s = fj_cstr(ctx, &k, &n);
            if (s == NULL) {
                return -1;
            }

        } else {
            s = (char *) k.p;
            n = k.len;
        }

        i = fj_key_index(s, n);

        ctx->scratch.pos = mark;

        f = (fj_keys[i].name != NULL)
            ? (fj_val_t *) ((char *) c + fj_keys[i].off) : NULL;

        /* a repeated key: which one a rule reads is the tree's to say */
        if (f != NULL && f->type != FJ_NONE) {
            return -1;
        }

        fj_ws(&obj);

        if (batch && f == &c->batch && obj.p < obj.end && *obj.p == '[') {
            v.type = FJ_ARR;
            v.p = obj.p;
            rc = fj_batch_calls(ctx, &obj);
            v.len = obj.p - v.p;

        } else {
            rc = fj_value(&obj, &v, 1);
        }

        if (rc != 0) {
            return -1;
        }

        if (f != NULL) {
            *f = v;
        }
    }

    in->p = obj.p;

    return rc;
}


/* the calls of a batch array at in->p, each an object, into ctx->calls */

static int
fj_batch_calls(fj_ctx_t *ctx, fj_in_t *in)
{
    int         rc;
    size_t      cap;
    fj_in_t     arr;
    fj_call_t  *calls;

    arr.p = in->p + 1;
    arr.end = in->end;
    arr.first = 1;
    arr.close = ']';

    while ((rc = fj_member(&arr, NULL)) == 1) {
        if (ctx->ncalls == ctx->ncap) {
            if (ctx->opts->max_batch_calls
                && ctx->ncalls >= ctx->opts->max_batch_calls)
            {
                return -1;
            }

            cap = ctx->ncap ? 2 * ctx->ncap : 32;
            calls = realloc(ctx->calls, cap * sizeof(fj_call_t));

            if (calls == NULL) {
                return -1;
            }

            ctx->calls = calls;
            ctx->ncap = cap;
        }

        if (fj_fields(ctx, &arr, &ctx->calls[ctx->ncalls], 0) != 0) {
            return -1;
        }

        ctx->ncalls++;
    }

    in->p = arr.p;

    return rc;
}


static const char  *fj_types[] = {
    "unknown", "identify", "track", "page", "screen", NULL
};


/* the calls of a /v1/batch body (§6) */

static int
fj_batch(fj_ctx_t *ctx, const fj_call_t *root)
{
    int                         type;
    char                       *s;
    size_t                      n, i;
    fj_call_t                  *c;
    ngx_http_cio_map_result_t  *res;

    res = ctx->res;
    n = ctx->ncalls;

    /*
     * Every call reads the batch's context and integrations again: large
     * ones go to the tree, which reads them once and bounds them (its
     * printed size, which a raw control byte, printed \u00XX, can make 6
     * times this).
     */
    if (root->batch.type != FJ_ARR || n == 0
        || (ctx->opts->max_batch_calls && n > ctx->opts->max_batch_calls)
        || (root->context.type == FJ_OBJ
            && root->context.len > NGX_HTTP_CIO_MAP_MAX_SHARED / 6)
        || (root->intg.type == FJ_OBJ
            && root->intg.len > NGX_HTTP_CIO_MAP_MAX_SHARED / 6))
    {
        return -1;
    }

    /* what a call's reader looks at is set; the rest follows nitems */
    res->calls = malloc(n * sizeof(ngx_http_cio_map_call_t));
    if (res->calls == NULL) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        res->calls[i].type = 0;
        res->calls[i].nitems = 0;
        res->calls[i].filtered = 0;
        res->calls[i].error[0] = '\0';
    }

    res->ncalls = n;

    ctx->batch_sent_at = root->sent_at;

    if (root->context.type == FJ_OBJ) {
        ctx->batch_ctx = root->context;
    }

    if (root->intg.type == FJ_OBJ) {
        ctx->batch_intg = root->intg;
    }

    for (i = 0; i < n; i++) {
        c = &ctx->calls[i];

        if (c->type.type != FJ_STR) {
            return -1;
        }

        ctx->scratch.pos = ctx->scratch.start;
        s = fj_cstr(ctx, &c->type, NULL);

        if (s == NULL) {
            return -1;
        }

        for (type = 1; fj_types[type]; type++) {
            if (strcasecmp(s, fj_types[type]) == 0) {
                break;
            }
        }

        if (fj_types[type] == NULL
            || fj_call(ctx, c, type, &res->calls[i]) != 0)
        {
            return -1;
        }
    }

    return 0;
}


static int
fj_request(fj_ctx_t *ctx, const char *body, size_t len)
{
    int        route;
    fj_in_t    in;
    fj_call_t  c;

    route = ctx->opts->route;

    in.p = (const unsigned char *) body;
    in.end = in.p + len;

    if (fj_fields(ctx, &in, &c, route == NGX_HTTP_CIO_CALL_BATCH) != 0) {
        return -1;
    }

    fj_ws(&in);

    if (in.p != in.end) {
        return -1;
    }

    if (c.wkey.type == FJ_STR) {
        ctx->scratch.pos = ctx->scratch.start;
        ctx->res->write_key = fj_cstr(ctx, &c.wkey, NULL);

        if (ctx->res->write_key == NULL) {
            return -1;
        }

        ctx->res->write_key = strdup(ctx->res->write_key);

        if (ctx->res->write_key == NULL) {
            return -1;
        }
    }

    if (route == NGX_HTTP_CIO_CALL_BATCH) {
        return fj_batch(ctx, &c);
    }

    ctx->res->calls = calloc(1, sizeof(ngx_http_cio_map_call_t));
    if (ctx->res->calls == NULL) {
        return -1;
    }

    ctx->res->ncalls = 1;

    return fj_call(ctx, &c, route, &ctx->res->calls[0]);
}


/*
 * The context is some 115 KB, under malloc()'s mmap threshold: taken and
 * freed for every request, it often sat at the top of the heap, and glibc
 * gave it back to the kernel and took it again (brk), each time a TLB
 * shootdown of every core the worker's threads ran on and the pages
 * faulted in again: the 20-call batch's accept rate fell from 18,000 to
 * 5,000 requests/s in one bench run of two (perf: 57 % of the worker in
 * the shootdown's interrupts).  The mapper runs on one thread (nginx's
 * event loop, a unit test, the fuzzer): the last context is kept for the
 * next call, until ngx_http_cio_map_release().
 */
static fj_ctx_t  *fj_kept;


void
ngx_http_cio_map_release(void)
{
    free(fj_kept);
    fj_kept = NULL;
}


int
ngx_http_cio_map_fast(const char *body, size_t len,
    const ngx_http_cio_map_opts_t *opts, ngx_http_cio_map_result_t *res)
{
    int        rc;
    fj_ctx_t  *ctx;

    memset(res, 0, sizeof(ngx_http_cio_map_result_t));

    switch (opts->route) {

    case NGX_HTTP_CIO_CALL_IDENTIFY:
    case NGX_HTTP_CIO_CALL_TRACK:
    case NGX_HTTP_CIO_CALL_PAGE:
    case NGX_HTTP_CIO_CALL_SCREEN:
    case NGX_HTTP_CIO_CALL_BATCH:
        break;

    default:
        return FJ_DECLINE;
    }

    fj_init_table();

    ctx = fj_kept ? fj_kept : malloc(sizeof(fj_ctx_t));
    if (ctx == NULL) {
        return FJ_DECLINE;
    }

    fj_kept = NULL;

    ctx->opts = opts;
    ctx->res = res;
    ctx->changes = 0;
    ctx->nomem = 0;
    ctx->nfiltered = 0;
    ctx->calls = NULL;
    ctx->ncalls = 0;
    ctx->ncap = 0;
    ctx->nentries = 0;
    memset(ctx->hash, 0, sizeof(ctx->hash));
    memset(&ctx->batch_sent_at, 0, sizeof(fj_val_t));
    ctx->batch_sent_rc = 1;
    ctx->batch_sent_ms = 0;
    memset(&ctx->batch_ctx, 0, sizeof(fj_val_t));
    memset(&ctx->batch_intg, 0, sizeof(fj_val_t));

    ctx->out.start = ctx->mem;
    ctx->out.pos = ctx->out.start;
    ctx->out.end = ctx->out.start + FJ_OUT_SIZE;
    ctx->attrs.start = ctx->out.end;
    ctx->attrs.pos = ctx->attrs.start;
    ctx->attrs.end = ctx->attrs.start + FJ_ATTRS_SIZE;
    ctx->scratch.start = ctx->attrs.end;
    ctx->scratch.pos = ctx->scratch.start;
    ctx->scratch.end = ctx->scratch.start + FJ_SCRATCH_SIZE;

    rc = fj_request(ctx, body, len);
    free(ctx->calls);

    if (rc != 0 || ctx->nomem) {
        ngx_http_cio_map_result_free(res);
        memset(res, 0, sizeof(ngx_http_cio_map_result_t));
        fj_kept = ctx;
        return FJ_DECLINE;
    }

    res->changes = ctx->changes;
    res->nfiltered = ctx->nfiltered;
    fj_kept = ctx;

    return 0;
}
