/* proc.c: child processes of the bench programs (proc.h). */
#include "proc.h"

#include "pl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SAMPLE_NS 2000000L

int proc_start(Proc *p, char *const argv[], const char *out, const char *err)
{
    memset(p, 0, sizeof *p);
    snprintf(p->outpath, sizeof p->outpath, "%s", out ? out : "/dev/null");
    snprintf(p->errpath, sizeof p->errpath, "%s", err ? err : "/dev/null");
    fflush(stdout);
    fflush(stderr);
    p->t0_ns = pl_mono_ns();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(p->err, sizeof p->err, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int o = open(p->outpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int e = open(p->errpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || o < 0 || e < 0)
            _exit(126);
        dup2(in, 0);
        dup2(o, 1);
        dup2(e, 2);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

void proc_sample(Proc *p)
{
    char path[64], line[256];
    if (!p->pid)
        return;
    snprintf(path, sizeof path, "/proc/%d/status", (int)p->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        double kib;
        if (sscanf(line, "VmHWM: %lf", &kib) == 1 && kib / 1024 > p->hwm_mib)
            p->hwm_mib = kib / 1024;
        else if (sscanf(line, "RssAnon: %lf", &kib) == 1 && kib / 1024 > p->anon_mib)
            p->anon_mib = kib / 1024;
        else if (sscanf(line, "RssFile: %lf", &kib) == 1 && kib / 1024 > p->file_mib)
            p->file_mib = kib / 1024;
    }
    fclose(f);
}

static void tail_of(const char *path, char *out, size_t n)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    while (k && (buf[k - 1] == '\n' || buf[k - 1] == ' '))
        buf[--k] = '\0';
    const char *s = buf + k;
    for (int lines = 0; s > buf && lines < 3; s--)
        if (s[-1] == '\n')
            lines++;
    size_t len = strlen(s) < n - 1 ? strlen(s) : n - 1;
    memcpy(out, s, len);
    out[len] = '\0';
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '"' || *c == '\\')
            *c = *c == '\n' ? ' ' : '\'';
}

int proc_poll(Proc *p)
{
    if (!p->pid)
        return 0;
    proc_sample(p);
    int status;
    struct rusage ru;
    pid_t w = wait4(p->pid, &status, WNOHANG, &ru);
    if (w == 0 || (w < 0 && errno == EINTR))
        return 1;
    p->secs = (double)(pl_mono_ns() - p->t0_ns) / 1e9;
    if (w < 0) {
        snprintf(p->err, sizeof p->err, "wait4: %s", strerror(errno));
        p->status = -1;
        p->pid = 0;
        return 0;
    }
    p->status = status;
    /* ru_maxrss counts what the parent had resident when it forked (Linux
     * keeps the pre-exec high-water mark); VmHWM, read while it ran, is the
     * program's own. */
    p->rss_mib = p->hwm_mib > 0 ? p->hwm_mib : (double)ru.ru_maxrss / 1024.0;
    p->cpu_s = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    p->pid = 0;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char t[300];
        tail_of(p->errpath, t, sizeof t);
        if (!t[0])
            tail_of(p->outpath, t, sizeof t);
        if (WIFEXITED(status))
            snprintf(p->err, sizeof p->err, "exited %d: %s", WEXITSTATUS(status), t);
        else
            snprintf(p->err, sizeof p->err, "killed by signal %d: %s", WTERMSIG(status), t);
    }
    return 0;
}

static int result(const Proc *p)
{
    return p->status == 0 ? 0 : -1;
}

int proc_wait(Proc *p, double timeout_s)
{
    uint64_t end = timeout_s < 0 ? 0 : pl_mono_ns() + (uint64_t)(timeout_s * 1e9);
    while (proc_poll(p)) {
        if (end && pl_mono_ns() >= end)
            return 1;
        struct timespec ts = {0, SAMPLE_NS};
        nanosleep(&ts, NULL);
    }
    return result(p);
}

int proc_stop(Proc *p, int sig, double timeout_s)
{
    if (!p->pid)
        return result(p);
    kill(p->pid, sig);
    int rc = proc_wait(p, timeout_s);
    if (rc == 1) {
        kill(p->pid, SIGKILL);
        rc = proc_wait(p, -1);
        if (rc == 0)
            rc = -1;
    }
    return rc;
}

int proc_run(Proc *p, char *const argv[], const char *out, const char *err)
{
    if (proc_start(p, argv, out, err) != 0)
        return -1;
    return proc_wait(p, -1);
}

/* stat_times reads utime, stime, cutime, cstime (clock ticks) of path
 * (/proc/PID/stat or /proc/PID/task/TID/stat); 0 or -1. */
static int stat_times(const char *path, double t[4], int *ppid, char *comm, size_t commn)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    char *open = strchr(buf, '('), *close = strrchr(buf, ')');
    if (!open || !close)
        return -1;
    if (comm) {
        size_t cl = (size_t)(close - open - 1) < commn - 1 ? (size_t)(close - open - 1) : commn - 1;
        memcpy(comm, open + 1, cl);
        comm[cl] = '\0';
    }
    /* After ") ": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime */
    char state;
    int pp;
    unsigned long long v[13];
    if (sscanf(close + 2, "%c %d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
               &state, &pp, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9],
               &v[10], &v[11], &v[12]) != 15)
        return -1;
    double hz = (double)sysconf(_SC_CLK_TCK);
    t[0] = (double)v[9] / hz;
    t[1] = (double)v[10] / hz;
    t[2] = (double)v[11] / hz;
    t[3] = (double)v[12] / hz;
    if (ppid)
        *ppid = pp;
    return 0;
}

double proc_cpu(pid_t pid)
{
    char path[64];
    double t[4];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    return stat_times(path, t, NULL, NULL, 0) == 0 ? t[0] + t[1] : 0;
}

double proc_tree_cpu(pid_t pid)
{
    char path[300];
    double t[4], sum = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (stat_times(path, t, NULL, NULL, 0) != 0)
        return 0;
    sum = t[0] + t[1] + t[2] + t[3];
    DIR *d = opendir("/proc");
    if (!d)
        return sum;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        int pp;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        if (stat_times(path, t, &pp, NULL, 0) == 0 && pp == pid)
            sum += t[0] + t[1];
    }
    closedir(d);
    return sum;
}

double proc_thread_cpu(pid_t pid, const char *prefix)
{
    char path[300], comm[64];
    double t[4], sum = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/stat", (int)pid, e->d_name);
        if (stat_times(path, t, NULL, comm, sizeof comm) == 0 &&
            !strncmp(comm, prefix, strlen(prefix)))
            sum += t[0] + t[1];
    }
    closedir(d);
    return sum;
}

void proc_self_dir(char *dir, size_t n)
{
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0) {
        snprintf(dir, n, ".");
        return;
    }
    self[k] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    snprintf(dir, n, "%s", self);
}
