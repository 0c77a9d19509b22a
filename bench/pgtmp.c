/* pgtmp.c: a throwaway PostgreSQL cluster (see pgtmp.h). */
#include "pgtmp.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The socket lives in our private directory, so the port only names the socket
 * file (.s.PGSQL.<port>); a fixed one cannot clash with another cluster. */
#define PGTMP_PORT 5432
#define PGTMP_START_TIMEOUT_MS 60000
#define PGTMP_STOP_TIMEOUT_MS 30000

struct PgTmp {
    char dir[90];           /* private: temp dir, socket dir, logs; short enough that
                             * <dir>/.s.PGSQL.<port> fits sockaddr_un */
    char data[100];         /* private: PGDATA = <dir>/data */
    char bindir[PATH_MAX];  /* private: where initdb, postgres, pg_ctl live */
    char conninfo[192];
    int as_user;            /* private: switch to uid/gid in children (we are root) */
    uid_t uid;
    gid_t gid;
    pid_t pid;              /* private: the postmaster, our child; 0 when not running */
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static int
is_exec(const char *dir, const char *name)
{
    char path[PATH_MAX];

    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return 0;
    return access(path, X_OK) == 0;
}

/* find_bindir fills out with the server binary directory; 0 or -1. */
static int
find_bindir(char *out, size_t outlen)
{
    const char *env = getenv("PGTMP_BINDIR");
    glob_t g;
    double best = -1;
    const char *path;

    if (env && *env) {
        if (!is_exec(env, "initdb") || !is_exec(env, "postgres"))
            return -1;
        snprintf(out, outlen, "%s", env);
        return 0;
    }

    /* Debian: /usr/lib/postgresql/<version>/bin; take the highest version. */
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            const char *p = g.gl_pathv[i] + strlen("/usr/lib/postgresql/");
            double v = strtod(p, NULL);
            char dir[PATH_MAX];
            size_t dlen = strlen(g.gl_pathv[i]) - strlen("/initdb");

            if (dlen >= sizeof dir)
                continue;
            memcpy(dir, g.gl_pathv[i], dlen);
            dir[dlen] = '\0';
            if (v > best && is_exec(dir, "initdb") && is_exec(dir, "postgres")) {
                best = v;
                snprintf(out, outlen, "%s", dir);
            }
        }
        globfree(&g);
        if (best >= 0)
            return 0;
    }

    /* Elsewhere: the first $PATH entry with both initdb and postgres. */
    path = getenv("PATH");
    while (path && *path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        char dir[PATH_MAX];

        if (len > 0 && len < sizeof dir) {
            memcpy(dir, path, len);
            dir[len] = '\0';
            if (is_exec(dir, "initdb") && is_exec(dir, "postgres")) {
                snprintf(out, outlen, "%s", dir);
                return 0;
            }
        }
        path = colon ? colon + 1 : NULL;
    }
    return -1;
}

/* log_tail copies the last non-empty line of the file at path into out ("" if none). */
static void
log_tail(const char *path, char *out, size_t outlen)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    size_t n;
    char *end, *start;

    out[0] = '\0';
    if (!f)
        return;
    if (fseek(f, -(long)(sizeof buf - 1), SEEK_END) != 0)
        rewind(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    end = buf + n;
    while (end > buf && (end[-1] == '\n' || end[-1] == '\r'))
        *--end = '\0';
    start = end;
    while (start > buf && start[-1] != '\n')
        start--;
    n = strlen(start);
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, start, n);
    out[n] = '\0';
}

/* spawn forks a child that drops to pg's user when needed, runs in pg->dir with stdin
 * from /dev/null and stdout+stderr appended to logpath, and execs argv[0] (a full
 * path). With deathsig, the child gets SIGQUIT when the calling thread exits.
 * Returns the pid, or -1 with errno set. Only async-signal-safe calls after fork. */
