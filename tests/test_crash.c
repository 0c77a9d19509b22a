/* test_crash.c: SIGKILL a writer (prog_crashwriter) at random moments in a
 * stream of puts and acks, many times over one data directory, and check
 * after each kill: every put reported durable is there unless it was
 * reported reserved (only then can an ack be in flight), no acked job comes
 * back, and the queue's counters equal what
 * the indexes hold. Also: the group committer's own guarantees. */
#include "t.h"
#include "commit.h"
#include "pl.h"
#include "queue.h"

#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>

static char prog[1024];

typedef struct Log {
    uint64_t *put, *ack, *res;
    size_t nput, nack, nres, cput, cack, cres;
} Log;

static void log_add(uint64_t **a, size_t *n, size_t *cap, uint64_t v)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *a = realloc(*a, *cap * sizeof **a);
    }
    (*a)[(*n)++] = v;
}

static int cmp64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Run the writer for ms milliseconds, then SIGKILL it; parse its report. */
static void run_and_kill(unsigned seed, unsigned ms, Log *lg)
{
    int fd[2];
    T_OK(pipe(fd));
    pid_t pid = fork();
    T_CHECK(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        char sd[32];
        snprintf(sd, sizeof sd, "%u", seed);
        execl(prog, prog, t_dir(), sd, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    FILE *f = fdopen(fd[0], "r");
    char line[64];
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n < 3 || line[n - 1] != '\n')
            continue; /* a line cut by the kill reports nothing */
        uint64_t id = strtoull(line + 2, NULL, 10);
        if (line[0] == 'P')
            log_add(&lg->put, &lg->nput, &lg->cput, id);
        else if (line[0] == 'A')
            log_add(&lg->ack, &lg->nack, &lg->cack, id);
        else if (line[0] == 'R')
            log_add(&lg->res, &lg->nres, &lg->cres, id);
    }
    fclose(f);
    int st;
    waitpid(pid, &st, 0);
    T_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL); /* it did not die on its own */
}

static int count_job(const Job *j, void *arg)
{
    (void)j;
    ++*(uint64_t *)arg;
    return 0;
}

static void verify(Log *lg)
{
    Store *s;
    StoreOpts o = {.create = 0};
    int orc = store_open(t_dir(), &o, &s);
    if (orc == ENOENT && lg->nput == 0)
        return; /* killed while it made the store: nothing was acknowledged */
    T_OK(orc);
    Txn *t;
    T_OK(store_txn_begin(s, 0, &t));
    qsort(lg->ack, lg->nack, sizeof *lg->ack, cmp64);
    qsort(lg->res, lg->nres, sizeof *lg->res, cmp64);
    for (size_t i = 0; i < lg->nack; i++) {
        Job j;
        T_ERR(queue_get(t, lg->ack[i], &j), PL_ENOJOB); /* acked: never comes back */
    }
    for (size_t i = 0; i < lg->nput; i++) {
        /* Only a job reported reserved can have an ack in flight at the kill. */
        if (bsearch(&lg->put[i], lg->res, lg->nres, sizeof *lg->res, cmp64))
            continue;
        Job j;
        int grc = queue_get(t, lg->put[i], &j);
        if (grc)
            fprintf(stderr, "durable put %llu is missing (%zu puts, %zu acks so far)\n",
                    (unsigned long long)lg->put[i], lg->nput, lg->nack);
        T_OK(grc); /* durable put: still there */
        T_CHECK(j.len > 0 && ((const char *)j.body)[0] == '{');
    }
    QueueStats st;
    int qrc = queue_stats(t, "crash", &st);
    if (qrc == PL_ENOQUEUE && lg->nput == 0) {
        /* killed before its first put committed (the queue comes with it) */
        store_txn_abort(t);
        store_close(s);
        return;
    }
    T_OK(qrc);
    for (int state = JOB_READY; state <= JOB_BURIED; state++) {
        uint64_t n = 0;
        T_OK(queue_peek(t, "crash", state, SIZE_MAX, count_job, &n));
        uint64_t want = state == JOB_READY ? st.ready : state == JOB_DELAYED ? st.delayed
                      : state == JOB_RESERVED ? st.reserved : st.buried;
        T_EQ(n, want); /* counters are exact after any crash */
    }
    store_txn_abort(t);
    store_close(s);
}

