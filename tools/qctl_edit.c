/* qctl_edit.c: qctl edit, an operator's fix of what is stuck: the body of
 * a job, the row of a reject before its replay, or a staged row.
 *
 *     qctl edit ID                          the body of job ID
 *     qctl edit --reject ID                 the row of reject ID
 *     qctl edit --row ID                    the staged row job ID references
 *     qctl edit --row MODEL KEY [ROW_ID]    a staged row (ROW_ID 0: a legacy row)
 *
 * The text goes into a temporary file that $VISUAL (else $EDITOR, else vi)
 * opens, or comes from --body FILE ('-': stdin). It is checked before
 * anything is written: a body must be JSON; a row must be a JSON object,
 * valid against its model (every rule, as the validate stage checks it),
 * and a staged row must keep its key. Then it is written in one
 * transaction, which first checks that what was read is still there
 * unchanged (nobody wrote it meanwhile) and that the job is not reserved (a
 * worker holds it and would ack the work it did on the old body). A row is
 * written in its normalised form (declared order, defaults), as validate
 * writes it. Whatever is refused after an edit, the edited text is kept in
 * its file and the message names it, so no work is lost. */
#include "qctl.h"

#include "json.h"
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "queue.h"
#include "row.h"
#include "staging.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { ED_JOB, ED_REJECT, ED_ROW };

typedef struct Edit {
    int what;
    uint64_t id;                    /* the job (ED_JOB, ED_ROW named by a job) or reject */
    int by_job;                     /* ED_ROW: named by job id */
    StagedRef ref;                  /* ED_ROW: the staged row */
    char queue[QUEUE_NAME_MAX + 1]; /* ED_JOB: its queue */
    char model[STAGING_MODEL_MAX + 1]; /* ED_REJECT: the reject's model */
    int state;                      /* the job's state when read */
    uint32_t max_body;              /* ED_JOB: of its queue */
    Strbuf cur;                     /* what is stored: the body, or the row (msgpack) */
    Strbuf text;                    /* what is edited: JSON */
    Strbuf next;                    /* what is written: the body, or the row (msgpack) */
    Strbuf key;                     /* ED_REJECT: the new key ("": keep) */
    int changed;                    /* the write found it changed since it was read */
} Edit;

/* ---------------------------------------------------------------- read */

/* job_ref reads the staged row reference in a job body (JSON). */
static int job_ref(const void *body, size_t len, StagedRef *ref)
{
    msgpack_sbuffer mp;
    RowView v;
    int rc = PL_EINVAL;
    msgpack_sbuffer_init(&mp);
    if (row_from_json_object(body, len, &mp, NULL, 0) == 0 && row_view(&v, mp.data, mp.size) == 0) {
        rc = staging_ref_parse(&v.root, ref);
        row_view_free(&v);
    }
    msgpack_sbuffer_destroy(&mp);
    return rc;
}

/* read_cur reads what e names into e->cur (and what describes it). Errors:
 * PL_ENOJOB, PL_ENOREJECT, PL_ENOROW, PL_EINVAL (a job that names no
 * staged row), the store's. */
static int read_cur(Txn *t, Edit *e)
{
    Job j;
    RejectRead r;
    const void *mp;
    size_t len;
    int rc;
    sb_reset(&e->cur);
    if (e->what == ED_REJECT) {
        if ((rc = reject_get(t, e->id, &r)) != 0)
            return rc;
        snprintf(e->model, sizeof e->model, "%s", r.model);
        sb_add(&e->cur, r.r.row, r.r.row_len);
        return 0;
    }
    if (e->what == ED_JOB || e->by_job) {
        if ((rc = queue_get(t, e->id, &j)) != 0)
            return rc;
        e->state = j.state;
        if (e->what == ED_JOB) {
            QueueStats st;
            snprintf(e->queue, sizeof e->queue, "%s", j.queue);
            e->max_body = queue_stats(t, j.queue, &st) == 0 ? st.conf.max_body : QUEUE_BODY_LIMIT;
            sb_add(&e->cur, j.body, j.len);
            return 0;
        }
        if (job_ref(j.body, j.len, &e->ref) != 0)
            return PL_EINVAL;
    }
    if ((rc = staging_row_get(t, e->ref.model, e->ref.key, e->ref.row, &mp, &len, NULL)) != 0)
        return rc;
    sb_add(&e->cur, mp, len);
    return 0;
}

