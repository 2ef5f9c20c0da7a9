/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * A fast Customer.io Track API stand-in for `make bench`, for the rates
 * the Perl one (t/cio-standin.pl) cannot take: that one decodes every
 * batch with JSON::PP and writes every item to a file, a few 500,000-byte
 * batches a second at best (bench/README.md has the numbers).
 *
 * This one serves POST /api/v2/batch the way the Perl stand-in does for
 * what delivery throughput depends on: Basic auth against --workspace
 * SITE:KEY, the 500,000-byte body limit (400), a token bucket per
 * workspace (--rate N a second, --burst N, 429 over it, no Retry-After,
 * as the Perl one), keep-alive.  It does not record items: it counts them
 * (the top-level elements of "batch", found by a JSON scanner that also
 * refuses unbalanced or unterminated JSON with 400); --parse parses every
 * body with cJSON instead and checks each item is an object with "type"
 * and "action".
 *
 *   cio-standin-fast --listen 127.0.0.1:PORT --workspace SITE:KEY
 *       [--rate N] [--burst N] [--hold] [--parse]
 *
 * Prints "listening on 127.0.0.1:PORT" once ready (PORT 0 picks one).
 * --hold parks every batch request unanswered until
 * POST /__standin/release (a backlog builds up in the module's queue
 * meanwhile); POST /__standin/hold parks them again.  GET
 * /__standin/stats answers the counters as JSON; POST /__standin/reset
 * zeroes them.  SIGTERM / SIGINT stop it.
 */


#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>


#define MAX_BATCH   500000
#define MAX_HEAD    65536
#define HARD_CAP    8000000
#define MAX_WS      16
#define MAX_CONNS   4096


typedef struct {
    char        site[128];
    char        auth[512];      /* base64(site:key) */
    double      tokens;
    double      at;
} ws_t;


typedef struct conn_s  conn_t;

struct conn_s {
    int         fd;
    char       *rbuf;
    size_t      rlen, rcap;
    char       *wbuf;
    size_t      wlen, woff, wcap;
    int         held;           /* a parked request, not yet answered */
    int         closing;
    int         dead;
    conn_t     *next_held;
    conn_t     *next_dead;
};


static struct {
    uint64_t    requests;
    uint64_t    st200, st400, st401, st404, st413, st429, other;
    uint64_t    items;          /* accepted */
    uint64_t    bytes;          /* accepted request bodies */
    uint64_t    max_body;
    uint64_t    held;
    double      first_ms, last_ms;      /* first and last 200 */
} stats;


static ws_t     ws[MAX_WS];
static int      nws;
static double   rate, burst;
static int      hold, parse;
static int      ep;
static conn_t  *held_head;
static conn_t  *dead_head;     /* freed once an epoll batch is done */
static volatile sig_atomic_t  stop;


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static double
wall_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}


static void
b64(const unsigned char *in, size_t n, char *out)
{
    static const char  t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t  i;

    for (i = 0; i + 2 < n; i += 3) {
        *out++ = t[in[i] >> 2];
        *out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        *out++ = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
        *out++ = t[in[i + 2] & 63];
    }

    if (i < n) {
        *out++ = t[in[i] >> 2];
        if (i + 1 < n) {
            *out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
            *out++ = t[(in[i + 1] & 15) << 2];
        } else {
            *out++ = t[(in[i] & 3) << 4];
            *out++ = '=';
        }
        *out++ = '=';
    }

    *out = '\0';
}


static void
on_signal(int sig)
{
    stop = 1;
}


static void
want_write(conn_t *c, int on)
{
    struct epoll_event  ev;

    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}


static void
conn_close(conn_t *c)
{
    conn_t  **pp;

    for (pp = &held_head; *pp; pp = &(*pp)->next_held) {
        if (*pp == c) {
            *pp = c->next_held;
            break;
        }
    }

    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->dead = 1;
    c->next_dead = dead_head;
    dead_head = c;
}


