/* store.c: the LMDB environment of a data directory and its transactions.
 *
 * Layout: one environment, five named sub-databases (store.h has the keys):
 * meta (format, counters, queue records, cursors), jobs (headers and
 * bodies), index (every job once, under its state), keys (idempotency),
 * stage (staged rows). A job's header and
 * body sit apart, so a reserve rewrites ~50 bytes, not a 4 KiB body; and the
 * hot path touches three sub-databases, because each one a commit touches
 * costs pages to write and flush (measured here: a tiny commit touching 1
 * sub-database takes ~190 us, touching 10 takes ~290 us).
 *
 * Space. LMDB copies pages on write, so even a delete needs free pages. We
 * keep `headroom` bytes in hand for acks, deletes and purges: puts are
 * refused (store_room) when the map limit less the headroom is reached, or
 * when the disk cannot back the headroom (we fallocate data.mdb ahead of the
 * last used page, so a full disk shows up as a refused put, never as a
 * failed ack). The map itself grows on MDB_MAP_FULL (store_grow). */
#include "store.h"
#include "pl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#define FORMAT_VERSION 1u
#define MiB ((size_t)1 << 20)
#define ALLOC_CHUNK (32 * MiB)

static const char *const dbnames[DB_COUNT] = {"meta", "jobs", "index", "keys", "stage"};

struct Store {
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    char *path;
    StoreOpts o;
    size_t psize;
    /* Readers hold it shared; a map resize takes it exclusive, because
     * mdb_env_set_mapsize needs no transaction active in the process. */
    pthread_rwlock_t resize;
    uint64_t (*now)(void *);
    void *now_arg;
    int (*falloc)(int fd, off_t off, off_t len);
    int fd;             /* data.mdb, for reserving blocks; -1 read-only */
    off_t alloc_end;    /* data.mdb is allocated at least this far */
    pthread_mutex_t alloc_mu;
};

static uint64_t clock_wall(void *arg)
{
    (void)arg;
    return pl_now_ms();
}

static int falloc_real(int fd, off_t off, off_t len)
{
    return posix_fallocate(fd, off, len); /* returns the errno value */
}

/* A directory is ours if it has data.mdb; fresh if it is empty. */
static int dir_check(const char *dir, int create)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || !create)
            return errno;
        if (mkdir(dir, 0750) != 0 && errno != EEXIST)
            return errno;
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return PL_ENOTDATA;
    char p[4096];
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    if (access(p, F_OK) == 0)
        return 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno;
    struct dirent *e;
    int other = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "lock.mdb"))
            other = 1;
    closedir(d);
    if (other)
        return PL_ENOTDATA;
    return create ? 0 : ENOENT;
}

static int meta_init(Store *s, MDB_txn *txn)
{
    MDB_val k = {5, "magic"}, v;
    int rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    if (rc == 0) {
        if (v.mv_size != 8 || memcmp(v.mv_data, "pickline", 8) != 0)
            return PL_ENOTDATA;
        MDB_val fk = {6, "format"}, fv;
        if ((rc = mdb_get(txn, s->dbi[DB_META], &fk, &fv)) != 0)
            return rc == MDB_NOTFOUND ? PL_ENOTDATA : rc;
        if (fv.mv_size != 4 || pl_get_be32(fv.mv_data) > FORMAT_VERSION)
            return PL_EFORMAT;
        return 0;
    }
    if (rc != MDB_NOTFOUND)
        return rc;
    if (s->o.readonly)
        return PL_ENOTDATA;
    /* A new environment: anything in the main database means not ours. */
    MDB_stat st;
    MDB_dbi main;
    if ((rc = mdb_dbi_open(txn, NULL, 0, &main)) != 0)
        return rc;
    if ((rc = mdb_stat(txn, main, &st)) != 0)
        return rc;
    if (st.ms_entries > DB_COUNT)
        return PL_ENOTDATA;
    v.mv_size = 8;
    v.mv_data = "pickline";
    if ((rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0)) != 0)
        return rc;
    unsigned char f[4];
    pl_put_be32(f, FORMAT_VERSION);
    MDB_val fk = {6, "format"}, fv = {4, f};
    return mdb_put(txn, s->dbi[DB_META], &fk, &fv, 0);
}

