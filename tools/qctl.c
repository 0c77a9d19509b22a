/* qctl.c: the command line of pickline's queues, for operators and scripts.
 *
 *     qctl [--data DIR] [--json] COMMAND [ARGS]
 *
 * Every command parses and checks all of its input before it opens the data
 * directory, so bad input changes nothing. Then it runs one or a few short
 * transactions (store_run for writes, store_read for reads) and prints only
 * after the commit returned 0: `qctl put` printing an id means the job is on
 * disk. No transaction is held across a sleep or a wait for the user; only
 * export holds its read transaction while it writes (a consistent snapshot,
 * see there). Output is a tidy table for people, or JSON with --json.
 * The staging commands (schema, batches, rejects) read the models of the
 * pipeline kept in the store and the batches and rejects of staging.h.
 * Exit status: 0 ok, 1 failure, 2 usage (bad command, flag or number).
 *
 * This file holds the command table (every command's synopsis, help and
 * flags), help, the argument parser, main, and what every command uses: its
 * flags and the data directory. The commands themselves are by concept:
 * qctl_jobs.c (put, reserve, the operations on one job, peek, show, export,
 * import), qctl_queues.c (kick, purge, pause, create, configure, stats,
 * info, verify, compact), qctl_staging.c (schema, batches), qctl_rejects.c
 * (rejects), qctl_top.c (top), qctl_edit.c (edit); qctl.h is what they
 * share, cli.h what qctl shares with qload. */
#include "qctl.h"

#include "json.h"
#include "pl.h"
#include "store.h"
#include "version.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- flags */

const char *qctl_opt(const Ctx *c, const char *name)
{
    for (int i = 0; i < MAX_FLAGS && c->cmd->flags[i].name; i++)
        if (strcmp(c->cmd->flags[i].name, name) == 0)
            return c->val[i];
    PL_ASSERT(0, "a command reads only the flags it declares");
}

/* ------------------------------------------------------------- messages */

int qctl_usage(const Ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_vnote(fmt, ap);
    va_end(ap);
    if (c->cmd)
        fprintf(stderr, "usage: qctl %s %s\nrun 'qctl %s --help' for details\n",
                c->cmd->name, c->cmd->synopsis, c->cmd->name);
    else
        fputs("run 'qctl --help' for the commands\n", stderr);
    return CLI_USAGE;
}

/* --------------------------------------------------------------- numbers */

int qctl_flag_u64(const Ctx *c, const char *name, uint64_t min, uint64_t max, uint64_t def,
                  uint64_t *out)
{
    const char *v = qctl_opt(c, name);
    *out = def;
    if (v && cli_parse_u64(v, min, max, out))
        return qctl_usage(c, "--%s: '%s' is not a whole number from %" PRIu64 " to %" PRIu64,
                          name, v, min, max);
    return CLI_OK;
}

int qctl_flag_ms(const Ctx *c, const char *name, uint64_t min, uint64_t max, uint64_t def,
                 uint64_t *out)
{
    const char *v = qctl_opt(c, name);
    *out = def;
    if (v && cli_parse_ms(v, min, max, out))
        return qctl_usage(c, "--%s: '%s' is not a number of seconds from %s to %s "
                             "(to the millisecond, like 0.25)", name, v, cli_secs(min).s,
                          cli_secs(max).s);
    return CLI_OK;
}

int qctl_arg_text(const Ctx *c, const char *name, const char *v, size_t max)
{
    size_t n = v ? strlen(v) : 1;
    if (n == 0)
        return qctl_usage(c, "--%s is empty", name);
    if (n > max)
        return qctl_usage(c, "--%s is %zu bytes, over the limit of %zu", name, n, max);
    /* Text is UTF-8: anything else could not come back intact through
     * --json, export and import. */
    size_t bad = v ? json_utf8_bad(v, n) : n;
    if (bad < n)
        return qctl_usage(c, "--%s is not valid UTF-8 (byte %zu); give text", name, bad);
    return CLI_OK;
}

/* ------------------------------------------------------- the data directory */

int qctl_room_fail(const Ctx *c, int rc)
{
    return cli_errorf("no room for new jobs in '%s' (%s); acks and deletes still work; "
                      "free space or raise the map limit", c->dir, pl_strerror(rc));
}

