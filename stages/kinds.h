/* kinds.h: the stage kinds built into pickline (stages/kinds.c). main()
 * hands both lists, which hold the same kinds in the same order, to
 * pipeline_load (the specs) and engine_open (the kinds). */
#ifndef PL_STAGES_KINDS_H
#define PL_STAGES_KINDS_H

#include "stage.h"

extern const StageKind *const stage_kinds[];     /* NULL-terminated */
extern const KindSpec *const stage_kind_specs[]; /* &stage_kinds[i]->spec, NULL-terminated */

#endif