int store_open(const char *dir, const StoreOpts *o, Store **out)
{
    *out = NULL;
    StoreOpts opts = o ? *o : (StoreOpts){0};
    if (!opts.map_initial)
        opts.map_initial = 64 * MiB;
    if (!opts.headroom)
        opts.headroom = 8 * MiB;
    if (opts.map_max && opts.map_initial > opts.map_max)
        opts.map_initial = opts.map_max;
    int rc = dir_check(dir, opts.create && !opts.readonly);
    if (rc)
        return rc;
    /* Two processes creating one directory at once must not see each
     * other's half-made environment: opening is serialised by a lock on the
     * directory itself, held until the environment is set up. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno;
    if (flock(dfd, LOCK_EX) != 0 || (rc = dir_check(dir, 0)) == PL_ENOTDATA) {
        rc = rc ? rc : errno;
        close(dfd);
        return rc;
    }
    rc = 0;

    Store *s = xcalloc(1, sizeof *s);
    s->path = xstrdup(dir);
    s->o = opts;
    s->now = clock_wall;
    s->falloc = falloc_real;
    s->fd = -1;
    /* Writer-preferring: a resize must not starve behind a stream of txns. */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->resize, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&s->alloc_mu, NULL);
    MDB_txn *txn = NULL;
    if ((rc = mdb_env_create(&s->env)) != 0)
        goto fail;
    mdb_env_set_maxdbs(s->env, DB_COUNT + 2);
    mdb_env_set_maxreaders(s->env, 254);
    mdb_env_set_mapsize(s->env, opts.map_initial);
    /* MDB_NOTLS: read transactions are not tied to a thread (the engine's
     * loop and writer thread share the Store). Sync stays on: a commit is
     * durable when it returns. */
    unsigned flags = MDB_NOTLS | (opts.readonly ? MDB_RDONLY : 0);
    if ((rc = mdb_env_open(s->env, dir, flags, 0640)) != 0)
        goto fail;
    MDB_envinfo ei;
    MDB_stat est;
    mdb_env_info(s->env, &ei);
    mdb_env_stat(s->env, &est);
    s->psize = est.ms_psize;
    if (ei.me_mapsize < opts.map_initial)
        mdb_env_set_mapsize(s->env, opts.map_initial);

    if ((rc = mdb_txn_begin(s->env, NULL, opts.readonly ? MDB_RDONLY : 0, &txn)) != 0)
        goto fail;
    for (int i = 0; i < DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, dbnames[i], opts.readonly ? 0 : MDB_CREATE, &s->dbi[i]);
        if (rc == MDB_NOTFOUND)
            rc = PL_ENOTDATA;
        if (rc)
            goto fail;
    }
    if ((rc = meta_init(s, txn)) != 0)
        goto fail;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc)
        goto fail;

    if (!opts.readonly) {
        char p[4096];
        snprintf(p, sizeof p, "%s/data.mdb", dir);
        s->fd = open(p, O_RDWR | O_CLOEXEC);
        if (s->fd < 0) {
            rc = errno;
            goto fail;
        }
        struct stat st;
        if (fstat(s->fd, &st) == 0)
            s->alloc_end = st.st_size;
    }
    *out = s;
    close(dfd); /* releases the lock */
    return 0;
fail:
    if (txn)
        mdb_txn_abort(txn);
    store_close(s);
    close(dfd);
    return rc;
}

void store_close(Store *s)
{
    if (!s)
        return;
    if (s->env)
        mdb_env_close(s->env);
    if (s->fd >= 0)
        close(s->fd);
    pthread_rwlock_destroy(&s->resize);
    pthread_mutex_destroy(&s->alloc_mu);
    free(s->path);
    free(s);
}

const char *store_path(const Store *s) { return s->path; }
MDB_env *store_env(Store *s) { return s->env; }

void store_set_clock(Store *s, uint64_t (*now)(void *), void *arg)
{
    s->now = now ? now : clock_wall;
    s->now_arg = arg;
}

void store_set_fallocate(Store *s, int (*fn)(int fd, off_t off, off_t len))
{
    s->falloc = fn ? fn : falloc_real;
}

/* ---------------------------------------------------------------- txns */

/* Adopt a map size grown by another process. */
static int adopt_size(Store *s)
{
    pthread_rwlock_wrlock(&s->resize);
    int rc = mdb_env_set_mapsize(s->env, 0);
    pthread_rwlock_unlock(&s->resize);
    return rc;
}

int store_txn_begin(Store *s, int write, Txn **out)
{
    *out = NULL;
    if (write && s->o.readonly)
        return EACCES;
    Txn *t = xcalloc(1, sizeof *t);
    t->store = s;
    t->write = write;
    t->free_bytes = SIZE_MAX;
    int rc;
    for (int tries = 0;; tries++) {
        pthread_rwlock_rdlock(&s->resize);
        rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->mdb);
        if (rc != MDB_MAP_RESIZED || tries > 3)
            break;
        pthread_rwlock_unlock(&s->resize);
        if ((rc = adopt_size(s)) != 0) {
            pthread_rwlock_rdlock(&s->resize);
            break;
        }
    }
    if (rc) {
        pthread_rwlock_unlock(&s->resize);
        free(t);
        return rc;
    }
    t->now = s->now(s->now_arg);
    *out = t;
    return 0;
}