static void sigkill_writer_many_times(void)
{
    Log lg = {0};
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    fprintf(stderr, "crash seed %u\n", seed);
    for (int i = 0; i < 40; i++) {
        run_and_kill(seed + (unsigned)i * 7919u, 15 + (unsigned)(rand() % 250), &lg);
        verify(&lg);
    }
    T_CHECK(lg.nput > 1000); /* the writer really wrote */
    T_CHECK(lg.nack > 100);
    fprintf(stderr, "crash: %zu durable puts, %zu acks checked over 40 kills\n", lg.nput, lg.nack);
    free(lg.put);
    free(lg.ack);
    free(lg.res);
}

/* ---------------------------------------------------------------- committer */

typedef struct PutOp {
    CommitOp op;
    uint64_t id;
    int poison;
} PutOp;

static int apply_put(Txn *t, CommitOp *op)
{
    PutOp *p = (PutOp *)op;
    PutArgs a = {.body = "{}", .len = 2};
    int rc = queue_put(t, "g", &a, &p->id, NULL);
    if (rc == 0 && p->poison)
        return txn_fail(t, PL_EINVAL); /* failed after writing */
    return rc;
}

typedef struct Thr {
    Committer *c;
    int n, fails;
} Thr;

static void *thr(void *arg)
{
    Thr *th = arg;
    for (int i = 0; i < th->n; i++) {
        PutOp p = {.op = {.apply = apply_put}};
        if (committer_run(th->c, &p.op))
            th->fails++;
    }
    return NULL;
}

static void committer_merges_concurrent_writers(void)
{
    Store *s;
    StoreOpts o = {.create = 1};
    T_OK(store_open(t_dir(), &o, &s));
    Committer *c;
    T_OK(committer_open(s, 0, &c));
    pthread_t th[8];
    Thr a[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (Thr){c, 200, 0};
        pthread_create(&th[i], NULL, thr, &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        T_EQ(a[i].fails, 0);
    }
    CommitStats cs;
    committer_stats(c, &cs);
    T_EQ(cs.ops, 1600);
    T_CHECK(cs.commits < cs.ops); /* waiting writers shared commits */
    T_CHECK(cs.max_ops_per_commit > 1);
    committer_close(c);
    Txn *t;
    T_OK(store_txn_begin(s, 0, &t));
    QueueStats st;
    T_OK(queue_stats(t, "g", &st));
    T_EQ(st.ready, 1600);
    store_txn_abort(t);
    store_close(s);
}

static int done_count;
static void count_done(CommitOp *op, int rc)
{
    PutOp *p = (PutOp *)op;
    if ((p->poison && rc == PL_EINVAL) || (!p->poison && rc == 0))
        __atomic_add_fetch(&done_count, 1, __ATOMIC_SEQ_CST);
}

static void committer_isolates_a_poisoned_op(void)
{
    Store *s;
    StoreOpts o = {.create = 1};
    T_OK(store_open(t_dir(), &o, &s));
    Committer *c;
    T_OK(committer_open(s, 0, &c));
    PutOp ops[50];
    for (int i = 0; i < 50; i++) {
        ops[i] = (PutOp){.op = {.apply = apply_put, .done = count_done}, .poison = i == 25};
        committer_submit(c, &ops[i].op);
    }
    committer_close(c); /* finishes what was submitted */
    T_EQ(done_count, 50);
    Txn *t;
    T_OK(store_txn_begin(s, 0, &t));
    QueueStats st;
    T_OK(queue_stats(t, "g", &st));
    T_EQ(st.ready, 49); /* every op but the poisoned one landed */
    store_txn_abort(t);
    store_close(s);
}

static const TCase cases[] = {
    T_CASE(sigkill_writer_many_times),
    T_CASE(committer_merges_concurrent_writers),
    T_CASE(committer_isolates_a_poisoned_op),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    char self[1024];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(prog, sizeof prog, "%s/prog_crashwriter", dirname(self));
    return t_main(argc, argv, "crash", cases);
}
