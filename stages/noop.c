/* noop.c: moves each job on unchanged (tests, benchmarks, a plain hop). */
#include "common.h"

static void noop_start(Slot *s)
{
    slot_put(s, s->stage->conf->outputs[0], s->body.buf, s->body.len, NULL);
    slot_done(s);
}

const StageKind kind_noop = {.spec = {.name = "noop", .article = "a"}, .start = noop_start};
