/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * An LD_PRELOAD shim for t/80-journal-shutdown.t,
 * t/81-journal-sync-error.t and t/83-journal-lock.t: while the file named
 * by CIO_HOLD_SYNC exists, fdatasync() waits, as on a disk that takes its
 * time; it creates that name with ".held" appended once it waits, so the
 * test knows a sync is under way, and with ".main" appended when the
 * waiting one is a process's main thread.  While that name with ".fail"
 * appended exists, an fdatasync() called by a process's main thread
 * (nginx's event loop, not its thread pool) fails with EIO, and creates
 * the name with ".failed" appended.  An fsync() of a directory creates
 * the name with ".dir" appended.  The name is read when the library is
 * loaded, by the master: nginx clears its workers' environment.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static char  hold[4096];
static char  held[4096 + 8];
static char  fail[4096 + 8];
static char  failed[4096 + 8];
static char  main_held[4096 + 8];
static char  dir[4096 + 8];


__attribute__((constructor)) static void
hold_sync_init(void)
{
    const char  *p;

    p = getenv("CIO_HOLD_SYNC");

    if (p != NULL && strlen(p) < sizeof(hold)) {
        strcpy(hold, p);
        snprintf(held, sizeof(held), "%s.held", p);
        snprintf(fail, sizeof(fail), "%s.fail", p);
        snprintf(failed, sizeof(failed), "%s.failed", p);
        snprintf(main_held, sizeof(main_held), "%s.main", p);
        snprintf(dir, sizeof(dir), "%s.dir", p);
    }
}


/* the test's sign that the shim acted */

static void
hold_sync_touch(const char *name)
{
    int  fd;

    fd = open(name, O_WRONLY | O_CREAT, 0644);

    if (fd != -1) {
        close(fd);
    }
}


int
fdatasync(int fd)
{
    struct timespec         ts = { 0, 10 * 1000 * 1000 };
    static int            (*real)(int);

    if (real == NULL) {
        real = (int (*)(int)) dlsym(RTLD_NEXT, "fdatasync");
    }

    if (fail[0] != '\0' && access(fail, F_OK) == 0
        && syscall(SYS_gettid) == getpid())
    {
        hold_sync_touch(failed);
        errno = EIO;
        return -1;
    }

    if (hold[0] != '\0' && access(hold, F_OK) == 0) {
        hold_sync_touch(held);

        if (syscall(SYS_gettid) == getpid()) {
            hold_sync_touch(main_held);
        }

        while (access(hold, F_OK) == 0) {
            nanosleep(&ts, NULL);
        }
    }

    return real(fd);
}


int
fsync(int fd)
{
    struct stat    st;
    static int   (*real)(int);

    if (real == NULL) {
        real = (int (*)(int)) dlsym(RTLD_NEXT, "fsync");
    }

    if (dir[0] != '\0' && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        hold_sync_touch(dir);
    }

    return real(fd);
}
