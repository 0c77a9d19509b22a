/* prog_crashwriter: a writer for the crash tests. It streams puts and acks
 * through the group committer from two threads, and after each commit
 * reports what became durable on stdout, one write() per batch:
 *   P <id>   a put that was committed
 *   R <id>   a reserve that was committed (its ack comes only after this line)
 *   A <id>   an ack that was committed
 * test_crash SIGKILLs it at random moments and checks the store against the
 * report. Usage: prog_crashwriter DIR SEED */
#include "commit.h"
#include "pl.h"
#include "queue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXB 64

typedef struct Work {
    CommitOp op;
    unsigned k;
    uint64_t ids[MAXB], leases[MAXB];
    size_t n;              /* puts: ids made; consumer: jobs reserved now */
    uint64_t ack[MAXB], ack_lease[MAXB];
    size_t nack;
    unsigned seed;
} Work;

static Committer *cm;

static void emit2(char tag, const uint64_t *ids, size_t n, char tag2, const uint64_t *ids2, size_t n2)
{
    char buf[2 * MAXB * 24];
    size_t off = 0;
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%c %llu\n", tag, (unsigned long long)ids[i]);
    for (size_t i = 0; i < n2; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%c %llu\n", tag2, (unsigned long long)ids2[i]);
    /* One write: the report of a commit arrives whole or not at all. */
    if (off && write(1, buf, off) != (ssize_t)off)
        _exit(9);
}

static int apply_put(Txn *t, CommitOp *op)
{
    Work *w = op->arg;
    char body[64];
    w->n = 0;
    for (unsigned i = 0; i < w->k; i++) {
        int len = snprintf(body, sizeof body, "{\"n\":%u}", rand_r(&w->seed));
        PutArgs a = {.pri = (uint32_t)(rand_r(&w->seed) % 4), .body = body, .len = (size_t)len};
        int rc = queue_put(t, "crash", &a, &w->ids[w->n], NULL);
        if (rc)
            return txn_fail(t, rc);
        w->n++;
    }
    return 0;
}

static int apply_cycle(Txn *t, CommitOp *op)
{
    Work *w = op->arg;
    for (size_t i = 0; i < w->nack; i++) {
        int rc = queue_ack(t, w->ack[i], w->ack_lease[i]);
        if (rc)
            return txn_fail(t, rc);
    }
    Job js[MAXB];
    size_t got = 0;
    int rc = queue_reserve_n(t, "crash", w->k, 0, js, &got);
    /* Before the producer's first commit the queue does not exist yet. */
    if (rc && rc != PL_EEMPTY && rc != PL_ENOQUEUE)
        return txn_fail(t, rc);
    for (size_t i = 0; i < got; i++) {
        w->ids[i] = js[i].id;
        w->leases[i] = js[i].lease;
    }
    w->n = got;
    return 0;
}

static void *producer(void *arg)
{
    Work w = {.seed = *(unsigned *)arg};
    w.op.apply = apply_put;
    w.op.arg = &w;
    for (;;) {
        w.k = 1 + (unsigned)rand_r(&w.seed) % 40;
        int rc = committer_run(cm, &w.op);
        if (rc) {
            fprintf(stderr, "crashwriter: put: %s\n", pl_strerror(rc));
            _exit(3);
        }
        emit2('P', w.ids, w.n, 0, NULL, 0);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    Work w = {.seed = *(unsigned *)arg + 1};
    w.op.apply = apply_cycle;
    w.op.arg = &w;
    for (;;) {
        w.k = 1 + (unsigned)rand_r(&w.seed) % 40;
        int rc = committer_run(cm, &w.op);
        if (rc) {
            fprintf(stderr, "crashwriter: cycle: %s\n", pl_strerror(rc));
            _exit(4);
        }
        emit2('A', w.ack, w.nack, 'R', w.ids, w.n);
        memcpy(w.ack, w.ids, w.n * sizeof w.ids[0]);
        memcpy(w.ack_lease, w.leases, w.n * sizeof w.leases[0]);
        w.nack = w.n;
        if (!w.n)
            usleep(200);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: prog_crashwriter DIR SEED\n");
        return 2;
    }
    unsigned seed = (unsigned)strtoul(argv[2], NULL, 10);
    Store *s;
    StoreOpts o = {.create = 1};
    int rc = store_open(argv[1], &o, &s);
    if (rc || (rc = committer_open(s, 0, &cm)) != 0) {
        fprintf(stderr, "crashwriter: %s: %s\n", argv[1], pl_strerror(rc));
        return 1;
    }
    pthread_t a, b;
    pthread_create(&a, NULL, producer, &seed);
    pthread_create(&b, NULL, consumer, &seed);
    pthread_join(a, NULL); /* never returns: killed by the test */
    return 0;
}
