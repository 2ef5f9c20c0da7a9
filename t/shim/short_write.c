/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * An LD_PRELOAD shim for t/84-dead-letter-race.t and
 * t/85-journal-ack-torn.t: the first write() to
 * the file named by CIO_SHORT_WRITE, once that name with ".short"
 * appended exists, writes only half its bytes, as on a disk that has just
 * filled up; before it returns, it creates the name with ".held" appended
 * and waits (10 s at most) until the name with ".go" appended exists, so
 * that the test can have another worker write meanwhile.  The name is
 * read when the library is loaded, by the master: nginx clears its
 * workers' environment.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char  path[PATH_MAX];
static char  armed[PATH_MAX + 8];
static char  once[PATH_MAX + 8];
static char  held[PATH_MAX + 8];
static char  go[PATH_MAX + 8];


__attribute__((constructor)) static void
short_write_init(void)
{
    const char  *p;

    p = getenv("CIO_SHORT_WRITE");

    if (p != NULL && strlen(p) < sizeof(path)) {
        strcpy(path, p);
        snprintf(armed, sizeof(armed), "%s.short", p);
        snprintf(once, sizeof(once), "%s.once", p);
        snprintf(held, sizeof(held), "%s.held", p);
        snprintf(go, sizeof(go), "%s.go", p);
    }
}


/* whether fd is the file, and this the first write to cut short */

static int
short_write_this(int fd)
{
    int      tok;
    char     link[64], target[PATH_MAX];
    ssize_t  n;

    if (path[0] == '\0' || access(armed, F_OK) != 0) {
        return 0;
    }

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof(target) - 1);

    if (n <= 0) {
        return 0;
    }

    target[n] = '\0';

    if (strcmp(target, path) != 0) {
        return 0;
    }

    /* one process, one write: the first to create the token */
    tok = open(once, O_WRONLY | O_CREAT | O_EXCL, 0644);

    if (tok == -1) {
        return 0;
    }

    close(tok);

    return 1;
}


ssize_t
write(int fd, const void *buf, size_t len)
{
    int                     i, saved;
    ssize_t                 n;
    struct timespec         ts = { 0, 10 * 1000 * 1000 };
    static ssize_t        (*real)(int, const void *, size_t);

    if (real == NULL) {
        real = (ssize_t (*)(int, const void *, size_t))
                   dlsym(RTLD_NEXT, "write");
    }

    saved = errno;

    if (len < 2 || !short_write_this(fd)) {
        errno = saved;
        return real(fd, buf, len);
    }

    n = real(fd, buf, len / 2);

    i = open(held, O_WRONLY | O_CREAT, 0644);

    if (i != -1) {
        close(i);
    }

    for (i = 0; i < 1000 && access(go, F_OK) != 0; i++) {
        nanosleep(&ts, NULL);
    }

    errno = saved;

    return n;
}
