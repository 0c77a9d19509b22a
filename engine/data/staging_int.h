/* staging_int.h: what staging.c and staging_rows.c share; not an API
 * (staging.h is). */
#ifndef PL_STAGING_INT_H
#define PL_STAGING_INT_H

#include "store.h"

#include <limits.h>
#include <msgpack.h>
#include <stdint.h>

/* The first byte of a DB_STAGE key that is not a staged row's (a model
 * name never starts with either). */
#define TAG_ROW 0x01     /* a row of a batch */
#define TAG_REJECT 0x02  /* a reject */

/* staging_counter returns the next value of meta counter name (from 1) in
 * *out and stores it. 0, PL_EFORMAT for a damaged counter, or LMDB's error. */
int staging_counter(Txn *t, const char *name, uint64_t *out);

/* staging_get reads the record under key k (klen bytes) of sub-database db
 * into *v (valid until the next update): 0, missing when there is none, or
 * LMDB's error. */
int staging_get(Txn *t, int db, const void *k, size_t klen, int missing, MDB_val *v);

/* STAGING_WALK_END, returned by a StagingWalk, ends the walk with 0. */
#define STAGING_WALK_END INT_MIN

/* StagingWalk is called on a record of a walk with the walk's cursor (it may
 * delete the record under it: the walk goes on with the next one); 0 goes
 * on, STAGING_WALK_END stops, anything else stops and is returned. */
typedef int (*StagingWalk)(MDB_cursor *c, const MDB_val *k, const MDB_val *v, void *arg);

/* staging_walk calls fn, in key order from key start (slen bytes) on, on
 * each record of db whose key starts with the first plen bytes of start and
 * is klen bytes long (klen 0: any length); it stops at the first other key.
 * 0, fn's code, or LMDB's error. */
int staging_walk(Txn *t, int db, const void *start, size_t slen, size_t plen, size_t klen,
                 StagingWalk fn, void *arg);

/* staging_put_changed puts the record sb holds under DB_META's key name,
 * unless it is there already as it is (then it writes nothing). */
int staging_put_changed(Txn *t, const char *name, const msgpack_sbuffer *sb);

/* staging_rec_begin starts a record in sb (to free with
 * msgpack_sbuffer_destroy) through pk: an array of n elements, the first of
 * them format (the record's format version). */
void staging_rec_begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t n, uint32_t format);

/* staging_pack_str packs NUL-terminated s as a msgpack string. */
void staging_pack_str(msgpack_packer *pk, const char *s);

#endif