static pid_t
spawn(const PgTmp *pg, char *const argv[], const char *logpath, int deathsig)
{
    pid_t parent = getpid();
    pid_t pid = fork();

    if (pid != 0)
        return pid;

    if (pg->as_user) {
        if (setgroups(0, NULL) == -1 || setgid(pg->gid) == -1 || setuid(pg->uid) == -1)
            _exit(126);
    }
    /* After setuid: a credential change clears the parent-death signal. */
    if (deathsig && (prctl(PR_SET_PDEATHSIG, SIGQUIT) == -1 || getppid() != parent))
        _exit(126);
    if (chdir(pg->dir) == -1)
        _exit(126);
    {
        int in = open("/dev/null", O_RDONLY);
        int out = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);

        if (in == -1 || out == -1)
            _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        if (in > 2)
            close(in);
        if (out > 2)
            close(out);
    }
    execv(argv[0], argv);
    {
        static const char msg[] = "pgtmp: exec failed\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
    }
    _exit(127);
}

/* run spawns argv like spawn and waits for it; returns its exit status, or -1. */
static int
run(const PgTmp *pg, char *const argv[], const char *logpath)
{
    int status;
    pid_t pid = spawn(pg, argv, logpath, 0);

    if (pid == -1)
        return -1;
    while (waitpid(pid, &status, 0) == -1) {
        if (errno != EINTR)
            return -1;
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* wait_exit waits up to ms for pid to exit; 1 if reaped (or already gone), 0 if not. */
static int
wait_exit(pid_t pid, long ms)
{
    for (long waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, NULL, WNOHANG);

        if (r == pid || (r == -1 && errno == ECHILD))
            return 1;
        if (waited >= ms)
            return 0;
        sleep_ms(10);
    }
}

/* is_ready: postmaster.pid says "ready" (line 8, what pg_ctl -w checks, PG >= 10)
 * and the socket accepts a connect. */
static int
is_ready(const PgTmp *pg)
{
    char path[PATH_MAX + 32], line[256];
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    FILE *f;
    int lineno = 0, ready = 0, fd;

    snprintf(path, sizeof path, "%s/postmaster.pid", pg->data);
    f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        if (++lineno == 8) {
            ready = strncmp(line, "ready", 5) == 0;
            break;
        }
    }
    fclose(f);
    if (!ready)
        return 0;

    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.%d", pg->dir, PGTMP_PORT);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return 0;
    ready = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ready;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* stop0 stops the server (if running) and removes the directory (if made). */
static void
stop0(PgTmp *pg)
{
    if (pg->pid > 0) {
        char pgctl[PATH_MAX + 16], log[PATH_MAX + 16];
        char *argv[] = { pgctl, "stop", "-D", pg->data, "-m", "fast", "-w", "-t", "30", NULL };
        int ok;

        snprintf(pgctl, sizeof pgctl, "%s/pg_ctl", pg->bindir);
        snprintf(log, sizeof log, "%s/pg_ctl.log", pg->dir);
        ok = run(pg, argv, log) == 0 && wait_exit(pg->pid, PGTMP_STOP_TIMEOUT_MS);
        if (!ok) {
            /* pg_ctl failed or the postmaster lingers: SIGINT is the same fast
             * shutdown, then immediate shutdown, then no more asking. */
            kill(pg->pid, SIGINT);
            if (!wait_exit(pg->pid, PGTMP_STOP_TIMEOUT_MS)) {
                kill(pg->pid, SIGQUIT);
                if (!wait_exit(pg->pid, 5000)) {
                    kill(pg->pid, SIGKILL);
                    wait_exit(pg->pid, 5000);
                }
            }
        }
        pg->pid = 0;
    }
    if (pg->dir[0]) {
        nftw(pg->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        pg->dir[0] = '\0';
    }
}

PgTmp *
pgtmp_start(char *err, size_t errlen)
{
    PgTmp *pg = calloc(1, sizeof *pg);
    const char *tmp = getenv("TMPDIR");
    char log[PATH_MAX + 16], tail[256], initdb[PATH_MAX + 16], postgres[PATH_MAX + 16];
    char sockopt[PATH_MAX + 32], portopt[32];
    int status;
    long waited;

    if (!pg) {
        seterr(err, errlen, "pgtmp: out of memory");
        return NULL;
    }
    if (find_bindir(pg->bindir, sizeof pg->bindir) == -1) {
        seterr(err, errlen, "pgtmp: no PostgreSQL server binaries (initdb, postgres) in "
               "$PGTMP_BINDIR, /usr/lib/postgresql/*/bin or $PATH");
        goto fail;
    }

    if (geteuid() == 0) {
        struct passwd pw, *res = NULL;
        char buf[1024];

        if (getpwnam_r("postgres", &pw, buf, sizeof buf, &res) != 0 || !res) {
            seterr(err, errlen, "pgtmp: running as root, but there is no 'postgres' user "
                   "to run the server as");
            goto fail;
        }
        pg->as_user = 1;
        pg->uid = pw.pw_uid;
        pg->gid = pw.pw_gid;
    }

    /* The socket path must fit sockaddr_un (108 bytes): fall back to /tmp. */
    if (!tmp || !*tmp || strlen(tmp) > 60)
        tmp = "/tmp";
    snprintf(pg->dir, sizeof pg->dir, "%s/pgtmp.XXXXXX", tmp);
    if (!mkdtemp(pg->dir)) {
        seterr(err, errlen, "pgtmp: mkdtemp %s: %s", pg->dir, strerror(errno));
        pg->dir[0] = '\0';
        goto fail;
    }
    if (pg->as_user && chown(pg->dir, pg->uid, pg->gid) == -1) {
        seterr(err, errlen, "pgtmp: chown %s: %s", pg->dir, strerror(errno));
        goto fail;
    }
    snprintf(pg->data, sizeof pg->data, "%s/data", pg->dir);

    /* --no-sync only skips flushing initdb's own files; the server fsyncs. */
    snprintf(initdb, sizeof initdb, "%s/initdb", pg->bindir);
    snprintf(log, sizeof log, "%s/initdb.log", pg->dir);
    {
        char *argv[] = { initdb, "-D", pg->data, "-U", "postgres", "-A", "trust",
                         "-E", "UTF8", "--locale=C", "--no-sync", NULL };

        status = run(pg, argv, log);
    }
    if (status != 0) {
        log_tail(log, tail, sizeof tail);
        seterr(err, errlen, "pgtmp: initdb failed (status %d): %s", status, tail);
        goto fail;
    }

    snprintf(postgres, sizeof postgres, "%s/postgres", pg->bindir);
    snprintf(log, sizeof log, "%s/postgres.log", pg->dir);
    snprintf(sockopt, sizeof sockopt, "unix_socket_directories=%s", pg->dir);
    snprintf(portopt, sizeof portopt, "port=%d", PGTMP_PORT);
    {
        char *argv[] = { postgres, "-D", pg->data,
                         "-c", "listen_addresses=", "-c", sockopt, "-c", portopt,
                         "-c", "fsync=on", "-c", "synchronous_commit=on",
                         "-c", "logging_collector=off", NULL };

        pg->pid = spawn(pg, argv, log, 1);
    }
    if (pg->pid == -1) {
        pg->pid = 0;
        seterr(err, errlen, "pgtmp: fork: %s", strerror(errno));
        goto fail;
    }

    for (waited = 0; !is_ready(pg); waited += 10) {
        pid_t r = waitpid(pg->pid, &status, WNOHANG);

        if (r == pg->pid) {
            pg->pid = 0;
            log_tail(log, tail, sizeof tail);
            seterr(err, errlen, "pgtmp: postgres exited during startup: %s", tail);
            goto fail;
        }
        if (waited >= PGTMP_START_TIMEOUT_MS) {
            seterr(err, errlen, "pgtmp: postgres not ready after %d s (log %s)",
                   PGTMP_START_TIMEOUT_MS / 1000, log);
            goto fail;
        }
        sleep_ms(10);
    }

    snprintf(pg->conninfo, sizeof pg->conninfo,
             "host=%s port=%d dbname=postgres user=postgres", pg->dir, PGTMP_PORT);
    return pg;

fail:
    stop0(pg);
    free(pg);
    return NULL;
}

const char *
pgtmp_conninfo(const PgTmp *pg)
{
    return pg->conninfo;
}

void
pgtmp_stop(PgTmp *pg)
{
    if (!pg)
        return;
    stop0(pg);
    free(pg);
}