static void txn_release(Txn *t)
{
    for (int i = 0; i < DB_COUNT; i++)
        if (t->cur[i])
            mdb_cursor_close(t->cur[i]);
    if (t->qcache_free)
        t->qcache_free(t->qcache);
    pthread_rwlock_unlock(&t->store->resize);
    free(t);
}

static int next_id_flush(Txn *t)
{
    if (!t->next_id_dirty)
        return 0;
    unsigned char b[8];
    pl_put_be64(b, t->next_id);
    MDB_val k = {7, "next_id"}, v = {8, b};
    return mdb_put(t->mdb, txn_dbi(t, DB_META), &k, &v, 0);
}

int store_txn_commit(Txn *t)
{
    int rc = 0;
    if (t->failed) {
        rc = t->failed;
        goto abort;
    }
    if (t->write) {
        if (t->precommit)
            t->precommit(t, t->precommit_arg);
        if (t->failed) {
            rc = t->failed;
            goto abort;
        }
        if ((rc = next_id_flush(t)) != 0)
            goto abort;
    }
    for (int i = 0; i < DB_COUNT; i++)
        if (t->cur[i]) {
            mdb_cursor_close(t->cur[i]);
            t->cur[i] = NULL;
        }
    rc = mdb_txn_commit(t->mdb);
    t->mdb = NULL;
    txn_release(t);
    return rc;
abort:
    store_txn_abort(t);
    return rc;
}

void store_txn_abort(Txn *t)
{
    if (!t)
        return;
    for (int i = 0; i < DB_COUNT; i++)
        if (t->cur[i]) {
            mdb_cursor_close(t->cur[i]);
            t->cur[i] = NULL;
        }
    if (t->mdb)
        mdb_txn_abort(t->mdb);
    t->mdb = NULL;
    txn_release(t);
}

MDB_dbi txn_dbi(Txn *t, int which)
{
    return t->store->dbi[which];
}

MDB_cursor *txn_cursor(Txn *t, int which)
{
    if (!t->cur[which] && mdb_cursor_open(t->mdb, t->store->dbi[which], &t->cur[which]) != 0)
        return NULL;
    return t->cur[which];
}

int txn_fail(Txn *t, int err)
{
    if (!t->failed)
        t->failed = err;
    return err;
}

/* ---------------------------------------------------------------- space */

/* Pages on LMDB's freelist: records of FREE_DBI (dbi 0) are ID lists whose
 * first word is their length (as mdb_stat -f counts them). LMDB refuses a
 * cursor on FREE_DBI in a write txn, so this reads the last committed state
 * in a read txn of its own. */
static size_t free_pages(MDB_env *env, int usable)
{
    MDB_txn *txn;
    MDB_cursor *c;
    size_t n = 0;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
        return 0;
    size_t last = mdb_txn_id(txn);
    if (mdb_cursor_open(txn, 0, &c) == 0) {
        MDB_val k, v;
        /* Pages freed by the last committed txn are reused only from the
         * txn after next: usable counts only older ones. */
        for (int op = MDB_FIRST; mdb_cursor_get(c, &k, &v, op) == 0; op = MDB_NEXT)
            if (!usable || *(size_t *)k.mv_data < last)
                n += *(size_t *)v.mv_data;
        mdb_cursor_close(c);
    }
    mdb_txn_abort(txn);
    return n;
}

/* txn_free_bytes: the bytes of the freelist's reusable pages, read once
 * per transaction (a walk of the freelist). */
static size_t txn_free_bytes(Txn *t)
{
    if (t->free_bytes == SIZE_MAX)
        t->free_bytes = free_pages(t->store->env, 1) * t->store->psize;
    return t->free_bytes;
}

/* The estimate of what an operation adds: LMDB pages are about half to
 * fully used, and the first write to a page in a transaction copies it
 * (a page per operation covers a key landing in a page of its own). */
static size_t grow_estimate(const Store *s, size_t bytes)
{
    return 2 * bytes + 256 + s->psize;
}

