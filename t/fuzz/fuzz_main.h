/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * For a fuzz target built with -DFUZZ_STANDALONE (gcc, Valgrind): each
 * file named on the command line through LLVMFuzzerTestOneInput() once,
 * as libFuzzer's -runs=0 would.  0, or 1 when a file cannot be read.
 */


#ifndef _FUZZ_MAIN_H_INCLUDED_
#define _FUZZ_MAIN_H_INCLUDED_


static int
fuzz_run_files(int argc, char **argv)
{
    int             i;
    long            n;
    FILE           *f;
    unsigned char  *buf;

    LLVMFuzzerInitialize(&argc, &argv);

    for (i = 1; i < argc; i++) {
        f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }

        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);

        buf = malloc(n > 0 ? n : 1);
        if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
            perror(argv[i]);
            return 1;
        }

        fclose(f);

        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
    }

    return 0;
}


#endif /* _FUZZ_MAIN_H_INCLUDED_ */