int qctl_open_fail(const Ctx *c, int rc)
{
    struct stat st;
    if (rc == PL_ENOTDATA && stat(c->dir, &st) == 0 && !S_ISDIR(st.st_mode))
        rc = ENOTDIR;
    switch (rc) {
    case ENOENT:
        if (stat(c->dir, &st) == 0 && S_ISDIR(st.st_mode))
            return cli_errorf("no pickline data in '%s' yet; it is created by the first 'qctl "
                              "put', or pass --data DIR or set PICKLINE_DATA", c->dir);
        return cli_errorf("no data directory at '%s'; it is created by the first 'qctl put', "
                          "or pass --data DIR or set PICKLINE_DATA", c->dir);
    case PL_ENOTDATA:
    case PL_ECORRUPT:
        if (*store_error())
            return cli_errorf("%s", store_error());
        return cli_errorf("'%s' is not a pickline data directory (it holds other files); "
                          "pass --data with an empty or pickline directory", c->dir);
    case ENOTDIR:
        return cli_errorf("'%s' is not a directory; pass --data with a pickline data directory",
                          c->dir);
    case EACCES:
    case EPERM:
        return cli_errorf("permission denied on data directory '%s': qctl needs to read and "
                          "write it (LMDB keeps its lock file there); run as its owner or fix "
                          "its permissions", c->dir);
    case EROFS:
        return cli_errorf("data directory '%s' is on a read-only file system: qctl needs to "
                          "write its lock file; copy it somewhere writable", c->dir);
    case PL_EFORMAT:
        if (*store_error())
            return cli_errorf("%s", store_error());
        return cli_errorf("data directory '%s' was written by a newer pickline (unknown "
                          "format); use a newer qctl", c->dir);
    case ENOSPC:
    case PL_EFULL:
        return qctl_room_fail(c, rc);
    default:
        return cli_errorf("cannot open data directory '%s': %s", c->dir, pl_strerror(rc));
    }
}

int qctl_open(Ctx *c, int mode)
{
    StoreOpts o = {0};
    int rc;
    if (c->s)
        return CLI_OK;
    o.create = mode == OPEN_CREATE;
    o.readonly = mode == OPEN_READ;
    if ((rc = store_open(c->dir, &o, &c->s)) != 0)
        return qctl_open_fail(c, rc);
    return CLI_OK;
}

/* ------------------------------------------------------------------ help */

#define LEASE_FLAG {"lease", "T", "act only while this lease (from reserve) is held"}
#define STATE_FLAG {"state", "S", "ready, delayed, reserved, buried or all (default)"}
#define CONF_FLAGS                                                                        \
    {"ttr", "S", "seconds a reserve leases a job for (default 60)"},                      \
    {"max-attempts", "N", "reserves before a failing job is buried; 0: no limit (default 10)"}, \
    {"backoff", "S", "first retry delay of release --backoff (default 1)"},               \
    {"backoff-max", "S", "ceiling of the doubling backoff (default 3600)"},               \
    {"max-body", "BYTES", "largest body a put accepts (default 1048576)"},               \
    {"key-retention", "S", "seconds an idempotency key outlives its job; 0: not (default 86400)"}

