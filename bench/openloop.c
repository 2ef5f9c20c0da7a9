/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * An open-loop HTTP/1.1 load generator for `make bench`'s latency part:
 * requests at a fixed rate, each timed from when it was due, not from
 * when a connection was free to send it (what wrk2 does and wrk, a
 * closed loop, cannot: a server that stalls makes a closed loop send
 * less, and the requests it did not send are never timed).
 *
 *   openloop -p PORT -u PATH -b BODYFILE -r RATE [-c CONNS] [-d SECS]
 *       [-w WARMUP_SECS] [-t CONTENT_TYPE] [-a BASIC_B64]
 *
 * Request k is due at start + k / RATE and goes on connection k % CONNS
 * (keep-alive, one request in flight on each), so the connections' dues
 * interleave evenly rather than all falling at once.  A request whose
 * connection is still busy at its due time is sent when it frees, and its
 * latency counts from the due time; one sent late with its connection
 * free (this program's timer was late) counts from when it was sent.
 * Requests due in the warm-up are sent and not counted.  Requests due
 * before the end and not answered 2 s after it count as unanswered, with
 * the latency they had reached.  Prints one JSON line: requests counted,
 * non-2xx answers, unanswered, latency p50/p90/p99/p99.9/max in ms, the
 * most this program sent a request late on its own, and the 2xx answers
 * of the warm-up and the run together (what the server accepted).
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define MAX_CONNS   256
#define RBUF        65536

/*
 * A request due within this many ns goes now: one wakeup sends several,
 * which keeps this program's own CPU (a timer and a context switch each)
 * from taking the cores the server needs; its latency counts from when
 * it was sent.
 */
#define EARLY       100000


typedef struct {
    int         fd;
    int         busy;
    uint64_t    due;            /* ns, of the request in flight or next */
    uint64_t    start;          /* ns, its latency counts from */
    uint64_t    freed;          /* ns, when the last answer completed */
    int         started;        /* the request in flight has its start */
    size_t      sent;           /* bytes of the request written */
    size_t      got;
    char        rbuf[RBUF];
} conn_t;


static char      *req;
static size_t     req_len;
static uint32_t  *lat_us;
static size_t     nlat, cap_lat;
static uint64_t   non2xx, errors, max_lag, ok_all;


static uint64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static void
die(const char *what)
{
    perror(what);
    exit(2);
}


static int
conn_open(int port)
{
    int                 fd, one;
    struct sockaddr_in  sa;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        die("socket");
    }

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
        die("connect");
    }

    one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}


static void
record(uint64_t ns)
{
    uint64_t  us = ns / 1000;

    if (nlat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 65536;
        lat_us = realloc(lat_us, cap_lat * sizeof(uint32_t));
        if (lat_us == NULL) {
            die("realloc");
        }
    }

    lat_us[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t) us;
}


/* 1 once the response is complete, 0 for more, -1 on a bad one */

static int
response_done(conn_t *c, int *status)
{
    char    *end, *cl;
    size_t   head, body;

    c->rbuf[c->got] = '\0';
    end = strstr(c->rbuf, "\r\n\r\n");
    if (end == NULL) {
        return c->got < RBUF - 1 ? 0 : -1;
    }

    if (strncmp(c->rbuf, "HTTP/1.", 7) != 0 || c->got < 12) {
        return -1;
    }

    *status = atoi(c->rbuf + 9);
    head = end + 4 - c->rbuf;
    body = 0;

    cl = strcasestr(c->rbuf, "\r\nContent-Length:");
    if (cl != NULL && cl < end) {
        body = strtoul(cl + 17, NULL, 10);

    } else if (*status != 204 && *status != 304) {
        return -1;              /* chunked, or close-delimited */
    }

    if (head + body > RBUF - 1) {
        return -1;
    }

    return c->got >= head + body;
}


static void
conn_send(conn_t *c, uint64_t now)
{
    ssize_t  n;

    if (!c->started) {
        c->started = 1;

        /*
         * Late because the server had not answered the last request yet:
         * the wait is the server's, timed from the due time.  Late while
         * the connection was free: the wait is this program's (a timer
         * fired late), timed from now and reported as its lag.
         */
        if (c->due < c->freed) {
            c->start = c->due;

        } else {
            c->start = now;
            if (now > c->due && now - c->due > max_lag) {
                max_lag = now - c->due;
            }
        }
    }

    while (c->sent < req_len) {
        n = write(c->fd, req + c->sent, req_len - c->sent);
        if (n < 0) {
            if (errno == EAGAIN) {
                return;         /* EPOLLOUT finishes it */
            }
            die("write");
        }
        c->sent += n;
    }
}