static int read_fn(Txn *t, void *arg)
{
    return read_cur(t, arg);
}

/* ---------------------------------------------------------------- write */

static int write_fn(Txn *t, void *arg)
{
    Edit *e = arg;
    Strbuf was = e->cur;
    int rc;
    sb_init(&e->cur);
    e->changed = 0;
    rc = read_cur(t, e);
    if (!rc && (e->cur.len != was.len || memcmp(e->cur.buf, was.buf, was.len) != 0)) {
        e->changed = 1;
        rc = PL_ESTATE;
    } else if (!rc && (e->what == ED_JOB || e->by_job) && e->state == JOB_RESERVED)
        rc = PL_ESTATE;
    sb_free(&e->cur);
    e->cur = was;
    if (rc)
        return rc;
    switch (e->what) {
    case ED_JOB:
        return queue_set_body(t, e->id, e->next.buf, e->next.len);
    case ED_REJECT:
        return reject_set_row(t, e->id, e->next.buf, e->next.len, e->key.len ? e->key.buf : NULL);
    default:
        if ((rc = store_reserve(t, e->next.len + 64)) != 0)
            return rc;
        return staging_row_put(t, e->ref.model, e->ref.key, e->ref.row, e->next.buf, e->next.len);
    }
}

/* ---------------------------------------------------------------- names */

/* what_name writes what e edits, for messages: "job 7", "reject 3",
 * "staged row users/7 (instance 4)". */
static const char *what_name(const Edit *e, char *buf, size_t n)
{
    if (e->what == ED_JOB)
        snprintf(buf, n, "job %" PRIu64, e->id);
    else if (e->what == ED_REJECT)
        snprintf(buf, n, "reject %" PRIu64, e->id);
    else if (e->ref.row)
        snprintf(buf, n, "staged row %s/%s (instance %" PRIu64 ")", e->ref.model, e->ref.key,
                 e->ref.row);
    else
        snprintf(buf, n, "staged row %s/%s (legacy)", e->ref.model, e->ref.key);
    return buf;
}

/* ---------------------------------------------------------------- editor */

/* run_editor opens path in $VISUAL, else $EDITOR, else vi (through sh, so
 * that the variable may hold arguments), and waits for it. While it runs
 * qctl ignores SIGINT and SIGQUIT, as the editor's own keys. */
static int run_editor(const char *path)
{
    const char *ed = getenv("VISUAL");
    if (!ed || !*ed)
        ed = getenv("EDITOR");
    if (!ed || !*ed)
        ed = "vi";
    Strbuf cmd;
    sb_init(&cmd);
    sb_adds(&cmd, ed);
    sb_adds(&cmd, " \"$1\"");
    struct sigaction ign = {.sa_handler = SIG_IGN}, oint, oquit;
    sigemptyset(&ign.sa_mask);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd.buf, "sh", path, (char *)NULL);
        _exit(127);
    }
    int rc = CLI_OK, st = 0;
    if (pid < 0) {
        rc = cli_errorf("cannot start the editor '%s': %s", ed, strerror(errno));
        goto done;
    }
    sigaction(SIGINT, &ign, &oint);
    sigaction(SIGQUIT, &ign, &oquit);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    sigaction(SIGINT, &oint, NULL);
    sigaction(SIGQUIT, &oquit, NULL);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        rc = cli_errorf("the editor '%s' %s %d; nothing was written", ed,
                        WIFEXITED(st) ? "exited with" : "was killed by signal",
                        WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
done:
    sb_free(&cmd);
    return rc;
}

/* read_file reads path ('-': stdin) into b. */
static int read_file(const char *path, Strbuf *b)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return cli_errorf("cannot open '%s': %s", path, strerror(errno));
    int rc = sb_read(b, f, QUEUE_BODY_LIMIT);
    if (f != stdin)
        fclose(f);
    if (rc == EFBIG)
        return cli_errorf("'%s' is over %u bytes, more than any body or row may be", path,
                          QUEUE_BODY_LIMIT);
    if (rc)
        return cli_errorf("cannot read '%s': %s", strcmp(path, "-") ? path : "stdin",
                          strerror(rc));
    return CLI_OK;
}

