/* kinds.c: the list of the stage kinds built into pickline.
 *
 * Adding a kind is two files: stages/NAME.c, which defines
 * `const StageKind kind_NAME` (its spec: name, flags, keys; its slot_size
 * and functions), and one line KIND(NAME) below. The order is the one
 * `pickline check` lists the kinds in. */
#include "kinds.h"

#define KINDS(KIND) \
    KIND(http_poll) \
    KIND(http_extract) \
    KIND(http_enrich) \
    KIND(async_submit) \
    KIND(route) \
    KIND(validate) \
    KIND(batch) \
    KIND(pg_notify) \
    KIND(pg_extract) \
    KIND(noop)

#define DECLARE(name) extern const StageKind kind_##name;
KINDS(DECLARE)

#define KIND_OF(name) &kind_##name,
const StageKind *const stage_kinds[] = {KINDS(KIND_OF) NULL};

#define SPEC_OF(name) &kind_##name.spec,
const KindSpec *const stage_kind_specs[] = {KINDS(SPEC_OF) NULL};
