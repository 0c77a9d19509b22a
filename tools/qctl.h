/* qctl.h: what the parts of qctl share: the options of a run (Ctx), the
 * command table's entries (Cmd), the helpers every command uses to read its
 * flags and open the data directory (qctl.c), the queue helpers of
 * qctl_queues.c that qctl_jobs.c and qctl_top.c use too, the row helpers of
 * qctl_staging.c that qctl_rejects.c uses, and every command's handler,
 * which qctl.c's table names. Each helper that finds a problem says so
 * itself (cli_errorf, qctl_usage) and returns the exit status: CLI_OK,
 * CLI_FAIL or CLI_USAGE. */
#ifndef QCTL_H
#define QCTL_H

#include "cli.h"
#include "queue.h"
#include "store.h"
#include "strbuf.h"

#include <stddef.h>
#include <stdint.h>

#define MAX_FLAGS 8 /* of a command */
#define MAX_POS 3   /* positional arguments of a command */
#define DEFAULT_REASON "buried by an operator (qctl)"
#define DEFAULT_FAIL_REASON "failed by an operator (qctl)"

typedef struct Ctx Ctx;

/* Cmd: one command of the table: its name ("batches show" for a
 * subcommand), handler, help and flags. */
typedef struct Cmd {
    const char *name;
    int (*run)(Ctx *c);
    const char *synopsis; /* what follows the name in the usage line */
    const char *summary;  /* one line, for the command list */
    const char *help;     /* the paragraph of `qctl CMD --help` */
    int min_pos, max_pos; /* positional arguments */
    CliFlag flags[MAX_FLAGS];
} Cmd;

/* Ctx: the options of this run (set once by the parser, then read) and the
 * store, opened by the command once its input is known to be good. */
struct Ctx {
    const char *dir;
    int json;
    const Cmd *cmd;
    const char *pos[MAX_POS];
    int npos;
    const char *val[MAX_FLAGS]; /* by index in cmd->flags; "" for a given switch */
    Store *s;
};

/* ------------------------------------------------- flags, the data dir */

/* qctl_opt returns the value of the command's flag name ("" for a given
 * switch), or NULL if not given. A command reads only the flags it
 * declares (asserted). */
const char *qctl_opt(const Ctx *c, const char *name);

/* qctl_usage prints the problem and the command's usage line (or where
 * the commands are listed); returns CLI_USAGE. */
int qctl_usage(const Ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* qctl_flag_u64 reads flag name as a whole number in [min, max] into *out,
 * def if absent. Returns CLI_OK, or CLI_USAGE after saying what is wrong. */
int qctl_flag_u64(const Ctx *c, const char *name, uint64_t min, uint64_t max, uint64_t def,
                  uint64_t *out);

/* qctl_flag_ms reads flag name as seconds into milliseconds in [min, max]
 * (as qctl_flag_u64). */
int qctl_flag_ms(const Ctx *c, const char *name, uint64_t min, uint64_t max, uint64_t def,
                 uint64_t *out);

/* qctl_arg_text checks a --key, --reason or --error value v: 1..max bytes
 * of UTF-8. CLI_OK or CLI_USAGE. */
int qctl_arg_text(const Ctx *c, const char *name, const char *v, size_t max);

/* How a command opens the data directory. */
enum { OPEN_READ, OPEN_WRITE, OPEN_CREATE };

/* qctl_open opens the store of c->dir into c->s (nothing if open): read
 * commands read-only; only put, create and import may create it. CLI_OK,
 * or CLI_FAIL after qctl_open_fail. */
int qctl_open(Ctx *c, int mode);

/* qctl_open_fail explains store_open's rc for c->dir; returns CLI_FAIL. */
int qctl_open_fail(const Ctx *c, int rc);

/* qctl_room_fail explains a full map or disk (rc); returns CLI_FAIL. */
int qctl_room_fail(const Ctx *c, int rc);

/* -------------------------------------------------- queues (qctl_queues.c) */

/* qctl_arg_queue checks a queue name. CLI_OK or CLI_USAGE. */
int qctl_arg_queue(const Ctx *c, const char *q);

/* qctl_queue_fail explains rc from an operation on queue q (no such
 * queue, paused, full, ...); returns CLI_FAIL. */
int qctl_queue_fail(const Ctx *c, int rc, const char *q);

/* qctl_read_stats reads the stats of queue q into *st: 0 or the store's
 * error (PL_ENOQUEUE ...). */
int qctl_read_stats(Ctx *c, const char *q, QueueStats *st);

/* ListOp: the stats of one queue (queue set) or of every queue, copied
 * out of the transaction at ms; v is the caller's to free. */
typedef struct ListOp {
    const char *queue;
    QueueStats *v;
    size_t n, cap;
    uint64_t ms;
} ListOp;

/* qctl_list_fn is a store_read callback filling the ListOp arg. */
int qctl_list_fn(Txn *t, void *arg);

/* ------------------------------------------------ rows (qctl_staging.c) */

/* qctl_arg_model checks a model name. CLI_OK or CLI_USAGE. */
int qctl_arg_model(const Ctx *c, const char *m);

/* qctl_row_json appends msgpack row mp[0..n) as JSON, or null when it
 * does not decode. */
void qctl_row_json(Strbuf *b, const void *mp, size_t n);

/* qctl_opt_u64_json appends the member ,"name":v, or ,"name":null for 0. */
void qctl_opt_u64_json(Strbuf *b, const char *name, uint64_t v);

/* -------------------------------------------------------------- commands */

/* The handlers of the command table; each returns the exit status. */
int qctl_put(Ctx *c); /* qctl_jobs.c */
int qctl_reserve(Ctx *c);
int qctl_ack(Ctx *c);
int qctl_delete(Ctx *c);
int qctl_release(Ctx *c);
int qctl_bury(Ctx *c);
int qctl_touch(Ctx *c);
int qctl_kick_job(Ctx *c);
int qctl_peek(Ctx *c);
int qctl_show(Ctx *c);
int qctl_export(Ctx *c);
int qctl_edit(Ctx *c); /* qctl_edit.c */
int qctl_import(Ctx *c);
int qctl_kick(Ctx *c); /* qctl_queues.c */
int qctl_purge(Ctx *c);
int qctl_pause(Ctx *c);
int qctl_resume(Ctx *c);
int qctl_create(Ctx *c);
int qctl_configure(Ctx *c);
int qctl_stats(Ctx *c);
int qctl_info(Ctx *c);
int qctl_verify(Ctx *c);
int qctl_compact(Ctx *c);
int qctl_schema(Ctx *c); /* qctl_staging.c */
int qctl_schema_diff(Ctx *c);
int qctl_batches(Ctx *c);
int qctl_batches_show(Ctx *c);
int qctl_batches_seal(Ctx *c);
int qctl_batches_release(Ctx *c);
int qctl_batches_retry(Ctx *c);
int qctl_batches_fail(Ctx *c);
int qctl_batches_prune(Ctx *c);
int qctl_rejects(Ctx *c); /* qctl_rejects.c */
int qctl_rejects_show(Ctx *c);
int qctl_rejects_export(Ctx *c);
int qctl_rejects_replay(Ctx *c);
int qctl_rejects_drop(Ctx *c);
int qctl_top(Ctx *c); /* qctl_top.c */

#endif