/* ---------------------------------------------------------------- check */

/* check_row turns the edited text into the row to write (e->next): a JSON
 * object, valid against m (NULL: no model to check against), normalised,
 * whose key a staged row keeps. On a refusal it says why (naming src, the
 * file that holds the edit) and returns CLI_FAIL. */
static int check_row(Edit *e, const Model *m, const char *src)
{
    char err[300], name[600];
    msgpack_sbuffer in, norm;
    Strbuf errors, key;
    RowView v;
    size_t nerr = 0;
    int rc = CLI_FAIL;
    msgpack_sbuffer_init(&in);
    msgpack_sbuffer_init(&norm);
    sb_init(&errors);
    sb_init(&key);
    what_name(e, name, sizeof name);
    if (row_from_json_object(e->text.buf, e->text.len, &in, err, sizeof err) != 0) {
        cli_errorf("%s: the edited row is not a JSON object: %s; nothing was written (the edit "
                   "is in %s)", name, err, src);
        goto out;
    }
    if (!m) {
        sb_reset(&e->next);
        sb_add(&e->next, in.data, in.size);
        rc = CLI_OK;
        goto out;
    }
    if (row_view(&v, in.data, in.size) != 0) {
        cli_errorf("%s: the edited row does not decode", name);
        goto out;
    }
    int bad = model_validate(m, &v.root, &norm, &errors, &nerr) != 0;
    row_view_free(&v);
    if (bad) {
        cli_errorf("%s: the edited row breaks model '%s' (%zu rule%s): [%s]; nothing was written "
                   "(the edit is in %s; fix it and run qctl edit again with --body %s)", name,
                   m->name, nerr, nerr == 1 ? "" : "s", errors.buf, src, src);
        goto out;
    }
    if (row_view(&v, norm.data, norm.size) != 0) {
        cli_errorf("%s: the normalised row does not decode", name);
        goto out;
    }
    int keyed = m->nkey && model_row_key(m, &v.root, &key) == 0;
    row_view_free(&v);
    if (e->what == ED_ROW && keyed && strcmp(key.buf, e->ref.key) != 0) {
        cli_errorf("%s: the edited row's key fields give the key '%s', but the row is staged as "
                   "'%s'; a staged row keeps its key (put its key fields back); nothing was "
                   "written (the edit is in %s)", name, key.buf, e->ref.key, src);
        goto out;
    }
    if (e->what == ED_REJECT && keyed && key.len > STAGING_KEY_MAX) {
        cli_errorf("%s: the edited row's key is %zu bytes; a key holds at most %d; nothing was "
                   "written (the edit is in %s)", name, key.len, STAGING_KEY_MAX, src);
        goto out;
    }
    sb_reset(&e->key);
    if (e->what == ED_REJECT && keyed)
        sb_add(&e->key, key.buf, key.len);
    sb_reset(&e->next);
    sb_add(&e->next, norm.data, norm.size);
    rc = CLI_OK;
out:
    msgpack_sbuffer_destroy(&in);
    msgpack_sbuffer_destroy(&norm);
    sb_free(&errors);
    sb_free(&key);
    return rc;
}

/* ---------------------------------------------------------------- arguments */

static int arg_u64(const Ctx *c, const char *what, const char *s, uint64_t min, uint64_t *v)
{
    if (cli_parse_u64(s, min, UINT64_MAX, v))
        return qctl_usage(c, "%s '%s' is not a whole number from %" PRIu64, what, s, min);
    return CLI_OK;
}