/* returns -1 when the connection was closed */
static int
flush(conn_t *c)
{
    ssize_t  n;

    if (c->dead) {
        return -1;
    }

    while (c->woff < c->wlen) {
        n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);

        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                want_write(c, 1);
                return 0;
            }

            conn_close(c);
            return -1;
        }

        c->woff += n;
    }

    c->woff = c->wlen = 0;
    want_write(c, 0);

    if (c->closing) {
        conn_close(c);
        return -1;
    }

    return 0;
}


static void
respond(conn_t *c, int status, const char *body, int keep)
{
    char        head[256];
    const char *reason;
    size_t      hl, bl, need;

    switch (status) {
    case 200: reason = "OK"; stats.st200++; break;
    case 400: reason = "Bad Request"; stats.st400++; break;
    case 401: reason = "Unauthorized"; stats.st401++; break;
    case 404: reason = "Not Found"; stats.st404++; break;
    case 413: reason = "Payload Too Large"; stats.st413++; break;
    case 429: reason = "Too Many Requests"; stats.st429++; break;
    default: reason = "Status"; stats.other++;
    }

    bl = strlen(body);
    hl = (size_t) snprintf(head, sizeof(head),
                  "HTTP/1.1 %d %s\r\nContent-Type: application/json; "
                  "charset=utf-8\r\nContent-Length: %zu\r\nConnection: %s"
                  "\r\n\r\n", status, reason, bl,
                  keep ? "keep-alive" : "close");

    need = c->wlen + hl + bl;

    if (need > c->wcap) {
        c->wcap = need + 1024;
        c->wbuf = realloc(c->wbuf, c->wcap);
        if (c->wbuf == NULL) {
            abort();
        }
    }

    memcpy(c->wbuf + c->wlen, head, hl);
    memcpy(c->wbuf + c->wlen + hl, body, bl);
    c->wlen += hl + bl;

    if (!keep) {
        c->closing = 1;
    }
}


/*
 * Counts the elements of the top-level "batch" array; -1 if the JSON is
 * malformed (unbalanced, unterminated string) or has no such array.
 */
static long
count_items(const char *p, size_t n)
{
    size_t       i;
    int          depth, in_str, in_batch, seen;
    long         items;
    const char  *key;
    size_t       klen;

    depth = 0;
    in_str = 0;
    in_batch = 0;
    items = -1;
    seen = 0;
    key = NULL;
    klen = 0;

    for (i = 0; i < n; i++) {
        char  ch = p[i];

        if (in_str) {
            if (ch == '\\') {
                i++;
            } else if (ch == '"') {
                in_str = 0;
                if (depth == 1 && key) {
                    klen = (size_t) (p + i - key);
                }
            }
            continue;
        }

        switch (ch) {

        case '"':
            in_str = 1;
            key = (depth == 1) ? p + i + 1 : NULL;
            break;

        case '[':
        case '{':
            if (depth == 1 && ch == '[' && klen == 5 && key
                && memcmp(key, "batch", 5) == 0 && !in_batch)
            {
                in_batch = 1;
                items = 0;
                seen = 0;
            } else if (depth == 2 && in_batch && !seen) {
                items++;
                seen = 1;
            }
            depth++;
            break;

        case ']':
        case '}':
            depth--;
            if (depth < 0) {
                return -1;
            }
            if (depth == 1 && in_batch) {
                in_batch = 2;               /* done with it */
            }
            break;

        case ',':
            if (depth == 2 && in_batch == 1) {
                seen = 0;
            }
            break;

        case ' ': case '\t': case '\r': case '\n': case ':':
            break;

        default:
            /* a scalar element of the batch array */
            if (depth == 2 && in_batch == 1 && !seen) {
                items++;
                seen = 1;
            }
        }
    }

    if (depth != 0 || in_str) {
        return -1;
    }

    return items;
}


static long
parse_items(const char *p, size_t n)
{
    cJSON  *root, *batch, *it;
    long    items;

    root = cJSON_ParseWithLength(p, n);
    batch = cJSON_GetObjectItemCaseSensitive(root, "batch");

    if (!cJSON_IsArray(batch)) {
        cJSON_Delete(root);
        return -1;
    }

    items = 0;

    cJSON_ArrayForEach(it, batch) {
        if (!cJSON_IsObject(it)
            || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(it, "type"))
            || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(it,
                                                                "action")))
        {
            cJSON_Delete(root);
            return -1;
        }
        items++;
    }

    cJSON_Delete(root);

    return items;
}


