/* cycles.h: the durable cycle benchmark both qbench and enginebench run. */
#ifndef PL_BENCH_CYCLES_H
#define PL_BENCH_CYCLES_H

#include "store.h"

#include <stddef.h>

/* cycles_group runs n put -> reserve -> ack cycles of body-byte jobs on
 * queue "bench" of s: one producer thread putting `batch` jobs per op and
 * one consumer thread acking its previous batch and reserving the next in
 * one op, both through one group committer (a consumer with nothing to do
 * parks). Returns cycles per second; *per_commit gets the mean operations
 * per commit. */
double cycles_group(Store *s, size_t body, size_t batch, size_t n, double *per_commit);

#endif
