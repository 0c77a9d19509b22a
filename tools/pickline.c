/* pickline.c: the main program of `pickline`.
 *
 *     pickline check PIPELINE.yml              validate the file, print the stage graph
 *     pickline run PIPELINE.yml [--data DIR]   the engine (SIGHUP: reload, by re-executing
 *                                              itself after a drain)
 *
 * Exit status: 0 ok, 1 failure, 2 usage. */
#include "engine.h"
#include "pipeline.h"
#include "pl.h"
#include "kinds.h"
#include "version.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_OK = 0, ST_FAIL = 1, ST_USAGE = 2 }; /* exit statuses */

static const char help_main[] =
    "usage: pickline COMMAND [ARGS]\n\n"
    "pickline is a real-time ETL engine: durable queues between the stages of a\n"
    "pipeline declared in a YAML file.\n\n"
    "commands:\n"
    "  run PIPELINE.yml [--data DIR]   run the engine\n"
    "  check PIPELINE.yml              validate the pipeline file, print the stage graph\n\n"
    "  --help                          this; 'pickline COMMAND --help' for one command\n"
    "  --version                       the version\n\n"
    "Exit status: 0 ok, 1 failure, 2 usage.\n";

static const char help_check[] =
    "usage: pickline check PIPELINE.yml\n\n"
    "Reads the pipeline file and checks it: the YAML, every key of every section\n"
    "and stage kind, that each queue a stage reads or writes is declared under\n"
    "queues:, and that every ${VAR} the file uses is set (see pickline.yml(5)).\n"
    "Prints \"FILE: ok, N queues, M stages\" and the stage graph in\n"
    "the order of the flow, or the first problem as FILE:LINE: what; hint (on\n"
    "stderr, exit status 1). Nothing is opened or started.\n";

static const char help_run[] =
    "usage: pickline run PIPELINE.yml [--data DIR] [--port N] [--log-level LEVEL]\n"
    "                    [--log-format text|json] [--log-file PATH] [--verbose]\n\n"
    "Runs the engine on the pipeline: the stages work their queues until SIGTERM\n"
    "or SIGINT, then drain (stop reserving, let in-flight jobs finish for the\n"
    "pipeline's drain: time, release the rest, commit) and exit 0. The data\n"
    "directory is --data, else the pipeline's data:, else $PICKLINE_DATA, else\n"
    "./pickline-data. --port overrides the listener's port.\n\n"
    "Signals: SIGHUP reads the pipeline file again; when it checks, the engine\n"
    "drains and restarts in place with it (same process, queues and data kept),\n"
    "else it logs why and runs on. SIGUSR1 reopens the log file (after a log\n"
    "rotator renamed it).\n\n"
    "Logs: one line per event, to stderr or --log-file PATH (appended to).\n"
    "--log-level error|warn|info|debug (default info; --verbose is debug).\n"
    "--log-format text (default: TIME LEVEL [stage=S] [job=N] MESSAGE) or json\n"
    "(one object per line: time, level, message, stage, job).\n";

/* main_argv: the command line, for a reload's exec. */
static char **main_argv;

/* reexec starts this program again in this process with the same command
 * line, for a reload: the engine has drained and closed, all but the data
 * directory's lock (lock_fd), which stays open across the exec so that no
 * other engine takes the directory in between. Returns when a SIGTERM or
 * SIGINT came meanwhile (then the reload is a stop), or exec failed. */
static void reexec(int lock_fd)
{
    char fd[16];
    sigset_t set;
    /* The signals wait, pending, for the new engine to take them. */
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    if (engine_stop_signaled()) {
        pl_log(PL_LOG_INFO, "engine: stopped instead of reloading (a signal asked to)");
        return;
    }
    if (lock_fd > 2) {
        fcntl(lock_fd, F_SETFD, 0);
        snprintf(fd, sizeof fd, "%d", lock_fd);
        setenv("PICKLINE_LOCK_FD", fd, 1);
    }
    fflush(NULL);
    execv("/proc/self/exe", main_argv);
    fprintf(stderr, "pickline: cannot restart for the reload (exec /proc/self/exe): %s\n",
            strerror(errno));
    exit(ST_FAIL);
}

static int usage(const char *cmd, const char *what, const char *arg)
{
    fprintf(stderr, "pickline: %s%s%s\n", what, arg ? " " : "", arg ? arg : "");
    if (cmd)
        fprintf(stderr, "run 'pickline %s --help' for its usage\n", cmd);
    else
        fputs("run 'pickline --help' for the commands\n", stderr);
    return ST_USAGE;
}

static int has_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    }
    return 0;
}

