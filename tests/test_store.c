/* test_store.c: engine/core/store.c and engine/core/rec.c against damage: a data
 * directory is created only when data.mdb is absent; anything else that is
 * not a valid store is refused with a message naming the file (empty,
 * truncated, no magic record); a damaged record is an error, never a huge
 * allocation. Real LMDB files, damaged the way disks and people damage them. */
#include "t.h"
#include "pl.h"
#include "queue.h"
#include "rec.h"
#include "store.h"
#include "verify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *data_path(void)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/data.mdb", t_dir());
    return p;
}

/* fill makes a store with n jobs in queue "q" and closes it; returns the
 * last id. */
static uint64_t fill(int n, size_t body)
{
    Store *s;
    StoreOpts o = {.create = 1};
    T_OK(store_open(t_dir(), &o, &s));
    char *b = malloc(body);
    memset(b, 'x', body);
    uint64_t id = 0;
    Txn *t;
    T_OK(store_txn_begin(s, 1, &t));
    for (int i = 0; i < n; i++) {
        PutArgs a = {.body = b, .len = body};
        T_OK(queue_put(t, "q", &a, &id, NULL));
    }
    T_OK(store_txn_commit(t));
    free(b);
    store_close(s);
    return id;
}

static off_t file_size(const char *p)
{
    struct stat st;
    T_OK(stat(p, &st) == 0 ? 0 : errno);
    return st.st_size;
}

/* raw_open opens the store's LMDB environment in t_dir() behind its back
 * (flags 0 or MDB_RDONLY) and a transaction on its sub-database db. */
static MDB_dbi raw_open(const char *db, unsigned flags, MDB_env **env, MDB_txn **txn)
{
    MDB_dbi dbi;
    T_OK(mdb_env_create(env));
    mdb_env_set_maxdbs(*env, 10);
    T_OK(mdb_env_open(*env, t_dir(), flags, 0600));
    T_OK(mdb_txn_begin(*env, NULL, flags, txn));
    T_OK(mdb_dbi_open(*txn, db, 0, &dbi));
    return dbi;
}

/* raw_put writes key = val into sub-database db, the way a foreign program
 * (or a damaged disk) would; val NULL deletes key. */
static void raw_put(const char *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi = raw_open(db, 0, &env, &txn);
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    if (val)
        T_OK(mdb_put(txn, dbi, &k, &v, 0));
    else
        T_OK(mdb_del(txn, dbi, &k, NULL));
    T_OK(mdb_txn_commit(txn));
    mdb_env_close(env);
}

static void created_whole_only_when_absent(void)
{
    uint64_t last = fill(3, 10);
    T_EQ(last, 3);
    /* No half-made environment is left behind. */
    char p[512];
    snprintf(p, sizeof p, "%s/.pickline-new", t_dir());
    T_CHECK(access(p, F_OK) != 0);
    /* Opened again (for writing, with create): the same store, ids go on. */
    uint64_t next = fill(1, 10);
    T_EQ(next, 4);
}

static void empty_data_file_is_refused_not_recreated(void)
{
    T_OK(mkdir(t_dir(), 0700));
    int fd = open(data_path(), O_CREAT | O_WRONLY, 0600);
    T_CHECK(fd >= 0);
    close(fd);
    Store *s;
    StoreOpts o = {.create = 1};
    T_ERR(store_open(t_dir(), &o, &s), PL_ECORRUPT);
    T_CHECK(s == NULL);
    T_CHECK(strstr(store_error(), "data.mdb") != NULL);
    T_CHECK(strstr(store_error(), "0 bytes") != NULL);
    T_EQ(file_size(data_path()), 0); /* untouched */
    o.readonly = 1;
    o.create = 0;
    T_ERR(store_open(t_dir(), &o, &s), PL_ECORRUPT);
}

static void truncated_data_file_is_refused_before_any_page(void)
{
    fill(2000, 900); /* about 2 MiB of pages (the file is allocated further) */
    off_t cut = 512 * 1024;
    T_CHECK(file_size(data_path()) > cut);
    T_OK(truncate(data_path(), cut) == 0 ? 0 : errno);
    /* In a child: a SIGBUS would kill it, and the test sees the signal. */
    for (int ro = 0; ro < 2; ro++) {
        pid_t k = fork();
        if (k == 0) {
            Store *s;
            StoreOpts o = {.create = !ro, .readonly = ro};
            int rc = store_open(t_dir(), &o, &s);
            if (rc != PL_ECORRUPT || !strstr(store_error(), "truncated"))
                _exit(10);
            _exit(0);
        }
        int st;
        T_CHECK(waitpid(k, &st, 0) == k);
        T_CHECK(WIFEXITED(st));
        T_EQ(WEXITSTATUS(st), 0);
    }
    T_EQ(file_size(data_path()), cut);
}

