/* t_store.h: what test_queue.c and test_staging.c share (t_store.c): a
 * store in the test's directory (t_dir()) on a clock the test turns. */
#ifndef T_STORE_H
#define T_STORE_H

#include "store.h"

#include <stdint.h>

/* ts_now is the clock of the stores ts_open opens (milliseconds); a test
 * moves it to make delays, leases and seal timers come due. */
extern uint64_t ts_now;

/* ts_open opens (creates with o NULL) the store in t_dir() with options o
 * and its clock on ts_now; a failure fails the test. */
Store *ts_open(const StoreOpts *o);

/* ts_wbegin begins a write transaction on s; a failure fails the test. */
Txn *ts_wbegin(Store *s);

#endif
