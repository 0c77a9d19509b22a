/* inflight.h: the in-flight file, DIR/engine.inflight.
 *
 * The running engine names in it the job each of its slots works (the
 * engine holds its jobs in memory, ready on disk: see engine/runtime's
 * hold.c), so that the next start counts the attempt a crash ended, and so
 * that qctl can tell which ready jobs the engine is working. The file is a
 * header, then one entry per slot; the engine maps it shared and writes it
 * with plain stores, never flushed (it survives the death of the process,
 * not of the machine). An entry's id is written last (release) and read
 * first (acquire): 0 means the slot holds nothing. */
#ifndef PL_INFLIGHT_H
#define PL_INFLIGHT_H

#include <stddef.h>
#include <stdint.h>

#define INFLIGHT_MAGIC "PLFLY01"

typedef struct InflightHead {
    char magic[8];
    char uuid[32];           /* the store's (staging_uuid): a file of another store is ignored */
    uint32_t nslots, zero;
} InflightHead;

typedef struct InflightEntry {
    uint64_t id;             /* 0: the slot holds nothing */
    uint32_t qid, attempts;  /* where it was taken, its stored attempts then */
} InflightEntry;

/* inflight_working counts, for each of the n queue ids qids[], the jobs
 * the engine working on the store with uuid names in DIR/engine.inflight
 * into counts[] (zeroed first). Only while an engine runs on dir (the pid
 * DIR/engine.lock names is alive): a file a stopped engine left says
 * nothing about now. Returns 0, or -1 when no engine runs or the file is
 * missing, of another store or of another format, or n is 0 (counts are
 * then 0). */
int inflight_working(const char *dir, const char uuid[32], const uint32_t *qids, uint64_t *counts,
                     size_t n);

#endif
