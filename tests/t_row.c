/* t_row.c: see t_row.h. */
#include "t_row.h"

#include "row.h"

#include <msgpack.h>

int tr_rt(const char *in, size_t n, Strbuf *out, char *err, size_t errlen)
{
    msgpack_sbuffer sb;
    int rc;

    msgpack_sbuffer_init(&sb);
    sb_reset(out);
    rc = row_from_json(in, n, &sb, err, errlen);
    if (rc == 0)
        rc = row_to_json(sb.data, sb.size, out);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}