static const Cmd cmds[] = {
    {"put", qctl_put, "QUEUE [--pri N] [--delay S] [--ttr S] [--key K] [JSON|-]",
     "add a job; print its id once it is on disk",
     "Adds a job to QUEUE (created with default settings if missing) and prints\n"
     "the new job's id alone on a line, only once the job is on disk. The body is\n"
     "the JSON argument, or stdin when it is '-' or absent: one valid JSON value\n"
     "(the whitespace around it is not kept). With --key, if a live job of the\n"
     "queue holds the key, nothing is added and that job's id is printed.\n"
     "--json: {\"id\":N,\"existed\":false}",
     1, 2,
     {{"pri", "N", "priority, 0 the most urgent .. 4294967295 (default 1024)"},
      {"delay", "S", "seconds until the job is ready (default 0)"},
      {"ttr", "S", "seconds a reserve leases the job for (default: the queue's)"},
      {"key", "K", "idempotency key, at most 200 bytes"}}},
    {"reserve", qctl_reserve, "QUEUE [--timeout S] [--ttr S]",
     "lease the most urgent ready job and print it",
     "Leases the most urgent ready job of QUEUE and prints it: a header line\n"
     "(id, queue, priority, attempts, lease), then the body. With --timeout it tries\n"
     "again every 20 ms until a job is ready or the time is up. When none is\n"
     "ready: exit status 1 and nothing on stdout. Finish the job with\n"
     "'qctl ack ID --lease T', or give it back with 'qctl release ID --lease T'.\n"
     "--json: one job object, as 'qctl show --help' describes",
     1, 1,
     {{"timeout", "S", "wait up to S seconds for a job (default 0: one try)"},
      {"ttr", "S", "lease length (default: the job's)"}}},
    {"ack", qctl_ack, "ID [--lease T]", "delete a job whose work is done",
     "Deletes job ID: its work is done. With --lease, only while that lease\n"
     "(from reserve) is held; without it, whatever the job's state.\n"
     "--json: {\"id\":N,\"queue\":\"Q\",\"state\":\"deleted\",\"was\":\"reserved\"}",
     1, 1, {LEASE_FLAG}},
    {"delete", qctl_delete, "ID", "delete a job in any state",
     "Deletes job ID whatever its state.\n"
     "--json: {\"id\":N,\"queue\":\"Q\",\"state\":\"deleted\",\"was\":\"S\"}",
     1, 1, {{NULL, NULL, NULL}}},
    {"release", qctl_release, "ID [--delay S | --backoff] [--error E] [--lease T]",
     "put a reserved job back to ready or delayed",
     "Puts reserved job ID back: ready now, delayed by --delay S, or delayed by the\n"
     "queue's doubling backoff (--backoff). --error keeps why, for peek and show.\n"
     "A job that used all its queue's attempts is buried instead.\n"
     "--json: {\"id\":N,\"queue\":\"Q\",\"state\":\"S\",\"was\":\"reserved\","
     "\"due_ms\":T|null,\"attempts\":N}",
     1, 1,
     {{"delay", "S", "seconds until it is ready again"},
      {"backoff", NULL, "delay by the queue's backoff for its attempts so far"},
      {"error", "E", "the error that made the job fail (at most 1000 bytes)"},
      LEASE_FLAG}},
    {"bury", qctl_bury, "ID [--reason R] [--lease T]", "set a job aside with a reason",
     "Sets job ID aside (ready, delayed or reserved) until it is kicked.\n"
     "--json: as release",
     1, 1,
     {{"reason", "R", "why (default: \"" DEFAULT_REASON "\")"}, LEASE_FLAG}},
    {"touch", qctl_touch, "ID [--lease T]", "extend a reserved job's lease",
     "Extends the lease of reserved job ID to its ttr from now.\n--json: as release",
     1, 1, {LEASE_FLAG}},
    {"kick", qctl_kick, "QUEUE [N]", "move buried jobs back to ready (default: all)",
     "Moves up to N buried jobs of QUEUE (oldest first; default all buried now)\n"
     "back to ready, with their attempts counted afresh.\n"
     "--json: {\"queue\":\"Q\",\"kicked\":N}",
     1, 2, {{NULL, NULL, NULL}}},
    {"kick-job", qctl_kick_job, "ID", "move one buried or delayed job to ready",
     "Moves job ID, buried or delayed, to ready.\n--json: as release", 1, 1, {{NULL, NULL, NULL}}},
    {"peek", qctl_peek, "QUEUE [--state ready|delayed|reserved|buried|all] [--limit N]",
     "list jobs without changing them",
     "Lists jobs of QUEUE in the order they would be served (ready, delayed,\n"
     "reserved, buried), changing nothing: id, state, priority, attempts, age,\n"
     "when due, last error and the start of the body.\n"
     "--json: an array of job objects (see 'qctl show --help')",
     1, 1, {STATE_FLAG, {"limit", "N", "at most N jobs (default 20; 0: all)"}}},
    {"show", qctl_show, "ID", "print one job in full",
     "Prints job ID in full.\n"
     "--json: {\"id\":N,\"queue\":\"Q\",\"state\":\"ready|delayed|reserved|buried\",\n"
     "  \"priority\":N,\"attempts\":N,\"kicks\":N,\"created_ms\":T,\"due_ms\":T|null,\n"
     "  \"ttr_ms\":N,\"lease\":\"T\"|null,\"key\":\"K\"|null,\"error\":\"E\"|null,\n"
     "  \"body\":JSON}  (times in ms since the epoch; the lease token as a string)",
     1, 1, {{NULL, NULL, NULL}}},
    {"edit", qctl_edit, "ID | --reject ID | --row ID | --row MODEL KEY [ROW_ID] [--body FILE|-]",
     "fix a stuck job's body, a reject's row or a staged row",
     "Opens what is named in $VISUAL (else $EDITOR, else vi), or reads it from\n"
     "--body FILE ('-': stdin), checks it and writes it back in one transaction:\n"
     "  ID                     the body of job ID (JSON; refused while the job is\n"
     "                         reserved: a worker holds it)\n"
     "  --reject ID            the row of reject ID, before 'qctl rejects replay'\n"
     "  --row ID               the staged row that job ID references\n"
     "  --row MODEL KEY [N]    staged row instance N of MODEL/KEY (0: a legacy row)\n"
     "A row must be a JSON object that passes every rule of its model (it is\n"
     "written normalised, as validate writes it), and a staged row keeps its key.\n"
     "Nothing is written when it was changed by someone else meanwhile, or when\n"
     "the check fails: the message names the file that holds the edit.\n"
     "--json: {\"edited\":true,\"what\":\"job|reject|row\",\"id\":N,...,\"bytes\":N}",
     1, 3,
     {{"body", "FILE", "read the new text from FILE ('-': stdin), not an editor"},
      {"reject", NULL, "ID is a reject: edit its row"},
      {"row", NULL, "edit a staged row: the one job ID references, or MODEL KEY [ROW_ID]"},
      {"pipeline", "FILE", "the models from FILE, not from the data directory"}}},
    {"purge", qctl_purge, "QUEUE [--state S]", "delete the jobs of a queue",
     "Deletes every job of QUEUE (or those in one state), 10000 per transaction.\n"
     "--json: {\"queue\":\"Q\",\"purged\":N}",
     1, 1, {STATE_FLAG}},
    {"pause", qctl_pause, "QUEUE", "stop handing out jobs of a queue",
     "Pauses QUEUE: puts go on, reserve hands out nothing until it is resumed.\n"
     "--json: {\"queue\":\"Q\",\"paused\":true}",
     1, 1, {{NULL, NULL, NULL}}},
    {"resume", qctl_resume, "QUEUE", "hand out jobs of a paused queue again",
     "Resumes QUEUE.\n--json: {\"queue\":\"Q\",\"paused\":false}", 1, 1, {{NULL, NULL, NULL}}},
    {"create", qctl_create,
     "QUEUE [--ttr S] [--max-attempts N] [--backoff S] [--backoff-max S] [--max-body BYTES]\n"
     "      [--key-retention S]",
     "create a queue with settings",
     "Creates QUEUE; settings not given take the defaults.\n"
     "--json: {\"queue\":\"Q\",\"conf\":{\"ttr_ms\":N,\"max_attempts\":N,\"backoff_ms\":N,\n"
     "  \"backoff_max_ms\":N,\"max_body\":N,\"key_retention_s\":N}}",
     1, 1, {CONF_FLAGS}},
    {"configure", qctl_configure,
     "QUEUE [--ttr S] [--max-attempts N] [--backoff S] [--backoff-max S] [--max-body BYTES]\n"
     "      [--key-retention S]",
     "change (or show) a queue's settings",
     "Changes only the settings given; with none, shows them. Jobs already put\n"
     "keep their own ttr.\n--json: as create",
     1, 1, {CONF_FLAGS}},
    {"stats", qctl_stats, "[QUEUE]", "depths by state, totals, and the data map",
     "Prints per queue the jobs by state, the totals so far, the age of the oldest\n"
     "ready job and whether it is paused; then the data map and the staged rows\n"
     "(as 'qctl info').\n"
     "--json: one object keyed by queue name (the staged rows are in\n"
     "'qctl info --json'): {\"Q\":{\"ready\":N,\"delayed\":N,\n"
     "  \"reserved\":N,\"buried\":N,\"puts\":N,\"reserves\":N,\"acks\":N,\"releases\":N,\n"
     "  \"buries\":N,\"kicks\":N,\"expiries\":N,\"deletes\":N,\"paused\":false,\n"
     "  \"oldest_ready_ms\":N|null,\"created_ms\":T,\"conf\":{...}}}",
     0, 1, {{NULL, NULL, NULL}}},
    {"queues", qctl_stats, "[QUEUE]", "the same as stats", "The same as 'qctl stats'.",
     0, 1, {{NULL, NULL, NULL}}},
    {"info", qctl_info, "", "the data map: size, use, free pages, readers, staged rows",
     "Prints the LMDB map of the data directory: its size and limit, pages in\n"
     "use and free, the file's size and the readers; and the staged rows: the\n"
     "rows in flight between the stages, by model, which the batch stage deletes\n"
     "as it appends them to batches (legacy rows, staged by a pickline before\n"
     "row instances, are counted apart: the line never deletes them).\n"
     "--json: {\"path\":\"DIR\",\"map_size\":N,\"map_max\":N,\"page_size\":N,\n"
     "  \"used_pages\":N,\"used_bytes\":N,\"free_pages\":N,\"file_size\":N,\"headroom\":N,\n"
     "  \"readers\":N,\"max_readers\":N,\"staged\":{\"rows\":N,\"refs\":N,\"legacy\":N,\n"
     "  \"bytes\":N,\"models\":{\"M\":{\"rows\":N,\"refs\":N,\"legacy\":N,\"bytes\":N}}}}",
     0, 0, {{NULL, NULL, NULL}}},
    {"export", qctl_export, "QUEUE > jobs.ndjson", "write a queue's jobs as NDJSON",
     "Writes every job of QUEUE to stdout, one JSON object per line (the shape of\n"
     "'qctl show --json'), as one consistent snapshot.",
     1, 1, {{NULL, NULL, NULL}}},
    {"import", qctl_import, "QUEUE < jobs.ndjson", "put the jobs of an NDJSON file",
     "Reads one job per line from stdin ({\"priority\":N,\"key\":\"K\"|null,\"body\":JSON};\n"
     "other members, like the rest of what export writes, are ignored) and puts\n"
     "them as new ready jobs, 1000 per transaction. Every line is checked first:\n"
     "a bad line imports nothing.\n"
     "--json: {\"queue\":\"Q\",\"imported\":N,\"existed\":N}",
     1, 1, {{NULL, NULL, NULL}}},
    {"schema", qctl_schema, "[--pipeline FILE] [--json | --ddl]",
     "the models: fields, rules, keys, relations, load order",
     "Prints the models of the pipeline the engine runs (kept in the data\n"
     "directory; --pipeline FILE reads a file instead, and then needs no data\n"
     "directory) in load order, parents first: per model its table, key and drift\n"
     "policy, one line per field with its type and rules, and its relations.\n"
     "--ddl: the CREATE TABLE statements qload --create-tables runs.\n"
     "'qctl schema diff --target DSN' compares them with the warehouse's tables.\n"
     "--json: {\"models\":[{\"name\",\"table\",\"drift\",\"key\":[..],\"on_delete\",\n"
     "  \"version\",\"fields\":[..],\"belongs_to\":[..],\"has_n\":[..]}],\"load_order\":[..]}",
     0, 0,
     {{"pipeline", "FILE", "read the models from FILE, not from the data directory"},
      {"ddl", NULL, "print the SQL DDL of the models"}}},
    {"schema diff", qctl_schema_diff, "--target DSN [--pipeline FILE] [--model M]",
     "the models against the warehouse's tables",
     "Compares each model's table in the warehouse (read from pg_catalog, nothing\n"
     "is changed) with the model, in load order, and lists the changes: create\n"
     "(a missing table), add (a property the table lacks: with its type, NOT NULL\n"
     "and default), widen (a longer string), which `qload --migrate` makes; and\n"
     "refuse, with the reason, which it never makes: a type change, a narrowed or\n"
     "dropped column, a new key column, a new required column without a default.\n"
     "The target is --target DSN, else $PICKLINE_TARGET. Exit status 0 whether or\n"
     "not there are changes (see in_sync), 1 when the warehouse cannot be read.\n"
     "--json: {\"in_sync\":B,\"models\":[{\"model\",\"table\",\"changes\":[{\"column\",\n"
     "  \"action\",\"model_type\",\"table_type\",\"sql\",\"reason\"}]}]}",
     0, 0,
     {{"target", "DSN", "libpq conninfo or URI of the warehouse (default $PICKLINE_TARGET)"},
      {"pipeline", "FILE", "read the models from FILE, not from the data directory"},
      {"model", "M", "compare only model M"}}},
    {"batches", qctl_batches,
     "[show|seal|release|retry|fail|prune] [--state S] [--model M] [--limit N]",
     "staged batches: list, show, seal, release, retry, fail, prune",
     "Lists the batches of staged rows, the newest last: id, model, state, rows\n"
     "(appended less those qload moved to the rejects), rejects counted while open,\n"
     "age and error; then the totals by state. States: open (taking rows), sealed\n"
     "(ready for qload), held (too many rejects: an operator releases or fails it),\n"
     "loading, loaded, failed (qload gave up; retry seals it again).\n"
     "--json: an array of {\"id\":N,\"model\":\"M\",\"state\":\"S\",\"rows\":N,\"removed\":N,\n"
     "  \"rejects\":N,\"created_ms\":T,\"sealed_ms\":T|null,\"loaded_ms\":T|null,\n"
     "  \"attempts\":N,\"error\":\"E\"|null,\"model_version\":\"HEX\"|null}  (the newest N\n"
     "  with --limit; model_version: the version of the model its rows were\n"
     "  validated with, which qload loads them with)",
     0, 0,
     {{"state", "S", "open, sealed, held, loading, loaded, failed or all (default)"},
      {"model", "M", "only the batches of model M"},
      {"limit", "N", "the newest N batches (default 20; 0: all)"}}},
    {"batches show", qctl_batches_show, "ID [--rows N]", "one batch and its first rows",
     "Prints batch ID and its first N rows (seq and the row as JSON). A loaded\n"
     "batch's rows are dropped: they are in the warehouse.\n"
     "--json: the batch object of 'qctl batches --json' with one more member,\n"
     "  \"data\":[{\"seq\":N,\"row\":{...}}]",
     1, 1, {{"rows", "N", "print the first N rows (default 10; 0: none)"}}},
    {"batches seal", qctl_batches_seal, "MODEL | --all", "seal the open batch now",
     "Seals the open batch of MODEL (or of every model with --all) now, whatever\n"
     "its size and age, so that qload loads it. An open batch without rows is\n"
     "left open. The hold threshold is not applied: the operator decided.\n"
     "--json: an array of the sealed batches (as 'qctl batches --json')",
     0, 1, {{"all", NULL, "seal the open batch of every model"}}},
    {"batches release", qctl_batches_release, "ID", "accept a held batch (held -> sealed)",
     "Accepts held batch ID after a look at its rejects: it becomes sealed and\n"
     "qload loads it. Only a held batch can be released.\n"
     "--json: the batch object, and \"was\":\"held\"",
     1, 1, {{NULL, NULL, NULL}}},
    {"batches retry", qctl_batches_retry, "ID", "load a failed batch again (failed -> sealed)",
     "Seals failed batch ID again so that qload retries it (fix the cause first:\n"
     "'qctl batches show ID' says the last error). Only a failed batch can be\n"
     "retried.\n--json: the batch object, and \"was\":\"failed\"",
     1, 1, {{NULL, NULL, NULL}}},
    {"batches fail", qctl_batches_fail, "ID [--reason R]", "give up a held or sealed batch",
     "Marks held or sealed batch ID failed, with the reason, so that qload\n"
     "leaves it ('qctl batches retry ID' takes it back).\n"
     "--json: the batch object, and \"was\":\"held|sealed\"",
     1, 1, {{"reason", "R", "why (default: \"" DEFAULT_FAIL_REASON "\")"}}},
    {"batches prune", qctl_batches_prune, "[--older-than S]", "forget loaded batches",
     "Deletes the records of batches loaded more than S seconds ago (default\n"
     "604800, a week), and any rows left of them. A loaded batch is in the\n"
     "warehouse and its ledger (pickline_ledger) keeps the history; other states\n"
     "are never touched.\n--json: {\"pruned\":N}",
     0, 0, {{"older-than", "S", "only batches loaded more than S seconds ago (0: all)"}}},
    {"rejects", qctl_rejects, "[show|export|replay|drop] [MODEL] [--limit N]",
     "rejected rows: list, show, export, replay, drop",
     "Lists the rejected rows (of MODEL, or all), oldest first: id, model, key,\n"
     "the stage that rejected it, age, and the failed rules with their messages.\n"
     "A model named like a subcommand goes after --: 'qctl rejects -- show'.\n"
     "--json: an array of {\"id\":N,\"model\":\"M\",\"key\":\"K\",\"stage\":\"S\",\n"
     "  \"queue\":\"Q\"|null,\"batch\":N|null,\"time_ms\":T,\"row\":{...},\n"
     "  \"errors\":[{\"field\",\"rule\",\"message\"}],\"job\":JSON|null}",
     0, 1, {{"limit", "N", "at most N rejects (default 20; 0: all)"}}},
    {"rejects show", qctl_rejects_show, "ID", "one reject in full",
     "Prints reject ID: its model, key, stage, the queue a replay puts its job on\n"
     "(none: a replay appends the row to its model's open batch), errors, the row\n"
     "and the job.\n--json: one object, as 'qctl rejects --json'",
     1, 1, {{NULL, NULL, NULL}}},
    {"rejects export", qctl_rejects_export, "[MODEL] > rejects.ndjson",
     "write the rejects as NDJSON",
     "Writes every reject (of MODEL, or all) to stdout, one JSON object per line\n"
     "(the shape of 'qctl rejects --json'), as one consistent snapshot.",
     0, 1, {{NULL, NULL, NULL}}},
    {"rejects replay", qctl_rejects_replay, "ID [--row JSON|-] | --all [MODEL]",
     "put a reject back on the line",
     "Puts reject ID back on the line in one transaction and deletes it: its row\n"
     "(or the fixed row of --row, a JSON object; '-' reads stdin) becomes the\n"
     "staged row and its job goes back on its queue; prints the new job's id.\n"
     "A reject without a queue (qload's) goes into its model's open batch\n"
     "instead: the row is first checked against the model (a row that breaks a\n"
     "rule is refused and the reject stays); prints \"appended to batch N\".\n"
     "--all replays every reject (of MODEL) with its stored row; those whose row\n"
     "is still invalid stay (exit status 1).\n"
     "--json: {\"id\":N,\"model\":\"M\",\"job\":N|null,\"batch\":N|null}; --all:\n"
     "  {\"replayed\":N,\"jobs\":N,\"appended\":N,\"invalid\":N,\"gone\":N}",
     0, 1,
     {{"row", "JSON", "the fixed row, a JSON object ('-': read it from stdin)"},
      {"all", NULL, "replay every reject (of MODEL)"},
      {"pipeline", "FILE", "the models from FILE, not from the data directory"}}},
    {"rejects drop", qctl_rejects_drop, "ID", "delete a reject for good",
     "Deletes reject ID: its row is not replayed.\n--json: {\"id\":N,\"dropped\":true}",
     1, 1, {{NULL, NULL, NULL}}},
    {"top", qctl_top, "[--interval S] [--iterations N]", "live view of the queues",
     "Redraws the queues (jobs by state, put/reserve/ack rates per second, oldest\n"
     "ready), the data map, and the batches by state and the rejects every\n"
     "interval, until 'q', Ctrl-C or SIGTERM.",
     0, 0,
     {{"interval", "S", "seconds between refreshes (default 1)"},
      {"iterations", "N", "stop after N refreshes (default: until q)"}}},
    {"verify", qctl_verify, "[--max-problems N]", "check every record of the data directory",
     "Reads every record of the data directory in one snapshot (the engine may\n"
     "run) and checks it: every record decodes, every job has its one index entry\n"
     "and its queue, every index entry and key names a job that agrees, and each\n"
     "queue's counters equal its jobs. Prints one line per problem (the record and\n"
     "what is wrong), then a summary; exits 1 when it found any. Repairs nothing.\n"
     "--json: {\"problems\":[{\"record\":\"job 3\",\"problem\":\"...\"}],\n"
     "  \"problem_count\":N,\"records\":N,...,\"ok\":BOOL}",
     0, 0, {{"max-problems", "N", "print at most N problems (default 1000)"}}},
    {"compact", qctl_compact, "DEST_DIR", "write a compacted copy of the data",
     "Writes a compacted copy of the data directory into DEST_DIR (new or empty)\n"
     "and prints the sizes before and after. The engine may keep running.\n"
     "--json: {\"source\":\"DIR\",\"dest\":\"DIR\",\"before_bytes\":N,\"used_bytes\":N,\n"
     "  \"after_bytes\":N}",
     1, 1, {{NULL, NULL, NULL}}},
};