/* cmd_check: argv holds the arguments after "check". */
static int cmd_check(int argc, char **argv)
{
    const char *path = NULL;
    char err[1024];
    Pipeline *p;
    int flags = 1, rc;

    for (int i = 0; i < argc; i++) {
        if (flags && strcmp(argv[i], "--") == 0)
            flags = 0;
        else if (flags && argv[i][0] == '-' && argv[i][1])
            return usage("check", "unknown flag", argv[i]);
        else if (path)
            return usage("check", "unexpected argument", argv[i]);
        else
            path = argv[i];
    }
    if (!path)
        return usage("check", "missing PIPELINE.yml", NULL);
    if ((rc = pipeline_load(path, stage_kind_specs, &p, err, sizeof err))) {
        fprintf(stderr, "%s\n", err[0] ? err : pl_strerror(rc));
        return ST_FAIL;
    }
    printf("%s: ok, %zu queue%s, %zu stage%s\n", path, p->nqueues, p->nqueues == 1 ? "" : "s",
           p->nstages, p->nstages == 1 ? "" : "s");
    pipeline_graph(p, stdout);
    pipeline_free(p);
    return ST_OK;
}

/* cmd_run: argv holds the arguments after "run". */
static int cmd_run(int argc, char **argv)
{
    const char *path = NULL, *data = NULL, *log_file = NULL;
    unsigned long port = 0;
    char err[1024];
    Pipeline *p;
    Engine *e;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0) {
            if (++i == argc)
                return usage("run", "--data needs a directory", NULL);
            data = argv[i];
        } else if (strcmp(argv[i], "--port") == 0) {
            char *end;
            if (++i == argc)
                return usage("run", "--port needs a number", NULL);
            errno = 0;
            port = strtoul(argv[i], &end, 10);
            if (errno || *end || port == 0 || port > 65535)
                return usage("run", "--port must be 1..65535, not", argv[i]);
        } else if (strcmp(argv[i], "--verbose") == 0) {
            pl_log_level = PL_LOG_DEBUG;
        } else if (strcmp(argv[i], "--log-level") == 0) {
            if (++i == argc || pl_log_level_parse(argv[i]) < 0)
                return usage("run", "--log-level needs one of error, warn, info, debug; not",
                             i < argc ? argv[i] : "nothing");
            pl_log_level = pl_log_level_parse(argv[i]);
        } else if (strcmp(argv[i], "--log-format") == 0) {
            if (++i == argc || pl_log_format_parse(argv[i]) < 0)
                return usage("run", "--log-format needs text or json; not",
                             i < argc ? argv[i] : "nothing");
            pl_log_format = pl_log_format_parse(argv[i]);
        } else if (strcmp(argv[i], "--log-file") == 0) {
            if (++i == argc || !argv[i][0])
                return usage("run", "--log-file needs a path", NULL);
            log_file = argv[i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return usage("run", "unknown flag", argv[i]);
        } else if (path) {
            return usage("run", "unexpected argument", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path)
        return usage("run", "missing PIPELINE.yml", NULL);
    if (log_file && (rc = pl_log_open(log_file)) != 0) {
        fprintf(stderr, "pickline: cannot open the log file '%s': %s\n", log_file, strerror(rc));
        return ST_FAIL;
    }
    if ((rc = pipeline_load(path, stage_kind_specs, &p, err, sizeof err))) {
        fprintf(stderr, "%s\n", err[0] ? err : pl_strerror(rc));
        return ST_FAIL;
    }
    EngineOpts o = {.data_dir = data, .port = (unsigned)port, .lock_fd = -1};
    const char *handed = getenv("PICKLINE_LOCK_FD"); /* a reload's (reexec) */
    if (handed) {
        o.lock_fd = atoi(handed);
        unsetenv("PICKLINE_LOCK_FD");
        pl_log(PL_LOG_INFO, "engine: restarting with %s (reload)", path);
    }
    if ((rc = engine_open(p, stage_kinds, &o, &e, err, sizeof err))) {
        fprintf(stderr, "pickline: %s\n", err[0] ? err : pl_strerror(rc));
        pipeline_free(p);
        return ST_FAIL;
    }
    rc = engine_run(e);
    int reload = rc == 0 && engine_reloading(e), lock_fd = reload ? engine_take_lock(e) : -1;
    engine_close(e);
    pipeline_free(p);
    if (reload)
        reexec(lock_fd); /* returns when a signal made it a stop */
    return rc ? ST_FAIL : ST_OK;
}

int main(int argc, char **argv)
{
    int rc;
    main_argv = argv;
    if (argc < 2)
        return usage(NULL, "no command given", NULL);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(help_main, stdout);
        rc = ST_OK;
    } else if (strcmp(argv[1], "--version") == 0) {
        printf("pickline %s\n", pl_version);
        rc = ST_OK;
    } else if (strcmp(argv[1], "check") == 0) {
        if (has_help(argc - 2, argv + 2)) {
            fputs(help_check, stdout);
            rc = ST_OK;
        } else {
            rc = cmd_check(argc - 2, argv + 2);
        }
    } else if (strcmp(argv[1], "run") == 0) {
        if (has_help(argc - 2, argv + 2)) {
            fputs(help_run, stdout);
            rc = ST_OK;
        } else {
            rc = cmd_run(argc - 2, argv + 2);
        }
    } else if (argv[1][0] == '-') {
        return usage(NULL, "unknown flag", argv[1]);
    } else {
        return usage(NULL, "unknown command", argv[1]);
    }
    if (fflush(stdout) != 0 && rc == ST_OK) {
        fprintf(stderr, "pickline: cannot write to stdout: %s\n", strerror(errno));
        rc = ST_FAIL;
    }
    return rc;
}