static int
take_token(ws_t *w)
{
    double  t;

    if (rate <= 0) {
        return 1;
    }

    t = now_s();
    w->tokens += (t - w->at) * rate;
    if (w->tokens > burst) {
        w->tokens = burst;
    }
    w->at = t;

    if (w->tokens < 1) {
        return 0;
    }

    w->tokens -= 1;

    return 1;
}


static ws_t *
auth(const char *head, size_t hlen)
{
    const char  *p, *end, *v;
    size_t       vl;
    int          i;

    end = head + hlen;

    for (p = head; p < end; ) {
        const char  *eol = memmem(p, (size_t) (end - p), "\r\n", 2);

        if (eol == NULL) {
            eol = end;
        }

        if ((size_t) (eol - p) > 20
            && strncasecmp(p, "authorization:", 14) == 0)
        {
            v = p + 14;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            if (eol - v > 6 && strncasecmp(v, "Basic ", 6) == 0) {
                v += 6;
                vl = (size_t) (eol - v);
                while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) {
                    vl--;
                }
                for (i = 0; i < nws; i++) {
                    if (strlen(ws[i].auth) == vl
                        && memcmp(ws[i].auth, v, vl) == 0)
                    {
                        return &ws[i];
                    }
                }
            }
            return NULL;
        }

        p = eol + 2;
    }

    return NULL;
}


static void
stats_json(char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"requests\":%llu,\"by_status\":{\"200\":%llu,\"400\":%llu,"
             "\"401\":%llu,\"404\":%llu,\"413\":%llu,\"429\":%llu,"
             "\"other\":%llu},\"items_accepted\":%llu,\"bytes_accepted\":%llu,"
             "\"max_body\":%llu,\"held\":%llu,\"first_ms\":%.3f,"
             "\"last_ms\":%.3f,\"now_ms\":%.3f}",
             (unsigned long long) stats.requests,
             (unsigned long long) stats.st200,
             (unsigned long long) stats.st400,
             (unsigned long long) stats.st401,
             (unsigned long long) stats.st404,
             (unsigned long long) stats.st413,
             (unsigned long long) stats.st429,
             (unsigned long long) stats.other,
             (unsigned long long) stats.items,
             (unsigned long long) stats.bytes,
             (unsigned long long) stats.max_body,
             (unsigned long long) stats.held,
             stats.first_ms, stats.last_ms, wall_ms());
}


typedef struct {
    char     method[16];
    char     path[256];
    size_t   head_len;
    size_t   body_len;
    int      keep;
    int      chunked;
} req_t;


static int
parse_head(const char *p, size_t hlen, req_t *r)
{
    const char  *eol, *h, *end;
    int          minor;

    memset(r, 0, sizeof(req_t));
    r->head_len = hlen;

    eol = memmem(p, hlen, "\r\n", 2);
    if (eol == NULL
        || sscanf(p, "%15s %255s HTTP/1.%d", r->method, r->path, &minor) != 3)
    {
        return -1;
    }

    r->keep = minor ? 1 : 0;
    end = p + hlen;

    for (h = eol + 2; h < end; ) {
        eol = memmem(h, (size_t) (end - h), "\r\n", 2);
        if (eol == NULL || eol == h) {
            break;
        }

        if (strncasecmp(h, "content-length:", 15) == 0) {
            r->body_len = strtoul(h + 15, NULL, 10);
        } else if (strncasecmp(h, "connection:", 11) == 0) {
            if (memmem(h, (size_t) (eol - h), "close", 5)) {
                r->keep = 0;
            } else if (memmem(h, (size_t) (eol - h), "keep-alive", 10)) {
                r->keep = 1;
            }
        } else if (strncasecmp(h, "transfer-encoding:", 18) == 0) {
            r->chunked = 1;
        }

        h = eol + 2;
    }

    return 0;
}