static void
load_request(const char *path, const char *file, const char *ctype,
    const char *auth, int port)
{
    FILE    *f;
    long     len;
    char    *body;
    size_t   cap;

    f = fopen(file, "rb");
    if (f == NULL) {
        die(file);
    }

    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    body = malloc(len + 1);
    if (body == NULL || fread(body, 1, len, f) != (size_t) len) {
        die("read body");
    }
    fclose(f);

    cap = len + 1024 + strlen(path) + strlen(ctype) + strlen(auth);
    req = malloc(cap);
    if (req == NULL) {
        die("malloc");
    }

    req_len = snprintf(req, cap,
                       "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                       "Content-Type: %s\r\nContent-Length: %ld\r\n"
                       "%s%s%s\r\n",
                       path, port, ctype, len,
                       *auth ? "Authorization: Basic " : "", auth,
                       *auth ? "\r\n" : "");
    memcpy(req + req_len, body, len);
    req_len += len;
    free(body);
}


static int
cmp_u32(const void *a, const void *b)
{
    uint32_t  x = *(const uint32_t *) a, y = *(const uint32_t *) b;

    return x < y ? -1 : x > y;
}


static double
pct(double p)
{
    size_t  i;

    if (nlat == 0) {
        return 0;
    }

    i = (size_t) (p / 100 * (nlat - 1) + 0.5);
    return lat_us[i] / 1000.0;
}


/* reads what a connection has; on a complete answer records and frees it */

static void
conn_read(conn_t *c, uint64_t warm_end)
{
    ssize_t  n;
    int      rc, status, ok;

    for ( ;; ) {
        n = read(c->fd, c->rbuf + c->got, RBUF - 1 - c->got);
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        if (n <= 0) {
            fprintf(stderr, "openloop: connection closed by the server\n");
            exit(2);
        }

        c->got += n;
        rc = response_done(c, &status);
        if (rc < 0) {
            fprintf(stderr, "openloop: bad response: %.80s\n", c->rbuf);
            exit(2);
        }
        if (rc == 0) {
            continue;
        }

        if (c->sent < req_len) {
            fprintf(stderr, "openloop: answered before the request was "
                    "sent: %.80s\n", c->rbuf);
            exit(2);
        }

        c->freed = now_ns();
        ok = status >= 200 && status <= 299;

        /* the warm-up's too: what the server accepted */
        ok_all += ok;

        if (c->due >= warm_end) {
            record(c->freed - c->start);
            non2xx += !ok;
        }

        c->busy = 0;
        c->started = 0;
        c->got = 0;
        c->sent = 0;
        return;
    }
}


/*
 * At the stop, the requests due before the end that got no answer: the
 * one in flight and those its connection had not sent yet.  Each counts
 * as unanswered, and with the latency it had reached by then (a lower
 * bound), so a stall at the end is not left out of the tail.
 */

static void
owed(conn_t *c, uint64_t step, uint64_t warm_end, uint64_t end,
    uint64_t stop)
{
    uint64_t  due;

    for (due = c->due; due < end; due += step) {
        if (due >= warm_end) {
            record(stop > due ? stop - due : 0);
            errors++;
        }
    }
}


/* sends what is due on free connections; returns when the next falls due */

static uint64_t
send_due(conn_t *conns, int nconns, uint64_t now, uint64_t end,
    uint64_t stop)
{
    int        i;
    uint64_t   next;
    conn_t    *c;

    next = stop;

    for (i = 0; i < nconns; i++) {
        c = &conns[i];

        if (c->busy || c->due >= end) {
            continue;
        }

        if (c->due <= now + EARLY) {
            c->busy = 1;
            conn_send(c, now);
            continue;
        }

        if (c->due < next) {
            next = c->due;
        }
    }

    return next;
}


