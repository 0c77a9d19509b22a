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
#include <stdarg.h>

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

/* Why the last store_open of this thread failed, in words (store_error). */
static _Thread_local char open_err[512];

static int open_fail(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int open_fail(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(open_err, sizeof open_err, fmt, ap);
    va_end(ap);
    return rc;
}

const char *store_error(void)
{
    return open_err;
}

#define NEW_DIR ".pickline-new" /* where a new environment is made (see store_create) */

/* dir_check: 0 when dir holds data.mdb (a store to open); ENOENT when it
 * has none and holds nothing else (a store may be created there: the
 * directory itself is made when create is set); PL_ENOTDATA when it holds
 * other files; errno values. */
static int dir_check(const char *dir, int create)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || !create)
            return errno;
        if (mkdir(dir, 0750) != 0 && errno != EEXIST)
            return errno;
        return ENOENT;
    }
    if (!S_ISDIR(st.st_mode))
        return open_fail(PL_ENOTDATA, "'%s' is not a directory", dir);
    char p[4096];
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    if (lstat(p, &st) == 0)
        return 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno;
    struct dirent *e;
    int other = 0, appeared = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, "data.mdb"))
            appeared = 1; /* made by another process since the lstat (it holds the lock) */
        else if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "lock.mdb") &&
                 strcmp(e->d_name, NEW_DIR) && strcmp(e->d_name, "engine.lock") &&
                 strcmp(e->d_name, "engine.inflight"))
            other = 1;
    }
    closedir(d);
    if (appeared)
        return 0;
    if (other)
        return open_fail(PL_ENOTDATA, "'%s' holds other files and no data.mdb: not a pickline "
                         "data directory; pass an empty directory or a pickline one", dir);
    return ENOENT;
}

static int meta_check(Store *s, MDB_txn *txn)
{
    MDB_val k = {5, "magic"}, v;
    int rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && (v.mv_size != 8 || memcmp(v.mv_data, "pickline", 8) != 0)))
        return open_fail(PL_ENOTDATA, "%s/data.mdb has no pickline magic record: it is not a "
                         "pickline store, or it is damaged; it is never re-created over: "
                         "restore it from a backup, or move it away to start empty", s->path);
    if (rc)
        return rc;
    MDB_val fk = {6, "format"}, fv;
    if ((rc = mdb_get(txn, s->dbi[DB_META], &fk, &fv)) != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (rc == MDB_NOTFOUND || fv.mv_size != 4)
        return open_fail(PL_ECORRUPT, "%s/data.mdb has no valid format record: damaged; run "
                         "`qctl verify`, restore it from a backup", s->path);
    if (pl_get_be32(fv.mv_data) > FORMAT_VERSION)
        return open_fail(PL_EFORMAT, "%s/data.mdb was written by a newer pickline (format %u, "
                         "this one reads up to %u): use a newer pickline", s->path,
                         pl_get_be32(fv.mv_data), FORMAT_VERSION);
    return 0;
}

/* store_create makes a new environment for dir, whole or not at all: in a
 * directory of its own (NEW_DIR) with every sub-database and the magic
 * record, committed, then data.mdb is renamed into dir. A crash halfway
 * leaves no data.mdb, only NEW_DIR (made again next time), so a data.mdb
 * that is not a valid store always means damage, never an unfinished
 * creation: it is refused, never re-created. Runs under the directory lock. */
