/* staging_int.h: what staging.c and staging_rows.c share; not an API
 * (staging.h is). */
#ifndef PL_STAGING_INT_H
#define PL_STAGING_INT_H

#include "store.h"

#include <stdint.h>

/* The first byte of a DB_STAGE key that is not a staged row's (a model
 * name never starts with either). */
#define TAG_ROW 0x01     /* a row of a batch */
#define TAG_REJECT 0x02  /* a reject */

/* staging_counter returns the next value of meta counter name (from 1) in
 * *out and stores it. 0, PL_EFORMAT for a damaged counter, or LMDB's error. */
int staging_counter(Txn *t, const char *name, uint64_t *out);

#endif
