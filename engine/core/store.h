/* store.h: the LMDB environment of a data directory, and its transactions.
 *
 * One environment holds every sub-database (see store.c for the layout). A
 * Store is shared by the threads of one process; other processes (qctl, qload)
 * open the same directory at the same time, and LMDB serialises their writers.
 * No write transaction is ever held across I/O other than its own commit. */
#ifndef PL_STORE_H
#define PL_STORE_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Store Store;
typedef struct Txn Txn;

/* The named sub-databases. Keys are big-endian so cursor order is useful.
 * Few of them on purpose: every sub-database a commit touches costs pages
 * to write and flush, and the hot path (put, reserve, ack) touches three. */
enum {
    DB_META,  /* "magic", "format", "next_id", "next_qid" -> values;
               * "q/" name -> queue record (conf, exact counters);
               * "i/" qid u32 -> queue name;
               * "c/" stage name -> the source stage's cursor (opaque bytes) */
    DB_JOBS,  /* (id u64, 0) -> msgpack job header (small; rewritten on reserve)
               * (id u64, 1) -> body bytes (written once, deleted with the job) */
    DB_INDEX, /* one entry per job, by state, under a tag byte:
               * 'r' (qid u32, pri u32, id u64)  ready: FIFO within a priority
               * 'd' (ready-at ms u64, id u64)   delayed
               * 'l' (lease-until ms u64, id u64) reserved
               * 'b' (qid u32, id u64)           buried
               * 'k' (forget-at ms u64, qid u32, key) a retained key's end */
    DB_KEYS,  /* (qid u32, idempotency key) -> id u64 while its job lives;
               * (id u64, forget-at ms u64) once the job is gone (retained) */
    DB_STAGE, /* staged rows: (model, 0, row key) -> msgpack map (row.h) */
    DB_COUNT
};

typedef struct StoreOpts {
    size_t map_initial; /* first map size; 0 = 64 MiB */
    size_t map_max;     /* hard cap on the map (a quota); 0 = none but the disk */
    size_t headroom;    /* kept free for acks/deletes when puts are refused; 0 = 8 MiB */
    int create;         /* create the directory and environment if missing */
    int readonly;       /* open for reading only */
} StoreOpts;

/* store_open opens the data directory dir. With o->create it creates the
 * store when, and only when, dir has no data.mdb and nothing else of
 * another program (the new environment appears whole or not at all); a
 * data.mdb that is not a valid pickline store is never re-created over.
 * Returns 0 and *out, or: ENOENT (no store there and !create), PL_ENOTDATA
 * (dir holds something that is not ours, or data.mdb lacks our magic),
 * PL_ECORRUPT (data.mdb is empty, truncated or unreadable: found before any
 * page is touched), PL_EFORMAT (written by a newer format), EACCES/EROFS
 * (cannot write where we must), or an LMDB error. On failure *out is NULL
 * and store_error() says what is wrong, naming the file. */
int store_open(const char *dir, const StoreOpts *o, Store **out);

/* store_error returns why the last store_open of this thread failed, in
 * words that name the file and the fix ("" when it has nothing to add to
 * pl_strerror of the code). Valid until the next store_open. */
const char *store_error(void);

/* store_close closes the environment; NULL is a no-op. No transaction of
 * this process may be open. */
void store_close(Store *s);

const char *store_path(const Store *s);
MDB_env *store_env(Store *s);

/* store_set_clock replaces the clock that gives transactions their time
 * (tests: lease expiry without sleeping). NULL restores pl_now_ms. */
void store_set_clock(Store *s, uint64_t (*now)(void *), void *arg);

/* store_set_fallocate replaces the call that reserves disk blocks for the
 * headroom (tests: a disk that is full). It returns 0 or an errno value. */
void store_set_fallocate(Store *s, int (*fn)(int fd, off_t off, off_t len));