#define NCMDS (sizeof cmds / sizeof cmds[0])

/* The global flags, before or after the command. The parser reads the
 * first two from the table; --help (and -h) it knows by itself. */
enum { G_DATA, G_JSON };
static const CliFlag globals[] = {
    {"data", "DIR", "the data directory (default: $PICKLINE_DATA, else " CLI_DEFAULT_DIR ")"},
    {"json", NULL, "output for scripts"},
    {"help", NULL, "this; 'qctl COMMAND --help' for one command"},
};

static void help_main(FILE *f)
{
    fputs("usage: qctl [--data DIR] [--json] COMMAND [ARGS]\n\n"
          "Inspects and repairs pickline's durable job queues, staged batches and\n"
          "rejected rows.\n\ncommands:\n", f);
    for (size_t i = 0; i < NCMDS; i++)
        if (!strchr(cmds[i].name, ' ')) /* subcommands: in their command's help */
            fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
    fputs("\nglobal flags (before or after the command):\n", f);
    cli_flags_help(f, globals, 3, 11);
    fputs("  --version   the version\n", f);
    fputs("\nTimes are in seconds, fractions allowed (0.25). Exit status: 0 ok,\n"
          "1 failure (or no job ready for reserve), 2 usage.\n", f);
}

static void help_cmd(const Cmd *cmd, FILE *f)
{
    fprintf(f, "usage: qctl [--data DIR] [--json] %s %s\n\n%s\n", cmd->name, cmd->synopsis,
            cmd->help);
    if (cmd->flags[0].name) {
        fputs("\nflags:\n", f);
        cli_flags_help(f, cmd->flags, MAX_FLAGS, 20);
    }
    for (size_t i = 0, n = strlen(cmd->name), first = 1; i < NCMDS; i++) {
        if (strncmp(cmds[i].name, cmd->name, n) != 0 || cmds[i].name[n] != ' ')
            continue;
        if (first)
            fputs("\nsubcommands ('qctl CMD SUB --help' for one):\n", f);
        first = 0;
        fprintf(f, "  %-16s %s\n", cmds[i].name, cmds[i].summary);
    }
    fputs("\nglobal flags: --data DIR (default: $PICKLINE_DATA, else " CLI_DEFAULT_DIR
          "), --json\n", f);
}