static void store_without_magic_is_refused(void)
{
    fill(5, 10);
    /* Take the magic record out, the way a foreign program would. */
    raw_put("meta", "magic", 5, NULL, 0);
    Store *s;
    StoreOpts o = {.create = 1};
    T_ERR(store_open(t_dir(), &o, &s), PL_ENOTDATA);
    T_CHECK(strstr(store_error(), "magic") != NULL);
    /* Nothing was re-initialised: the ids are where they were. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi = raw_open("meta", MDB_RDONLY, &env, &txn);
    MDB_val k = {5, "magic"}, nk = {7, "next_id"}, nv;
    T_OK(mdb_get(txn, dbi, &nk, &nv));
    T_EQ(pl_get_be64(nv.mv_data), 6);
    T_ERR(mdb_get(txn, dbi, &k, &nv), MDB_NOTFOUND);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

static void foreign_lmdb_is_refused(void)
{
    /* An LMDB environment of another program: no pickline databases. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    T_OK(mkdir(t_dir(), 0700));
    T_OK(mdb_env_create(&env));
    T_OK(mdb_env_open(env, t_dir(), 0, 0600));
    T_OK(mdb_txn_begin(env, NULL, 0, &txn));
    T_OK(mdb_dbi_open(txn, NULL, 0, &dbi));
    MDB_val k = {3, "abc"}, v = {3, "xyz"};
    T_OK(mdb_put(txn, dbi, &k, &v, 0));
    T_OK(mdb_txn_commit(txn));
    mdb_env_close(env);
    Store *s;
    StoreOpts o = {.create = 1};
    T_ERR(store_open(t_dir(), &o, &s), PL_ENOTDATA);
    T_CHECK(strstr(store_error(), "data.mdb") != NULL);
}

static void garbage_data_file_is_refused(void)
{
    T_OK(mkdir(t_dir(), 0700));
    FILE *f = fopen(data_path(), "w");
    T_CHECK(f != NULL);
    for (int i = 0; i < 5000; i++)
        fputs("not an lmdb file at all ", f);
    fclose(f);
    Store *s;
    StoreOpts o = {.create = 1};
    T_ERR(store_open(t_dir(), &o, &s), PL_ECORRUPT);
    T_CHECK(strstr(store_error(), "not a readable LMDB environment") != NULL);
}

/* A job header whose msgpack claims a container of 4 billion items. */
static void damaged_record_is_an_error_not_an_allocation(void)
{
    static const unsigned char bad[][12] = {
        {0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3},              /* array32 of 4G items */
        {0x9c, 0x01, 0xdf, 0xff, 0xff, 0xff, 0xff, 0},        /* a map32 of 4G pairs inside */
        {0x9c, 0x01, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'},      /* a str32 of 2 GiB */
        {0xc1},                                               /* never used */
        {0x9c, 0x02},                                         /* cut short */
    };
    static const size_t lens[] = {8, 8, 8, 1, 2};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
        T_ERR(rec_wellformed(bad[i], lens[i]), PL_ECORRUPT);
    Rec r;
    rec_init(&r);
    JobRec j;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
        T_ERR(rec_job_decode(&r, bad[i], lens[i], &j), PL_ECORRUPT);
    /* A good one still decodes, and a newer version is told apart. */
    JobRec in = {.qid = 1, .pri = 2, .state = JOB_READY, .ttr_ms = 5};
    size_t ko, eo;
    rec_job_encode(&r, &in, &ko, &eo);
    T_OK(rec_wellformed(r.sb.data, r.sb.size));
    T_OK(rec_job_decode(&r, r.sb.data, r.sb.size, &j));
    T_EQ(j.pri, 2);
    char *newer = malloc(r.sb.size);
    memcpy(newer, r.sb.data, r.sb.size);
    newer[1] = 9; /* version 9 */
    T_ERR(rec_job_decode(&r, newer, r.sb.size, &j), PL_EFORMAT);
    free(newer);
    rec_destroy(&r);

    /* In a store: the job reads as damaged, by id, and the rest work. */
    fill(3, 10);
    unsigned char kb[9];
    pl_put_be64(kb, 2);
    kb[8] = 0;
    raw_put("jobs", kb, sizeof kb, bad[0], 8);
    Store *s;
    StoreOpts o = {0};
    T_OK(store_open(t_dir(), &o, &s));
    Txn *t;
    T_OK(store_txn_begin(s, 0, &t));
    Job job;
    T_ERR(queue_get(t, 2, &job), PL_ECORRUPT);
    T_OK(queue_get(t, 1, &job));
    T_OK(queue_get(t, 3, &job));
    store_txn_abort(t);
    store_close(s);
}

typedef struct Seen {
    int n;
    char last[600];
} Seen;

static void seen(void *arg, const char *what, const char *why)
{
    Seen *s = arg;
    s->n++;
    snprintf(s->last, sizeof s->last, "%s: %s", what, why);
}

/* store_verify finds nothing wrong in a healthy store with jobs in every
 * state and retained keys, and names the job whose index entry is gone. */
static void verify_healthy_then_damaged(void)
{
    Store *s;
    StoreOpts o = {.create = 1};
    T_OK(store_open(t_dir(), &o, &s));
    Txn *t;
    T_OK(store_txn_begin(s, 1, &t));
    uint64_t id;
    char key[16];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "k%d", i);
        PutArgs a = {.pri = (uint32_t)(i % 3), .body = "{}", .len = 2, .key = key, .keylen = strlen(key),
                     .delay_ms = i % 5 == 0 ? 60000 : 0};
        T_OK(queue_put(t, i % 2 ? "a" : "b", &a, &id, NULL));
    }
    T_OK(store_txn_commit(t));
    T_OK(store_txn_begin(s, 1, &t));
    Job j;
    T_OK(queue_reserve(t, "a", 0, &j));
    T_OK(queue_ack(t, j.id, j.lease));          /* a retained key */
    T_OK(queue_reserve(t, "a", 0, &j));
    T_OK(queue_bury(t, j.id, j.lease, "why"));  /* buried */
    T_OK(queue_reserve(t, "b", 0, &j));         /* reserved */
    uint64_t reserved = j.id;
    T_OK(store_txn_commit(t));
    Seen sn = {0};
    VerifyCounts vc;
    T_OK(store_verify(s, seen, &sn, 100, &vc));
    if (sn.n)
        t_fail(__FILE__, __LINE__, "a healthy store has a problem: %s", sn.last);
    T_EQ(vc.problems, 0);
    T_EQ(vc.jobs, 39);
    T_EQ(vc.queues, 2);
    T_EQ(vc.retained_keys, 1);
    T_EQ(vc.keys, 39);
    store_close(s);
    /* The reserved job loses its lease entry: it would never expire. */
    T_OK(store_open(t_dir(), &o, &s));
    T_OK(store_txn_begin(s, 0, &t));
    T_OK(queue_get(t, reserved, &j));
    uint64_t due = j.due_ms;
    store_txn_abort(t);
    store_close(s);
    unsigned char ik[17] = {'l'};
    pl_put_be64(ik + 1, due);
    pl_put_be64(ik + 9, reserved);
    raw_put("index", ik, sizeof ik, NULL, 0);
    T_OK(store_open(t_dir(), &o, &s));
    sn.n = 0;
    T_OK(store_verify(s, seen, &sn, 100, &vc));
    T_EQ(vc.problems, 1);
    char want[64];
    snprintf(want, sizeof want, "job %llu", (unsigned long long)reserved);
    if (!strstr(sn.last, want) || !strstr(sn.last, "index"))
        t_fail(__FILE__, __LINE__, "unexpected report: %s", sn.last);
    store_close(s);
}