static int edit_args(const Ctx *c, Edit *e)
{
    int rc, reject = qctl_opt(c, "reject") != NULL, row = qctl_opt(c, "row") != NULL;
    if (reject && row)
        return qctl_usage(c, "--reject and --row name different things; give one");
    e->what = reject ? ED_REJECT : row ? ED_ROW : ED_JOB;
    if (e->what != ED_ROW || c->npos == 1) {
        if (c->npos != 1)
            return qctl_usage(c, "give one %s id", reject ? "reject" : "job");
        e->by_job = e->what == ED_ROW;
        return arg_u64(c, reject ? "reject id" : "job id", c->pos[0], 1, &e->id);
    }
    /* --row MODEL KEY [ROW_ID] */
    if ((rc = qctl_arg_model(c, c->pos[0])))
        return rc;
    if (!c->pos[1][0] || strlen(c->pos[1]) > STAGING_KEY_MAX)
        return qctl_usage(c, "key '%.40s' is not a staged row's key (1 to %d bytes)", c->pos[1],
                          STAGING_KEY_MAX);
    snprintf(e->ref.model, sizeof e->ref.model, "%s", c->pos[0]);
    snprintf(e->ref.key, sizeof e->ref.key, "%s", c->pos[1]);
    e->ref.row = 0;
    if (c->npos > 2)
        return arg_u64(c, "row id", c->pos[2], 0, &e->ref.row);
    return CLI_OK;
}

/* read_fail explains why what e names could not be read. */
static int read_fail(const Ctx *c, const Edit *e, int rc)
{
    char name[600];
    what_name(e, name, sizeof name);
    switch (rc) {
    case PL_ENOJOB:
        return cli_errorf("job %" PRIu64 " does not exist (done or deleted?); see 'qctl peek "
                          "QUEUE'", e->id);
    case PL_ENOREJECT:
        return cli_errorf("reject %" PRIu64 " does not exist (replayed or dropped?); see 'qctl "
                          "rejects'", e->id);
    case PL_EINVAL:
        return cli_errorf("job %" PRIu64 " names no staged row (its body is not a reference "
                          "{\"model\",\"key\",\"row_id\"}); edit its body: qctl edit %" PRIu64,
                          e->id, e->id);
    case PL_ENOROW:
        return cli_errorf("%s does not exist in '%s' (batched, rejected or purged?)", name,
                          c->dir);
    default:
        return cli_errorf("cannot read %s: %s", name, pl_strerror(rc));
    }
}

/* ---------------------------------------------------------------- the command */