static void
handle(conn_t *c, req_t *r, const char *head, const char *body)
{
    char   buf[1024];
    long   items;
    ws_t  *w;

    if (strcmp(r->method, "GET") == 0
        && strcmp(r->path, "/__standin/stats") == 0)
    {
        stats_json(buf, sizeof(buf));
        respond(c, 200, buf, r->keep);
        stats.st200--;
        return;
    }

    if (strcmp(r->method, "POST") == 0
        && strcmp(r->path, "/__standin/reset") == 0)
    {
        memset(&stats, 0, sizeof(stats));
        respond(c, 200, "{}", r->keep);
        stats.st200--;
        return;
    }

    stats.requests++;

    if (strcmp(r->method, "POST") != 0
        || strncmp(r->path, "/api/v2/batch", 13) != 0
        || (r->path[13] != '\0' && r->path[13] != '?'))
    {
        respond(c, 404, "{\"errors\":[{\"message\":\"not found\"}]}",
                r->keep);
        return;
    }

    w = auth(head, r->head_len);

    if (w == NULL) {
        respond(c, 401, "{\"meta\":{\"error\":\"Unauthorized request\"}}",
                r->keep);
        return;
    }

    if (r->body_len > MAX_BATCH) {
        respond(c, 400, "{\"errors\":[{\"reason\":\"request_too_large\","
                "\"message\":\"request must be smaller than 500kb\"}]}",
                r->keep);
        return;
    }

    if (!take_token(w)) {
        respond(c, 429, "{\"meta\":{\"error\":\"rate limited\"}}", r->keep);
        return;
    }

    items = parse ? parse_items(body, r->body_len)
                  : count_items(body, r->body_len);

    if (items <= 0) {
        respond(c, 400, "{\"errors\":[{\"reason\":\"invalid\",\"field\":"
                "\"batch\",\"message\":\"batch must be a non-empty array of "
                "items\"}]}", r->keep);
        return;
    }

    stats.items += (uint64_t) items;
    stats.bytes += r->body_len;
    if (r->body_len > stats.max_body) {
        stats.max_body = r->body_len;
    }

    stats.last_ms = wall_ms();
    if (stats.first_ms == 0) {
        stats.first_ms = stats.last_ms;
    }

    respond(c, 200, "{}", r->keep);
}


static int
is_batch(req_t *r)
{
    return strcmp(r->method, "POST") == 0
           && strncmp(r->path, "/api/v2/", 8) == 0;
}


static void release_all(void);


/* handles every complete request in the buffer; -1 if c was closed */
static int
process(conn_t *c)
{
    char   *end;
    size_t  hlen, total;
    req_t   r;

    while (!c->held && !c->closing && !c->dead) {
        end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);

        if (end == NULL) {
            if (c->rlen > MAX_HEAD) {
                respond(c, 400, "{}", 0);
                return flush(c);
            }
            break;
        }

        hlen = (size_t) (end - c->rbuf) + 4;

        if (parse_head(c->rbuf, hlen, &r) != 0 || r.chunked
            || r.body_len > HARD_CAP)
        {
            respond(c, 400, "{\"errors\":[{\"message\":\"malformed "
                    "request\"}]}", 0);
            return flush(c);
        }

        total = hlen + r.body_len;

        if (c->rlen < total) {
            break;
        }

        if (hold && is_batch(&r)) {
            c->held = 1;
            c->next_held = held_head;
            held_head = c;
            stats.held++;
            break;
        }

        if (strcmp(r.method, "POST") == 0
            && (strcmp(r.path, "/__standin/hold") == 0
                || strcmp(r.path, "/__standin/release") == 0))
        {
            hold = (r.path[11] == 'h');
            respond(c, 200, "{}", r.keep);
            memmove(c->rbuf, c->rbuf + total, c->rlen - total);
            c->rlen -= total;

            if (!hold) {
                release_all();
            }

            continue;
        }

        handle(c, &r, c->rbuf, c->rbuf + hlen);

        memmove(c->rbuf, c->rbuf + total, c->rlen - total);
        c->rlen -= total;
    }

    return flush(c);
}


static void
release_all(void)
{
    conn_t  *c, *next;

    c = held_head;
    held_head = NULL;

    for ( ; c; c = next) {
        next = c->next_held;
        c->next_held = NULL;
        c->held = 0;
        if (!c->dead) {
            process(c);
        }
    }
}