typedef struct Big {
    const char *b;
    size_t n;
} Big;

static int put_big(Txn *t, void *arg)
{
    Big *g = arg;
    uint64_t id;
    PutArgs a = {.body = g->b, .len = g->n};
    return queue_put(t, "q", &a, &id, NULL);
}

/* A store opened while another process grows it past the map the opener
 * sees (qctl or qload started beside a busy engine): LMDB answers the
 * first transaction with MDB_MAP_RESIZED when a commit grew the data
 * between mdb_env_open and it. The open adopts the new size and goes on. */
static void open_beside_a_growing_writer(void)
{
    int pfd[2];
    T_OK(pipe(pfd) == 0 ? 0 : errno);
    pid_t pid = fork();
    T_CHECK(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        Store *s;
        StoreOpts o = {.create = 1};
        if (store_open(t_dir(), &o, &s) != 0)
            _exit(3);
        if (write(pfd[1], "x", 1) != 1)
            _exit(4);
        size_t body = 256 << 10;
        char *b = malloc(body);
        memset(b, 'x', body);
        /* 256 KiB per commit, to well past the opener's 64 MiB first map. */
        Big big = {b, body};
        for (int i = 0; i < 800; i++)
            if (store_run(s, put_big, &big) != 0)
                _exit(5);
        store_close(s);
        _exit(0);
    }
    close(pfd[1]);
    char c;
    T_EQ(read(pfd[0], &c, 1), 1);
    int opens = 0, failed = 0, first = 0, status;
    for (;;) {
        int done = waitpid(pid, &status, WNOHANG) == pid;
        for (int ro = 0; ro < 2; ro++) {
            Store *s;
            StoreOpts o = {.readonly = ro};
            int rc = store_open(t_dir(), &o, &s);
            opens++;
            if (rc) {
                failed++;
                if (!first)
                    first = rc;
            } else {
                store_close(s);
            }
        }
        if (done)
            break;
    }
    T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    T_CHECK(opens > 20);
    if (failed)
        t_fail(__FILE__, __LINE__, "%d of %d opens failed, the first with %s", failed, opens,
               pl_strerror(first));
}

