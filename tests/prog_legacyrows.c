/* prog_legacyrows: writes what a pickline before staged-row instances left
 * in flight, for the upgrade test of tests/test_staged_rows.py: for each
 * line of stdin, a JSON object {"key":K,"row":{...}}, the legacy staged row
 * (MODEL, 0, K) (the bare msgpack map, as engine.c wrote it then) and a
 * legacy reference job {"model":MODEL,"key":K} on QUEUE, all in one
 * transaction. The engine need not run; the data directory must exist.
 *
 *   prog_legacyrows DIR MODEL QUEUE < rows.ndjson */
#include "pl.h"
#include "queue.h"
#include "row.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Legacy {
    const char *model, *queue;
    Strbuf in;
} Legacy;

static int write_all(Txn *t, void *arg)
{
    Legacy *l = arg;
    char *p = l->in.buf, *end = p + l->in.len;
    int rc = 0;
    while (p < end && !rc) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        msgpack_sbuffer mp, row;
        msgpack_sbuffer_init(&mp);
        msgpack_sbuffer_init(&row);
        RowView v;
        Strbuf key, body;
        sb_init(&key);
        sb_init(&body);
        if (n && (rc = row_from_json_object(p, n, &mp, NULL, 0)) == 0 &&
            (rc = row_view(&v, mp.data, mp.size)) == 0) {
            const msgpack_object *r = row_field(&v.root, "row");
            if (row_field_text(&v.root, "key", &key) || !r || r->type != MSGPACK_OBJECT_MAP) {
                rc = PL_EINVAL;
            } else {
                msgpack_packer pk;
                msgpack_packer_init(&pk, &row, msgpack_sbuffer_write);
                row_pack_object(&pk, r);
                Strbuf k;
                sb_init(&k);
                sb_adds(&k, l->model);
                sb_add(&k, "", 1);
                sb_add(&k, key.buf, key.len);
                MDB_val mk = {k.len, k.buf}, mv = {row.size, row.data};
                rc = mdb_put(t->mdb, txn_dbi(t, DB_STAGE), &mk, &mv, 0);
                sb_free(&k);
                sb_adds(&body, "{\"model\":");
                sb_add_json_string(&body, l->model, strlen(l->model));
                sb_adds(&body, ",\"key\":");
                sb_add_json_string(&body, key.buf, key.len);
                sb_adds(&body, "}");
                PutArgs a = {.body = body.buf, .len = body.len};
                uint64_t id;
                if (!rc)
                    rc = queue_put(t, l->queue, &a, &id, NULL);
            }
            row_view_free(&v);
        }
        sb_free(&key);
        sb_free(&body);
        msgpack_sbuffer_destroy(&mp);
        msgpack_sbuffer_destroy(&row);
        p += n + 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: prog_legacyrows DIR MODEL QUEUE < rows.ndjson\n");
        return 2;
    }
    Legacy l = {argv[2], argv[3], {0}};
    sb_init(&l.in);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
        sb_add(&l.in, buf, n);
    StoreOpts o = {0};
    Store *s;
    int rc = store_open(argv[1], &o, &s);
    if (!rc) {
        rc = store_run(s, write_all, &l);
        store_close(s);
    }
    sb_free(&l.in);
    if (rc) {
        fprintf(stderr, "prog_legacyrows: %s: %s\n", argv[1], pl_strerror(rc));
        return 1;
    }
    return 0;
}
