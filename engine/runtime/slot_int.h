/* slot_int.h: what the three files of the stages' runtime (stage.h) share:
 * slot.c (a slot's outputs, priority and end on the loop thread, emits,
 * the stages' reads and log), hold.c (how the slots get their jobs: holds,
 * reservers, spares, the in-flight file) and apply.c (what the writer
 * thread applies: the actions, the fused hand-off, a slot's commit).
 * Private to engine/runtime. */
#ifndef PL_SLOT_INT_H
#define PL_SLOT_INT_H

#include "engine_int.h"
#include "stage.h"
#include "strbuf.h"

#include <stdint.h>

enum { SLOT_FREE, SLOT_WORKING, SLOT_COMMITTING };
enum { END_ACK, END_RELEASE, END_BURY };

/* Taken: the rows stages took in one hand-off's commit (fused), counted
 * as done for them once it committed. */
#define TAKEN_MAX 8
typedef struct Taken {
    Stage *by[TAKEN_MAX];
    uint32_t n[TAKEN_MAX];
    unsigned k;
} Taken;

/* SlotOp: a slot's commit, one per slot (slots_open): made in slot_end,
 * applied by slot_apply, its outcome taken by slot_committed. */
typedef struct SlotOp {
    EngineOp eo;
    Slot *slot;
    Taken taken;     /* writer thread in apply; loop thread in done */
    int end;
    int64_t delay_ms;
    Strbuf why;
    int in_actions;  /* the last apply failed in the outputs, after the ack */
    char fail[320];  /* what failed in the last apply (writer thread; read in done) */
    char pri_why[300]; /* slot_priority refused the record's priority field: why */
} SlotOp;

/* ---------------------------------------------------------------- apply.c */

/* The actions a slot or an emit records, applied in its commit (the format
 * is apply.c's). A put at PRI_SLOT goes at the slot's priority, decided
 * when the slot ends (slot_priority). */
#define PRI_SLOT UINT64_MAX

/* acts_put records a put of body (len bytes; key NULL: none) to queue at
 * pri (or PRI_SLOT). */
void acts_put(Strbuf *acts, const char *queue, const void *body, size_t len, const char *key,
              uint64_t pri);

/* acts_row_land records a landed row: mp (len bytes) becomes a new staged
 * row instance of model/key and a reference to it goes on queue at the
 * slot's priority (or the row goes to the stage fused to queue). */
void acts_row_land(Strbuf *acts, const char *model, const char *key, const void *mp, size_t len,
                   const char *queue);

/* acts_row_merge records staging_row_merge of n fields (n <= SLOT_MERGE_MAX). */
void acts_row_merge(Strbuf *acts, const char *model, const char *key, uint64_t row,
                    const void *src, size_t len, const char *const *from, const char *const *to,
                    size_t n);

/* acts_extra records a call of fn(t, arg) in the commit. */
void acts_extra(Strbuf *acts, int (*fn)(Txn *t, void *arg), void *arg);

/* acts_cursor records the stage's cursor (value, len bytes). */
void acts_cursor(Strbuf *acts, const void *value, size_t len);

/* apply_actions applies a slot's or a source's recorded outputs in t, the
 * slot's at pri; the rows stages took (fused) are counted in tk (may be
 * NULL). On failure it returns the error and, when it can say more than
 * the code (which queue refused a put, and why), writes that into fail. */
int apply_actions(Txn *t, const Strbuf *acts, Stage *from, Taken *tk, uint32_t pri, char *fail,
                  size_t failn);

/* slot_apply is the apply of a slot's commit (a SlotOp): its release, its
 * bury, or its ack with its outputs, as so->end says. */
int slot_apply(Txn *t, CommitOp *op);

/* fuse_done counts what stages took in a committed hand-off as their jobs
 * and tells them (loop thread). */
void fuse_done(const Taken *tk);

/* ---------------------------------------------------------------- slot.c */

/* slot_pri_default: a stage's outputs' priority when no record says one
 * (in: the job's own). */
uint32_t slot_pri_default(const StageConf *c, uint32_t in);

/* slot_body_forget drops the slot's decoded body: a new job comes. */
void slot_body_forget(Slot *s);

/* ---------------------------------------------------------------- hold.c */

/* slot_free ends slot s's hold on its job and makes it free (loop thread),
 * after its last commit: it dispatches and kicks the stage again. */
void slot_free(Slot *s);

#endif