static void
on_read(conn_t *c)
{
    ssize_t  n;

    for ( ;; ) {
        if (c->rcap - c->rlen < 65536) {
            c->rcap = c->rcap ? c->rcap * 2 : 131072;
            c->rbuf = realloc(c->rbuf, c->rcap);
            if (c->rbuf == NULL) {
                abort();
            }
        }

        n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);

        if (n > 0) {
            c->rlen += (size_t) n;
            continue;
        }

        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            break;
        }

        conn_close(c);          /* EOF or reset */
        return;
    }

    if (!c->held) {
        process(c);
    }
}


static void
usage(void)
{
    fprintf(stderr, "usage: cio-standin-fast --listen 127.0.0.1:PORT "
            "--workspace SITE:KEY [--workspace ...] [--rate N] [--burst N] "
            "[--hold] [--parse]\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int                  i, n, lfd, one, fd, port;
    char                 host[64], cred[512];
    conn_t              *c, lconn;
    socklen_t            sl;
    struct sockaddr_in   sa;
    struct epoll_event   ev, evs[256];
    struct sigaction     sig;

    strcpy(host, "127.0.0.1");
    port = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            if (sscanf(argv[++i], "%63[0-9.]:%d", host, &port) != 2) {
                usage();
            }
        } else if (strcmp(argv[i], "--workspace") == 0 && i + 1 < argc
                   && nws < MAX_WS)
        {
            char  *colon;

            snprintf(cred, sizeof(cred), "%s", argv[++i]);
            colon = strchr(cred, ':');
            if (colon == NULL) {
                usage();
            }
            snprintf(ws[nws].site, sizeof(ws[nws].site), "%.*s",
                     (int) (colon - cred), cred);
            b64((unsigned char *) cred, strlen(cred), ws[nws].auth);
            nws++;
        } else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc) {
            rate = atof(argv[++i]);
        } else if (strcmp(argv[i], "--burst") == 0 && i + 1 < argc) {
            burst = atof(argv[++i]);
        } else if (strcmp(argv[i], "--hold") == 0) {
            hold = 1;
        } else if (strcmp(argv[i], "--parse") == 0) {
            parse = 1;
        } else {
            usage();
        }
    }

    if (nws == 0 || strncmp(host, "127.", 4) != 0) {
        usage();
    }

    if (burst <= 0) {
        burst = rate;
    }

    for (i = 0; i < nws; i++) {
        ws[i].tokens = burst;
        ws[i].at = now_s();
    }

    memset(&sig, 0, sizeof(sig));
    sig.sa_handler = on_signal;
    sigaction(SIGTERM, &sig, NULL);
    sigaction(SIGINT, &sig, NULL);
    signal(SIGPIPE, SIG_IGN);

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t) port);
    inet_pton(AF_INET, host, &sa.sin_addr);

    if (bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || listen(lfd, 1024) != 0)
    {
        perror("listen");
        return 1;
    }

    sl = sizeof(sa);
    getsockname(lfd, (struct sockaddr *) &sa, &sl);

    ep = epoll_create1(EPOLL_CLOEXEC);
    memset(&lconn, 0, sizeof(lconn));
    lconn.fd = lfd;
    ev.events = EPOLLIN;
    ev.data.ptr = &lconn;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    printf("listening on %s:%d\n", host, ntohs(sa.sin_port));
    fflush(stdout);

    while (!stop) {
        n = epoll_wait(ep, evs, 256, 200);

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;

            if (c->dead) {
                continue;
            }

            if (c == &lconn) {
                while ((fd = accept4(lfd, NULL, NULL,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
                {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
                               sizeof(one));
                    c = calloc(1, sizeof(conn_t));
                    if (c == NULL) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    ev.events = EPOLLIN;
                    ev.data.ptr = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }

            if (evs[i].events & EPOLLOUT) {
                if (flush(c) != 0) {
                    continue;
                }
            }

            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_read(c);
            }
        }

        while (dead_head) {
            c = dead_head;
            dead_head = c->next_dead;
            free(c->rbuf);
            free(c->wbuf);
            free(c);
        }
    }

    return 0;
}
