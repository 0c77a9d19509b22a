/* peer: the same put -> reserve -> delete workload as qbench's, run against other
 * durable queues so that one benchmark run can print ratios.
 *
 * Each peer runs one producer thread and one consumer thread, each with its own
 * connection, for n cycles of a `body`-byte job. Every acknowledgement the peers
 * wait for is durable (fsync'd) on the server side, like ours. The wall time runs
 * from the moment both connections are set up to the consumer's last delete (ack);
 * server start-up, connecting and schema set-up are not timed.
 *
 * Latency (p50/p99) is put-to-durable, measured per put from sending it to reading
 * its durable acknowledgement, only when batch == 1; with batch > 1 both are 0.
 *
 * The functions run synchronously in the calling thread (which they use to own the
 * server child process) and are not meant to be called concurrently. */
#ifndef PEER_H
#define PEER_H

#include <stddef.h>

#include "pgtmp.h"

typedef struct PeerResult {
    double cycles_per_s;   /* completed put->reserve->delete cycles per second */
    double p50_us, p99_us; /* put-to-durable latency percentiles (microseconds), when measured; else 0 */
    char err[256];         /* non-empty when the peer could not be run (binary missing, ...) */
} PeerResult;

/* peer_beanstalkd_run starts `beanstalkd -l 127.0.0.1 -p <free port> -b <workdir>/binlog
 * -f 0` (fsync on every write; `-z <body>` is added when body exceeds beanstalkd's
 * default 65535-byte job limit), then runs n cycles with body size `body` bytes: one
 * producer thread and one consumer thread, each with its own TCP connection
 * (TCP_NODELAY).
 *
 * With batch > 1 each thread pipelines up to `batch` commands per round trip (write
 * them, then read their replies): the producer `put`s; the consumer sends the deletes
 * of the jobs it reserved in the previous round followed by `batch` (fewer at the
 * end) `reserve-with-timeout 1`, the same ack-previous-and-take-next shape as the
 * PostgreSQL peer. With batch == 1 each thread waits for every reply before its next
 * command (ping-pong): put; reserve, then delete.
 *
 * workdir is created when missing (and then removed again); <workdir>/binlog is
 * created, a stale unlocked one from an earlier crashed run is emptied first. At the
 * end the server is killed (SIGTERM, then SIGKILL after 2 s) and reaped, and the
 * binlog directory removed, on error paths too. Returns 0 with r filled, or -1 with
 * r->err set (beanstalkd not on $PATH, server died, protocol error, ...). */
int peer_beanstalkd_run(const char *workdir, size_t body, size_t batch, size_t n, PeerResult *r);

/* peer_beanstalkd_puts starts beanstalkd like peer_beanstalkd_run and runs
 * `conns` connections (one thread each) that put `body`-byte jobs for
 * `seconds`, each waiting for its INSERTED (durable: -f 0) before the next
 * put. r->cycles_per_s is the total of puts per second. */
int peer_beanstalkd_puts(const char *workdir, size_t body, unsigned conns, double seconds, PeerResult *r);

/* peer_pg_run runs the same cycle against a PostgreSQL queue table, (re)created in
 * pg's postgres database at the start and dropped at the end:
 *   CREATE TABLE q (id bigserial primary key, pri int not null, state smallint not null
 *                   default 0, lease_until timestamptz, body bytea not null);
 *   CREATE INDEX q_ready ON q (pri, id) WHERE state = 0;
 * One producer connection inserts `batch` rows per transaction with one multi-row
 * INSERT (a prepared INSERT ... SELECT over unnest of a binary bytea[] parameter).
 * One consumer connection, per transaction (one statement, one round trip), deletes
 * the previous batch it leased (ack) and leases the next `batch` rows:
 *   UPDATE q SET state=1, lease_until=now()+'60s' WHERE id IN (SELECT id FROM q WHERE
 *   state=0 ORDER BY pri,id LIMIT $batch FOR UPDATE SKIP LOCKED) RETURNING id, body
 * (both in one statement through data-modifying CTEs). When it finds nothing to lease
 * and had nothing to ack it sleeps 100 us before asking again. Both connections run
 * in their own thread with synchronous_commit=on; the run fails if the server has
 * fsync off. `pg` is a started PgTmp, still owned by the caller. Returns 0 with r
 * filled, or -1 with r->err set. */
int peer_pg_run(PgTmp *pg, size_t body, size_t batch, size_t n, PeerResult *r);

#endif