static int
wait_events(int ep, struct epoll_event *evs, uint64_t ns)
{
    int               n;
    struct timespec   ts;
    static int        ms_only;

    ts.tv_sec = ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;

    n = ms_only ? -1 : epoll_pwait2(ep, evs, MAX_CONNS, &ts, NULL);

    if (n < 0 && (ms_only || errno == ENOSYS || errno == EPERM)) {
        /* before Linux 5.11 (and under Valgrind 3.19): whole ms */
        ms_only = 1;
        n = epoll_wait(ep, evs, MAX_CONNS, (ns + 999999) / 1000000);
    }

    if (n < 0 && errno != EINTR) {
        die("epoll_wait");
    }

    return n < 0 ? 0 : n;
}


static void
usage(void)
{
    fprintf(stderr, "usage: openloop -p PORT -u PATH -b BODYFILE -r RATE "
            "[-c CONNS] [-d SECS] [-w WARMUP] [-t CTYPE] [-a BASIC]\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int                  opt, port, nconns, ep, n, i;
    double               rate, secs, warm;
    const char          *path, *file, *ctype, *auth;
    uint64_t             start, warm_end, end, stop, gap, step, now, next;
    conn_t              *conns, *c;
    struct epoll_event   ev, evs[MAX_CONNS];

    port = 0;
    nconns = 16;
    rate = 0;
    secs = 4;
    warm = 1;
    path = file = NULL;
    ctype = "text/plain";
    auth = "";

    while ((opt = getopt(argc, argv, "p:u:b:r:c:d:w:t:a:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'u': path = optarg; break;
        case 'b': file = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'd': secs = atof(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 't': ctype = optarg; break;
        case 'a': auth = optarg; break;
        default: usage();
        }
    }

    if (port <= 0 || path == NULL || file == NULL || rate <= 0
        || nconns < 1 || nconns > MAX_CONNS || secs <= 0 || warm < 0)
    {
        usage();
    }

    load_request(path, file, ctype, auth, port);

    /* a closed connection is an error of write(), not a signal */
    signal(SIGPIPE, SIG_IGN);

    /* the default 50 us of slack would make due times late */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    ep = epoll_create1(0);
    conns = calloc(nconns, sizeof(conn_t));
    if (ep < 0 || conns == NULL) {
        die("setup");
    }

    for (i = 0; i < nconns; i++) {
        conns[i].fd = conn_open(port);
    }

    gap = (uint64_t) (1e9 / rate);
    step = nconns * gap;            /* between one connection's dues */
    start = now_ns() + 10000000;
    warm_end = start + (uint64_t) (warm * 1e9);
    end = warm_end + (uint64_t) (secs * 1e9);
    stop = end + 2000000000ULL;     /* for the answers still due */

    for (i = 0; i < nconns; i++) {
        c = &conns[i];
        c->due = start + i * gap;
        ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
        ev.data.ptr = c;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            die("epoll_ctl");
        }
    }

    for ( ;; ) {
        now = now_ns();
        next = send_due(conns, nconns, now, end, stop);

        for (i = 0; i < nconns; i++) {
            if (conns[i].busy || conns[i].due < end) {
                break;
            }
        }
        if (i == nconns || now >= stop) {
            break;              /* all sent and answered, or out of time */
        }

        n = wait_events(ep, evs, next > now ? next - now : 0);

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;
            if (!c->busy) {
                continue;
            }
            if ((evs[i].events & EPOLLOUT) && c->sent < req_len) {
                conn_send(c, now_ns());
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                conn_read(c, warm_end);
                if (!c->busy) {
                    c->due += step;
                }
            }
        }
    }

    for (i = 0; i < nconns; i++) {
        owed(&conns[i], step, warm_end, end, stop);
        close(conns[i].fd);
    }

    qsort(lat_us, nlat, sizeof(uint32_t), cmp_u32);

    printf("{\"requests\":%zu,\"seconds\":%.3f,\"rate\":%.1f,"
           "\"non2xx\":%llu,\"unanswered\":%llu,\"p50_ms\":%.3f,"
           "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
           "\"max_ms\":%.3f,\"max_lag_ms\":%.3f,\"ok_all\":%llu}\n",
           nlat, secs, rate, (unsigned long long) non2xx,
           (unsigned long long) errors, pct(50), pct(90), pct(99),
           pct(99.9), nlat ? lat_us[nlat - 1] / 1000.0 : 0,
           max_lag / 1e6, (unsigned long long) ok_all);

    return errors ? 1 : 0;
}