int store_reserve(Txn *t, size_t bytes)
{
    Store *s = t->store;
    if (!t->write)
        return EACCES;
    if (!t->used) {
        MDB_envinfo ei;
        mdb_env_info(s->env, &ei);
        t->used = (ei.me_last_pgno + 1) * s->psize;
    }
    size_t grow = t->grow + grow_estimate(s, bytes), used = t->used, room = s->o.headroom;
    if (s->o.map_max && used + grow + room > s->o.map_max) {
        /* Past the high-water mark: count what the freelist gives back. */
        size_t fb = txn_free_bytes(t);
        if (used - (fb < used ? fb : used) + grow + room > s->o.map_max)
            return PL_EFULL;
    }
    if (s->fd >= 0) {
        off_t need = (off_t)(used + grow + room);
        int refuse = 0;
        pthread_mutex_lock(&s->alloc_mu);
        if (need > s->alloc_end) {
            off_t want = need + ALLOC_CHUNK;
            if (s->o.map_max && want > (off_t)s->o.map_max)
                want = need;
            int e = s->falloc(s->fd, 0, want);
            if (e && want != need) {
                want = need;
                e = s->falloc(s->fd, 0, want);
            }
            if (e == 0) {
                s->alloc_end = want; /* what was really reserved */
            } else if (e == ENOSPC || e == EDQUOT) {
                /* The disk is full. What is reserved may still do, when
                 * the freelist's pages take the growth. */
                size_t fb = txn_free_bytes(t);
                size_t beyond = grow > fb ? grow - fb : 0;
                if ((off_t)(used + beyond + room) > s->alloc_end)
                    refuse = ENOSPC;
            }
            /* Filesystems without fallocate (EOPNOTSUPP): nothing to reserve. */
        }
        pthread_mutex_unlock(&s->alloc_mu);
        if (refuse)
            return refuse;
    }
    t->grow = grow;
    return 0;
}

int store_room(Txn *t)
{
    return store_reserve(t, 0);
}

int store_grow(Store *s)
{
    MDB_envinfo ei;
    pthread_rwlock_wrlock(&s->resize);
    mdb_env_info(s->env, &ei);
    size_t cur = ei.me_mapsize, next = cur < 1024 * MiB ? cur * 2 : cur + 1024 * MiB;
    int rc = 0;
    if (s->o.map_max && next > s->o.map_max)
        next = s->o.map_max;
    if (next <= cur)
        rc = PL_EFULL;
    else
        rc = mdb_env_set_mapsize(s->env, next);
    pthread_rwlock_unlock(&s->resize);
    if (rc == 0)
        pl_log(PL_LOG_INFO, "store: map of %s grown from %zu to %zu MiB", s->path,
               cur / MiB, next / MiB);
    return rc;
}

int store_run(Store *s, int (*fn)(Txn *, void *), void *arg)
{
    for (;;) {
        Txn *t;
        int rc = store_txn_begin(s, 1, &t);
        if (rc)
            return rc;
        rc = fn(t, arg);
        if (rc == 0 && t->failed)
            rc = t->failed;
        if (rc == 0) {
            rc = store_txn_commit(t);
        } else {
            store_txn_abort(t);
        }
        if (rc == MDB_MAP_FULL) {
            if ((rc = store_grow(s)) != 0)
                return rc;
            continue;
        }
        return rc;
    }
}

int store_read(Store *s, int (*fn)(Txn *, void *), void *arg)
{
    Txn *t;
    int rc = store_txn_begin(s, 0, &t);
    if (rc)
        return rc;
    rc = fn(t, arg);
    store_txn_abort(t);
    return rc;
}

int store_info(Store *s, StoreInfo *out)
{
    memset(out, 0, sizeof *out);
    MDB_envinfo ei;
    mdb_env_info(s->env, &ei);
    out->map_size = ei.me_mapsize;
    out->map_max = s->o.map_max;
    out->page_size = s->psize;
    out->headroom = s->o.headroom;
    out->last_page = ei.me_last_pgno + 1;
    out->readers = ei.me_numreaders;
    out->max_readers = ei.me_maxreaders;
    out->free_pages = free_pages(s->env, 0);
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/data.mdb", s->path);
    if (stat(p, &st) == 0)
        out->file_size = (size_t)st.st_size;
    return 0;
}

int store_compact(Store *s, const char *dst)
{
    struct stat st;
    if (stat(dst, &st) != 0) {
        if (errno != ENOENT)
            return errno;
        if (mkdir(dst, 0750) != 0)
            return errno;
    } else if (dir_check(dst, 0) != ENOENT) {
        return EEXIST; /* refuse to write over anything */
    }
    return mdb_env_copy2(s->env, dst, MDB_CP_COMPACT);
}