static int store_create(const char *dir)
{
    char nd[4096], p[4200], q[4200];
    if ((size_t)snprintf(nd, sizeof nd, "%s/" NEW_DIR, dir) >= sizeof nd)
        return ENAMETOOLONG;
    snprintf(p, sizeof p, "%s/data.mdb", nd);
    unlink(p);
    snprintf(q, sizeof q, "%s/lock.mdb", nd);
    unlink(q);
    if (mkdir(nd, 0750) != 0 && errno != EEXIST)
        return errno;
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    int rc;
    if ((rc = mdb_env_create(&env)) != 0)
        goto out;
    mdb_env_set_maxdbs(env, DB_COUNT + 2);
    if ((rc = mdb_env_open(env, nd, MDB_NOTLS, 0640)) != 0 ||
        (rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
        goto out;
    for (int i = 0; i < DB_COUNT; i++) {
        MDB_dbi dbi;
        if ((rc = mdb_dbi_open(txn, dbnames[i], MDB_CREATE, &dbi)) != 0)
            goto out;
        if (i == DB_META) {
            unsigned char f[4];
            pl_put_be32(f, FORMAT_VERSION);
            MDB_val mk = {5, "magic"}, mv = {8, "pickline"}, fk = {6, "format"}, fv = {4, f};
            if ((rc = mdb_put(txn, dbi, &mk, &mv, 0)) != 0 || (rc = mdb_put(txn, dbi, &fk, &fv, 0)) != 0)
                goto out;
        }
    }
    rc = mdb_txn_commit(txn); /* durable: LMDB flushes the data and the meta page */
    txn = NULL;
    if (rc)
        goto out;
    mdb_env_close(env);
    env = NULL;
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/data.mdb", dir);
    if (rename(p, dst) != 0) {
        rc = errno;
        goto out;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* the rename is durable too */
        close(dfd);
    }
out:
    if (txn)
        mdb_txn_abort(txn);
    if (env)
        mdb_env_close(env);
    unlink(q);
    rmdir(nd);
    return rc;
}

/* file_check refuses a data.mdb that cannot be an environment (shorter than
 * its two meta pages: empty or cut) before LMDB sees it (LMDB would make a
 * new environment over an empty file). */
static int file_check(const char *dir)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    if (stat(p, &st) != 0)
        return errno;
    if (!S_ISREG(st.st_mode))
        return open_fail(PL_ENOTDATA, "%s is not a regular file: not a pickline store", p);
    if (st.st_size < 2 * 4096)
        return open_fail(PL_ECORRUPT, "%s is %lld bytes, too short to be a store (empty or cut "
                         "short); it is never re-created over: restore it from a backup, or move "
                         "it away to start empty", p, (long long)st.st_size);
    return 0;
}

int store_open(const char *dir, const StoreOpts *o, Store **out)
{
    *out = NULL;
    open_err[0] = '\0';
    StoreOpts opts = o ? *o : (StoreOpts){0};
    if (!opts.map_initial)
        opts.map_initial = 64 * MiB;
    if (!opts.headroom)
        opts.headroom = 8 * MiB;
    if (opts.map_max && opts.map_initial > opts.map_max)
        opts.map_initial = opts.map_max;
    int create = opts.create && !opts.readonly;
    int rc = dir_check(dir, create);
    if (rc && rc != ENOENT)
        return rc;
    if (rc == ENOENT && !create)
        return open_fail(ENOENT, "no pickline data in '%s'", dir);
    /* Two processes creating one directory at once must not see each
     * other's half-made environment: opening is serialised by a lock on the
     * directory itself, held until the environment is set up. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno;
    if (flock(dfd, LOCK_EX) != 0) {
        rc = errno;
        close(dfd);
        return rc;
    }
    rc = dir_check(dir, 0);
    if (rc == ENOENT && create)
        rc = store_create(dir);
    else if (rc == ENOENT)
        rc = open_fail(ENOENT, "no pickline data in '%s'", dir);
    if (rc == 0)
        rc = file_check(dir);
    if (rc) {
        close(dfd);
        return rc;
    }

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
    if ((rc = mdb_env_open(s->env, dir, flags, 0640)) != 0) {
        if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED)
            rc = open_fail(PL_ECORRUPT, "%s/data.mdb is not a readable LMDB environment (%s): "
                           "damaged, or not a pickline store; restore it from a backup, or move "
                           "it away to start empty", dir, mdb_strerror(rc));
        goto fail;
    }
    MDB_envinfo ei;
    MDB_stat est;
    mdb_env_info(s->env, &ei);
    mdb_env_stat(s->env, &est);
    s->psize = est.ms_psize;
    /* A file cut short would be mapped past its end: the first page read
     * there kills the process with SIGBUS. Compare before touching any. */
    {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/data.mdb", dir);
        size_t need = (ei.me_last_pgno + 1) * s->psize;
        if (stat(p, &st) != 0) {
            rc = errno;
            goto fail;
        }
        if ((size_t)st.st_size < need) {
            rc = open_fail(PL_ECORRUPT, "%s is truncated: %lld bytes, but its pages reach %zu "
                           "bytes; restore it from a backup (pickline does not read a cut store)",
                           p, (long long)st.st_size, need);
            goto fail;
        }
    }
    if (ei.me_mapsize < opts.map_initial)
        mdb_env_set_mapsize(s->env, opts.map_initial);

    /* A writer of another process (the engine) may have grown the data
     * past the map this open sized from the file a moment ago: adopt the
     * size it recorded, as store_txn_begin does. */
    for (int tries = 0;; tries++) {
        rc = mdb_txn_begin(s->env, NULL, opts.readonly ? MDB_RDONLY : 0, &txn);
        if (rc != MDB_MAP_RESIZED || tries > 3)
            break;
        if ((rc = mdb_env_set_mapsize(s->env, 0)) != 0)
            break;
    }
    if (rc)
        goto fail;
    for (int i = 0; i < DB_COUNT; i++) {
        /* A store older than a sub-database gets it made (a write open); a
         * store without its meta database is not ours. */
        unsigned f = opts.readonly || i == DB_META ? 0 : MDB_CREATE;
        rc = mdb_dbi_open(txn, dbnames[i], f, &s->dbi[i]);
        if (rc == MDB_NOTFOUND && i == DB_META)
            rc = open_fail(PL_ENOTDATA, "%s/data.mdb has no pickline meta database: not a "
                           "pickline store", dir);
        else if (rc == MDB_NOTFOUND)
            rc = open_fail(PL_ENOTDATA, "%s/data.mdb has no '%s' database (open it once for "
                           "writing to add it)", dir, dbnames[i]);
        else if (rc == MDB_INCOMPATIBLE)
            rc = open_fail(PL_ECORRUPT, "%s/data.mdb: '%s' is not a database: damaged or not "
                           "a pickline store", dir, dbnames[i]);
        if (rc)
            goto fail;
    }
    if ((rc = meta_check(s, txn)) != 0)
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
    if (t->scache_free)
        t->scache_free(t->scache);
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
        if (t->scache_flush)
            t->scache_flush(t, t->scache);
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
