/* pgtmp: a throwaway PostgreSQL cluster for benchmarks and tests.
 *
 * The cluster lives in a fresh directory (mkdtemp under $TMPDIR or /tmp) that holds
 * the data directory, the server's logs and its unix socket; nothing listens on TCP.
 * It is durable like a production cluster (fsync=on, synchronous_commit=on) so that
 * commit timings mean something. The superuser is "postgres", authentication is
 * trust, the locale is C.
 *
 * The server binaries are taken from $PGTMP_BINDIR when set, else from the highest
 * /usr/lib/postgresql/<version>/bin that has initdb (Debian layout), else from the
 * directory on $PATH that has both initdb and postgres. `pg_config --bindir` is not
 * used: on Debian it names the client-only directory.
 *
 * When the process runs as root, initdb, postgres and pg_ctl run as the 'postgres'
 * user (they refuse root) and the directory is chowned to it.
 *
 * Not thread-safe per handle; separate handles are independent. */
#ifndef PGTMP_H
#define PGTMP_H

#include <stddef.h>

typedef struct PgTmp PgTmp;

/* pgtmp_start initdb's a new cluster in a fresh temporary directory, starts postgres
 * on a unix socket in that directory (listen_addresses='') with fsync=on and
 * synchronous_commit=on, and waits (up to 60 s) until it is ready to accept
 * connections. Returns the handle, which the caller releases with pgtmp_stop, or
 * NULL with a one-line message in err (at most errlen bytes, NUL-terminated) and
 * nothing left behind: no server, no directory.
 *
 * The postmaster is a child of the calling thread and is bound to it: if that thread
 * or the whole process ends without pgtmp_stop, the kernel sends the postmaster
 * SIGQUIT (immediate shutdown), so a crashed benchmark leaves no server running (the
 * directory stays). Call pgtmp_start and pgtmp_stop from a thread that outlives the
 * cluster, normally the main thread. The caller must not reap children with
 * waitpid(-1, ...) or SIGCHLD=SIG_IGN while the cluster runs. */
PgTmp *pgtmp_start(char *err, size_t errlen);

/* pgtmp_conninfo returns the libpq connection string of the running cluster,
 * "host=<sockdir> port=<port> dbname=postgres user=postgres". The string belongs to
 * pg and is valid until pgtmp_stop. */
const char *pgtmp_conninfo(const PgTmp *pg);

/* pgtmp_stop shuts the server down with `pg_ctl stop -m fast` (escalating to SIGQUIT,
 * then SIGKILL, if it has not exited after 30 s), reaps it, removes the whole
 * directory and frees pg. Open client connections are terminated by the shutdown.
 * NULL is a no-op. */
void pgtmp_stop(PgTmp *pg);

#endif
