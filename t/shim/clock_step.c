/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * An LD_PRELOAD shim for t/58-clock-step.t: the wall clock of the process
 * (gettimeofday(), clock_gettime(CLOCK_REALTIME), as nginx and glibc read
 * it) runs as many seconds off as the file named by CIO_CLOCK_STEP says,
 * read at most every 50 ms, as an NTP step or "date -s" would move it.
 * The monotonic clock is left alone.  The name is read when the library
 * is loaded, by the master: nginx clears its workers' environment.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char  name[4096];
static long  offset;
static long  read_at;


__attribute__((constructor)) static void
init(void)
{
    const char  *s;

    s = getenv("CIO_CLOCK_STEP");

    if (s != NULL && strlen(s) < sizeof(name)) {
        strcpy(name, s);
    }
}


static long
step(long now)
{
    int      fd;
    char     buf[32];
    ssize_t  n;

    if (name[0] == '\0' || now - read_at < 50) {
        return offset;
    }

    read_at = now;
    fd = open(name, O_RDONLY);

    if (fd == -1) {
        return offset;
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);

    if (n > 0) {
        buf[n] = '\0';
        offset = atol(buf);
    }

    return offset;
}


static long
mono_ms(void)
{
    struct timespec  ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return 0;
    }

    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


int
gettimeofday(struct timeval *tv, void *tz)
{
    int         rc;
    static int  (*real)(struct timeval *, void *);

    if (real == NULL) {
        real = (int (*)(struct timeval *, void *))
                   dlsym(RTLD_NEXT, "gettimeofday");
    }

    rc = real(tv, tz);

    if (rc == 0 && tv != NULL) {
        tv->tv_sec += step(mono_ms());
    }

    return rc;
}


int
clock_gettime(clockid_t id, struct timespec *ts)
{
    int         rc;
    static int  (*real)(clockid_t, struct timespec *);

    if (real == NULL) {
        real = (int (*)(clockid_t, struct timespec *))
                   dlsym(RTLD_NEXT, "clock_gettime");
    }

    rc = real(id, ts);

    if (rc == 0 && id == CLOCK_REALTIME) {
        ts->tv_sec += step(mono_ms());
    }

    return rc;
}