/* Job headers round trip through rec_job_encode and rec_job_decode at
 * every integer width and key/error form, and a header cut or changed
 * anywhere decodes as what it says or is refused, never past its end. */
static void job_headers_round_trip(void)
{
    static const uint64_t vals[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295ull,
                                    4294967296ull, UINT64_MAX};
    Rec r;
    rec_init(&r);
    uint64_t x = 88172645463325252ull;
    for (int n = 0; n < 3000; n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const uint64_t a = vals[x % 11], b = vals[(x >> 8) % 11], c = vals[(x >> 16) % 11];
        char key[300], err[300];
        size_t kl = (x >> 24) % 260, el = (x >> 40) % 300;
        memset(key, 'k', sizeof key);
        memset(err, 'e', sizeof err);
        JobRec in = {.qid = (uint32_t)a, .pri = (uint32_t)b, .state = 1 + (int)(x % 4),
                     .attempts = (uint32_t)c, .kicks = (uint32_t)(x >> 3), .created_ms = a,
                     .due_ms = b, .ttr_ms = (uint32_t)(x >> 5), .lease = c,
                     .key = (x >> 50) % 3 ? key : NULL, .keylen = (x >> 50) % 3 ? kl : 0,
                     .error = (x >> 52) % 3 ? err : NULL, .errorlen = (x >> 52) % 3 ? el : 0};
        size_t ko, eo;
        rec_job_encode(&r, &in, &ko, &eo);
        JobRec out;
        T_OK(rec_job_decode(&r, r.sb.data, r.sb.size, &out));
        T_CHECK(out.qid == in.qid && out.pri == in.pri && out.state == in.state &&
                out.attempts == in.attempts && out.kicks == in.kicks &&
                out.created_ms == in.created_ms && out.due_ms == in.due_ms &&
                out.ttr_ms == in.ttr_ms && out.lease == in.lease && out.keylen == in.keylen &&
                out.errorlen == in.errorlen && !out.key == !in.key && !out.error == !in.error);
        T_CHECK(!in.key || !memcmp(out.key, key, kl));
        T_CHECK(!in.error || !memcmp(out.error, err, el));
        /* cut short, or one byte changed: refused, or decoded within bounds */
        unsigned char *cp = malloc(r.sb.size);
        memcpy(cp, r.sb.data, r.sb.size);
        size_t cut = (size_t)(x >> 12) % r.sb.size;
        int rc = rec_job_decode(&r, cp, cut, &out);
        T_CHECK(rc == PL_ECORRUPT || rc == PL_EFORMAT);
        cp[cut] ^= (unsigned char)(1 + (x >> 33) % 255);
        if (rec_job_decode(&r, cp, r.sb.size, &out) == 0) {
            T_CHECK(!out.key || (out.key >= (char *)cp && out.key + out.keylen <= (char *)cp + r.sb.size));
            T_CHECK(!out.error || (out.error >= (char *)cp && out.error + out.errorlen <= (char *)cp + r.sb.size));
        }
        free(cp);
    }
    rec_destroy(&r);
}

static const TCase cases[] = {
    T_CASE(verify_healthy_then_damaged),
    T_CASE(created_whole_only_when_absent),
    T_CASE(empty_data_file_is_refused_not_recreated),
    T_CASE(truncated_data_file_is_refused_before_any_page),
    T_CASE(store_without_magic_is_refused),
    T_CASE(foreign_lmdb_is_refused),
    T_CASE(garbage_data_file_is_refused),
    T_CASE(damaged_record_is_an_error_not_an_allocation),
    T_CASE(open_beside_a_growing_writer),
    T_CASE(job_headers_round_trip),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "store", cases);
}
