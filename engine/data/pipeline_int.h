/* pipeline_int.h: what pipeline.c and pipeline_stages.c share; not an API
 * (pipeline.h is). */
#ifndef PL_PIPELINE_INT_H
#define PL_PIPELINE_INT_H

#include "pipeline.h"

/* pipeline_check_stages checks the stages: list n against kinds and fills
 * p->stages (p's queues and models are read already). 0, or PL_EINVAL with
 * l's message. */
int pipeline_check_stages(const ConfErr *l, Pipeline *p, const ConfNode *n,
                          const KindSpec *const *kinds);

#endif