int qctl_edit(Ctx *c)
{
    Edit e;
    Pipeline *p = NULL;
    const Model *m = NULL;
    const char *body = qctl_opt(c, "body"), *src = body;
    char tmp[512], name[600], err[1024] = "";
    int rc, fd = -1, keep = 0;

    memset(&e, 0, sizeof e);
    sb_init(&e.cur);
    sb_init(&e.text);
    sb_init(&e.next);
    sb_init(&e.key);
    tmp[0] = '\0';
    if ((rc = edit_args(c, &e)) || (rc = qctl_open(c, OPEN_WRITE)))
        goto done;
    if ((rc = store_read(c->s, read_fn, &e)) != 0) {
        rc = read_fail(c, &e, rc);
        goto done;
    }
    what_name(&e, name, sizeof name);
    if ((e.what == ED_JOB || e.by_job) && e.state == JOB_RESERVED) {
        rc = cli_errorf("job %" PRIu64 " is reserved: a worker holds it and would finish the work "
                        "it began on what it read; edit it once it is released or buried (or "
                        "release it: qctl release %" PRIu64 ")", e.id, e.id);
        goto done;
    }
    if (e.what != ED_JOB) {
        const char *model = e.what == ED_REJECT ? e.model : e.ref.model;
        if ((rc = pipeline_from_store(c->s, qctl_opt(c, "pipeline"), &p, err, sizeof err)) != 0) {
            rc = cli_errorf("%s", err[0] ? err : pl_strerror(rc));
            goto done;
        }
        if (!(m = p->models ? models_find(p->models, model) : NULL))
            cli_note("note: pipeline '%s' declares no model '%s': the row is checked as a JSON "
                     "object only", p->path ? p->path : "?", model);
        sb_reset(&e.text);
        if (row_to_json(e.cur.buf, e.cur.len, &e.text) != 0) {
            rc = cli_errorf("%s does not decode as a row; it cannot be edited", name);
            goto done;
        }
    } else {
        sb_add(&e.text, e.cur.buf, e.cur.len);
    }

    if (body) {
        sb_reset(&e.text);
        if ((rc = read_file(body, &e.text)))
            goto done;
        if (!strcmp(body, "-"))
            src = "stdin";
    } else {
        const char *dir = getenv("TMPDIR");
        if (!dir || !*dir || strlen(dir) > 400)
            dir = "/tmp";
        snprintf(tmp, sizeof tmp, "%s/qctl-edit-XXXXXX.json", dir);
        if ((fd = mkstemps(tmp, 5)) < 0) {
            rc = cli_errorf("cannot make a temporary file for the editor (%s): %s", tmp,
                            strerror(errno));
            tmp[0] = '\0';
            goto done;
        }
        FILE *f = fdopen(fd, "wb");
        if (!f || fwrite(e.text.buf, 1, e.text.len, f) != e.text.len || fputc('\n', f) == EOF ||
            fclose(f) != 0) {
            rc = cli_errorf("cannot write the temporary file %s: %s", tmp, strerror(errno));
            goto done;
        }
        src = tmp;
        Strbuf before = e.text;
        sb_init(&e.text);
        rc = run_editor(tmp);
        if (!rc)
            rc = read_file(tmp, &e.text);
        size_t o1, o2, n1 = json_trim(e.text.buf, e.text.len, &o1),
                       n2 = json_trim(before.buf, before.len, &o2);
        int same = !rc && n1 == n2 && memcmp(e.text.buf + o1, before.buf + o2, n1) == 0;
        sb_free(&before);
        if (rc)
            goto done;
        if (same) {
            if (c->json)
                printf("{\"edited\":false}\n");
            else
                printf("%s: no change; nothing written\n", name);
            goto done;
        }
        keep = 1; /* until written */
    }

    if (e.what == ED_JOB) {
        char jerr[300];
        size_t off, n = json_trim(e.text.buf, e.text.len, &off);
        if (json_validate(e.text.buf, e.text.len, jerr, sizeof jerr) != 0) {
            rc = cli_errorf("%s: the edited body is not JSON: %s; nothing was written (the edit is "
                            "in %s)", name, jerr, src);
            goto done;
        }
        if (n > e.max_body) {
            rc = cli_errorf("%s: the edited body is %zu bytes, over queue '%s' max_body (%" PRIu32
                            " bytes); nothing was written (the edit is in %s)", name, n, e.queue,
                            e.max_body, src);
            goto done;
        }
        sb_reset(&e.next);
        sb_add(&e.next, e.text.buf + off, n);
    } else if ((rc = check_row(&e, m, src))) {
        goto done;
    }

    rc = store_run(c->s, write_fn, &e);
    if (rc == PL_ESTATE) {
        rc = cli_errorf("%s %s while it was edited; nothing was written; the edit is in %s",
                        name, e.changed ? "changed (the engine or another qctl wrote it)"
                        : "was reserved", src);
        goto done;
    }
    if (rc == PL_ENOJOB || rc == PL_ENOREJECT || rc == PL_ENOROW) {
        rc = cli_errorf("%s is gone since it was read (done, replayed or batched); nothing was "
                        "written", name);
        goto done;
    }
    if (rc == PL_EFULL || rc == ENOSPC || rc == MDB_MAP_FULL) {
        rc = qctl_room_fail(c, rc);
        goto done;
    }
    if (rc) {
        rc = cli_errorf("cannot write %s: %s; nothing was written", name, pl_strerror(rc));
        goto done;
    }
    keep = 0;
    if (c->json) {
        printf("{\"edited\":true,\"what\":\"%s\",\"id\":",
               e.what == ED_JOB ? "job" : e.what == ED_REJECT ? "reject" : "row");
        if (e.what == ED_ROW && !e.by_job)
            fputs("null", stdout);
        else
            printf("%" PRIu64, e.id);
        if (e.what == ED_ROW) {
            fputs(",\"model\":", stdout);
            json_put_string(stdout, e.ref.model, strlen(e.ref.model));
            fputs(",\"key\":", stdout);
            json_put_string(stdout, e.ref.key, strlen(e.ref.key));
            printf(",\"row_id\":%" PRIu64, e.ref.row);
        }
        printf(",\"bytes\":%zu}\n", e.next.len);
    } else {
        printf("%s: %s written (%zu bytes)\n", name, e.what == ED_JOB ? "body" : "row",
               e.next.len);
    }
    rc = CLI_OK;
done:
    if (tmp[0] && !keep)
        unlink(tmp);
    pipeline_free(p);
    sb_free(&e.cur);
    sb_free(&e.text);
    sb_free(&e.next);
    sb_free(&e.key);
    return rc;
}