/* ------------------------------------------------------------ arguments */

static const Cmd *cmd_find(const char *name)
{
    for (size_t i = 0; i < NCMDS; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

/* sub_find finds subcommand a of cmd ("batches" "show": "batches show"). */
static const Cmd *sub_find(const Cmd *cmd, const char *a)
{
    size_t n = strlen(cmd->name);
    for (size_t i = 0; i < NCMDS; i++)
        if (strncmp(cmds[i].name, cmd->name, n) == 0 && cmds[i].name[n] == ' ' &&
            strcmp(cmds[i].name + n + 1, a) == 0)
            return &cmds[i];
    return NULL;
}

static void seterr(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* seterr keeps the first problem found (the parse goes on to find --help). */
static void seterr(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    if (err[0])
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* args_parse fills c from argv. Global flags go anywhere; a command's flags
 * after the command; "--" ends the flags. Sets *help for -h/--help, and err
 * to the first problem (empty when none). */
static void args_parse(Ctx *c, int argc, char **argv, int *help, char *err, size_t cap)
{
    const Cmd *sub;
    const char *v;
    int flags = 1, k, f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (flags && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                flags = 0;
            } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                *help = 1;
            } else if ((k = cli_flag_take(globals, 2, 1, argc, argv, &i, &v, &f)) != CLI_ARG_NONE) {
                if (k == CLI_ARG_SWITCH)
                    seterr(err, cap, "--json takes no value");
                if (k == G_JSON || k == CLI_ARG_SWITCH)
                    c->json = 1;
                else if (k == CLI_ARG_NOVALUE || !*v)
                    seterr(err, cap, "--data needs a directory");
                else
                    c->dir = v;
            } else if (a[1] != '-') {
                seterr(err, cap, "unknown flag '%s'", a);
            } else if (!c->cmd ||
                       (k = cli_flag_take(c->cmd->flags, MAX_FLAGS, 1, argc, argv, &i, &v, &f)) ==
                           CLI_ARG_NONE) {
                int n = (int)strcspn(a + 2, "=");
                if (c->cmd)
                    seterr(err, cap, "unknown flag '--%.*s' for '%s'", n, a + 2, c->cmd->name);
                else
                    seterr(err, cap, "unknown flag '--%.*s' (a command's flags go after it)", n,
                           a + 2);
            } else if (k == CLI_ARG_SWITCH) {
                seterr(err, cap, "--%s takes no value", c->cmd->flags[f].name);
                c->val[f] = "";
            } else if (k == CLI_ARG_NOVALUE) {
                seterr(err, cap, "--%s needs a value (%s)", c->cmd->flags[f].name,
                       c->cmd->flags[f].meta);
            } else {
                c->val[k] = v;
            }
        } else if (!c->cmd) {
            if (!(c->cmd = cmd_find(a))) {
                seterr(err, cap, "unknown command '%s'", a);
                return;
            }
        } else if (flags && c->npos == 0 && (sub = sub_find(c->cmd, a)) != NULL) {
            /* A subcommand: its flags are its own, so they go after it. */
            for (int j = 0; j < MAX_FLAGS; j++)
                if (c->val[j])
                    seterr(err, cap, "the flags of '%s' go after it", sub->name);
            memset(c->val, 0, sizeof c->val);
            c->cmd = sub;
        } else if (c->npos < c->cmd->max_pos) {
            c->pos[c->npos++] = a;
        } else if (c->npos == 0 && sub_find(c->cmd, "show")) {
            seterr(err, cap, "'%s' is not a subcommand of '%s'; see 'qctl %s --help'", a,
                   c->cmd->name, c->cmd->name);
        } else {
            seterr(err, cap, "unexpected argument '%s'", a);
        }
    }
}

/* ------------------------------------------------------------------ main */

/* std_fds makes sure fds 0, 1 and 2 are open before anything else is: run
 * with stdout closed, LMDB's data or lock file would become fd 1 and our
 * output would be written into it. A closed stdout gets /dev/null opened
 * read-only, so that writing the output still fails (and is reported:
 * reserve hands its job back); a closed stdin or stderr gets /dev/null. */
static void std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int n = open("/dev/null", fd == 2 ? O_WRONLY : O_RDONLY);
        if (n < 0)
            abort(); /* no /dev/null: nothing safe to do */
        if (n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

int main(int argc, char **argv)
{
    Ctx c = {0};
    char err[512] = "";
    int help = 0, rc;

    std_fds();
    cli_prog = "qctl";
    pl_log_level = PL_LOG_WARN; /* stderr is for problems; the engine's info lines are not */
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is a write error we report */
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("qctl %s\n", pl_version);
        rc = CLI_OK;
        goto out;
    }
    args_parse(&c, argc, argv, &help, err, sizeof err);
    if (help) {
        if (c.cmd)
            help_cmd(c.cmd, stdout);
        else
            help_main(stdout);
        rc = CLI_OK;
        goto out;
    }
    if (err[0])
        return qctl_usage(&c, "%s", err);
    if (!c.cmd)
        return qctl_usage(&c, "no command given");
    if (c.npos < c.cmd->min_pos)
        return qctl_usage(&c, "missing %.*s", (int)strcspn(c.cmd->synopsis, " "), c.cmd->synopsis);
    c.dir = cli_data_dir(c.dir);
    rc = c.cmd->run(&c);
    store_close(c.s);
out:
    if (fflush(stdout) != 0 && rc == CLI_OK)
        rc = cli_errorf("cannot write to stdout: %s", strerror(errno));
    return rc;
}
