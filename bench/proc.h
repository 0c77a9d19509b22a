/* proc.h: child processes of the bench programs: start one with its output
 * in files, sample its memory while it runs, wait for it with a deadline,
 * and read the CPU time of a process, its threads, or a process tree (a
 * PostgreSQL server with its backends).
 *
 * Children are waited for by pid only (wait4 on that pid): a throwaway
 * PostgreSQL (pgtmp.h) may be a child of the same process. */
#ifndef PL_BENCH_PROC_H
#define PL_BENCH_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct Proc {
    pid_t pid;              /* 0 when not running */
    unsigned long long t0_ns;
    double secs;            /* wall time from start to exit */
    double cpu_s;           /* user + system CPU (wait4's rusage) */
    double rss_mib;         /* peak RSS: VmHWM as last sampled (else wait4's ru_maxrss) */
    double hwm_mib;         /* VmHWM of /proc/PID/status, last sample */
    double anon_mib;        /* peaks of RssAnon (heap, stacks) and RssFile (mapped */
    double file_mib;        /* files, e.g. LMDB's map), sampled from /proc/PID/status */
    int status;             /* wait status once exited */
    char outpath[300], errpath[300];
    char err[400];          /* why it failed: the end of its stderr */
} Proc;

/* proc_start runs argv (argv[0] looked up in $PATH) with stdin from
 * /dev/null and stdout, stderr appended to the files out and err (NULL:
 * /dev/null). Returns 0, or -1 with p->err set. */
int proc_start(Proc *p, char *const argv[], const char *out, const char *err);

/* proc_sample reads the child's RssAnon and RssFile and keeps their peaks. */
void proc_sample(Proc *p);

/* proc_poll samples the child and reaps it if it exited: 1 while it runs,
 * 0 once it has exited (p filled). */
int proc_poll(Proc *p);

/* proc_wait waits up to timeout_s (< 0: forever) for the child to exit,
 * sampling its memory every 2 ms. Returns 0 when it exited with status 0,
 * 1 when it is still running at the deadline, -1 when it failed (p->err
 * says how, with the end of its stderr). */
int proc_wait(Proc *p, double timeout_s);

/* proc_stop sends sig and waits up to timeout_s; then SIGKILL and waits.
 * Returns as proc_wait (0: exited 0 after the signal). */
int proc_stop(Proc *p, int sig, double timeout_s);

/* proc_run is proc_start and proc_wait without a deadline. */
int proc_run(Proc *p, char *const argv[], const char *out, const char *err);

/* proc_cpu returns the user + system CPU seconds of live process pid
 * (0 when it is gone). */
double proc_cpu(pid_t pid);

/* proc_tree_cpu returns the CPU seconds of pid and its descendants: its own,
 * those of the children it has reaped (cutime, cstime), and those of its
 * live children (one level: a postmaster's backends and workers). */
double proc_tree_cpu(pid_t pid);

/* proc_thread_cpu returns the CPU seconds of the threads of pid whose name
 * (comm, as set by pthread_setname_np) starts with prefix; 0 if none. */
double proc_thread_cpu(pid_t pid, const char *prefix);

/* proc_self_dir writes the directory of the running program into dir
 * (for sibling binaries: qload, pickline next to the bench). */
void proc_self_dir(char *dir, size_t n);

#endif
