/* t_harness.c: see t.h. */
#include "t.h"
#include "pl.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

const char *t_dir(void)
{
    return dir;
}

const char *t_root(void)
{
    static char path[PATH_MAX + 16];
    char exe[PATH_MAX];
    if (access("examples/reference.yml", R_OK) == 0)
        return ".";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    T_CHECK(n > 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(path, sizeof path, "%s/../../..", exe);
    return path;
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

static int run(const char *suite, const TCase *c)
{
    char tmpl[] = "/tmp/pltest.XXXXXX";
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dir, sizeof dir, "%s/data", tmpl);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        c->fn();
        fflush(NULL);
        exit(0); /* exit, not _exit: sanitizers report leaks at exit */
    }
    int st = 0;
    waitpid(pid, &st, 0);
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok && WIFSIGNALED(st))
        fprintf(stderr, "%s.%s: killed by signal %d\n", suite, c->name, WTERMSIG(st));
    printf("%s %s.%s\n", ok ? "PASS" : "FAIL", suite, c->name);
    fflush(stdout);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpl);
    return !ok;
}

int t_main(int argc, char **argv, const char *suite, const TCase *cases)
{
    int pass = 0, fail = 0;
    for (const TCase *c = cases; c->name; c++) {
        int want = argc < 2;
        for (int i = 1; i < argc; i++)
            if (!strcmp(argv[i], c->name))
                want = 1;
        if (!want)
            continue;
        if (run(suite, c))
            fail++;
        else
            pass++;
    }
    printf("%d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
