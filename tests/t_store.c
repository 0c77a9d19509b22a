/* t_store.c: see t_store.h. */
#include "t_store.h"

#include "pl.h"
#include "t.h"

uint64_t ts_now = 1700000000000ull;

static uint64_t ts_clock(void *arg)
{
    (void)arg;
    return ts_now;
}

Store *ts_open(const StoreOpts *o)
{
    StoreOpts d = {.create = 1};
    Store *s;
    T_OK(store_open(t_dir(), o ? o : &d, &s));
    store_set_clock(s, ts_clock, NULL);
    return s;
}

Txn *ts_wbegin(Store *s)
{
    Txn *t;
    T_OK(store_txn_begin(s, 1, &t));
    return t;
}