/* A transaction. Fields are for engine modules; callers treat it as opaque. */
typedef void (*TxnHook)(Txn *t, void *arg);
struct Txn {
    /* read-only for modules */
    Store *store;
    MDB_txn *mdb;
    int write;
    uint64_t now;          /* the time all operations of this txn see (ms) */
    /* private */
    int failed;            /* an operation failed after writing: commit refuses */
    size_t used;           /* bytes the last commit used (0: not read yet), for store_reserve */
    size_t grow;           /* bytes this txn's reservations may add (an estimate) */
    size_t free_bytes;     /* reusable pages' bytes on LMDB's freelist; SIZE_MAX: unknown */
    MDB_cursor *cur[DB_COUNT];
    TxnHook precommit;     /* run once before commit (queue counters) */
    void *precommit_arg;
    void *qcache;          /* queue.c's per-transaction cache */
    void (*qcache_free)(void *);
    void *scache;          /* staging.c's: the open batch being appended to */
    void (*scache_free)(void *);
    TxnHook scache_flush;  /* run before precommit */
    uint64_t next_id;      /* job id counter, loaded on first use */
    int next_id_dirty;
};

/* store_txn_begin starts a transaction (write != 0 for a write one). A read
 * transaction must be short: a reader held open stops LMDB from reusing pages.
 * A thread holds one transaction at a time (a map resize waits for every
 * open transaction of the process to end). Handles MDB_MAP_RESIZED by
 * adopting the new size. Returns 0 and *out. */
int store_txn_begin(Store *s, int write, Txn **out);

/* store_txn_commit runs the precommit hook and commits; the txn is freed
 * whatever happens. A write commit returns only after the data is on disk
 * (two flushes). Returns 0, PL_EUNUSABLE if an operation failed midway, or
 * the LMDB/errno error (ENOSPC for a full disk). */
int store_txn_commit(Txn *t);

/* store_txn_abort discards the transaction; NULL is a no-op. */
void store_txn_abort(Txn *t);

/* txn_dbi returns the handle of sub-database which. */
MDB_dbi txn_dbi(Txn *t, int which);

/* txn_cursor returns the transaction's cursor on sub-database which, opened
 * on first use and closed with the transaction. NULL on failure. */
MDB_cursor *txn_cursor(Txn *t, int which);

/* txn_fail marks t unusable (an operation failed after it wrote) and returns
 * err, so callers write `return txn_fail(t, rc);`. */
int txn_fail(Txn *t, int err);

/* store_reserve asks whether write transaction t may add data of about
 * bytes (a put: its body, key and header) and counts it against the
 * transaction: 0 if it may, PL_EFULL when the map limit less the headroom
 * would be passed, ENOSPC when the disk cannot back the data plus the
 * headroom (data.mdb is fallocated ahead, so that a commit never meets a
 * full disk halfway). Asked per operation, before it writes: a refused
 * operation changes nothing and leaves the transaction usable, so it never
 * fails its neighbours in a group commit. Deletes, acks, releases and
 * purges never ask: the headroom is theirs. After room returns (space
 * freed on the disk, or pages on the freelist), puts are taken again. */
int store_reserve(Txn *t, size_t bytes);

/* store_room is store_reserve for an operation of unknown size (a page). */
int store_room(Txn *t);

/* store_grow grows the map after MDB_MAP_FULL (no transaction of this
 * process may be open). Returns 0, or PL_EFULL when at map_max. */
int store_grow(Store *s);

/* store_run runs fn in a write transaction and commits it, retrying after
 * growing the map on MDB_MAP_FULL and after another process resized it.
 * fn must have no effect outside the transaction (it may run again).
 * Returns fn's error (the txn aborted) or the commit's. */
int store_run(Store *s, int (*fn)(Txn *t, void *arg), void *arg);

/* store_read runs fn in a short read transaction. */
int store_read(Store *s, int (*fn)(Txn *t, void *arg), void *arg);

/* StoreInfo: the map's size and use, for qctl stats. */
typedef struct StoreInfo {
    size_t map_size, map_max, page_size, headroom;
    size_t last_page;    /* highest page in use + 1 */
    size_t free_pages;   /* pages on LMDB's freelist (reusable) */
    size_t file_size;    /* bytes of data.mdb on disk (incl. reserved headroom) */
    unsigned readers, max_readers;
} StoreInfo;
int store_info(Store *s, StoreInfo *out);

/* store_compact writes a compacted copy of the environment into the empty or
 * new directory dst (mdb_env_copy2 with MDB_CP_COMPACT). */
int store_compact(Store *s, const char *dst);

#endif
