/* rec.c: msgpack encoding of job headers and queue records.
 *
 * Job header, version 1:
 *   [1, qid, pri, state, attempts, kicks, created_ms, due_ms, ttr_ms, lease,
 *    key (bin or nil), error (str or nil)]
 * Queue record, version 2 (version 1 lacks key_retention_s, read as the
 * default: 24 h):
 *   [2, qid, name, created_ms, ttr_ms, max_attempts, backoff_ms,
 *    backoff_max_ms, max_body, paused, ready, delayed, reserved, buried,
 *    puts, reserves, acks, releases, buries, kicks, expiries, deletes,
 *    key_retention_s] */
#include "rec.h"
#include "pl.h"

#include <string.h>

#define JOB_V1_FIELDS 12
#define QUEUE_V1_FIELDS 22
#define QUEUE_V2_FIELDS 23

void rec_init(Rec *r)
{
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
    if (!msgpack_zone_init(&r->zone, 2048))
        PL_ASSERT(0, "msgpack zone allocation");
}

void rec_destroy(Rec *r)
{
    msgpack_sbuffer_destroy(&r->sb);
    msgpack_zone_destroy(&r->zone);
}

static void pack_u64(msgpack_packer *pk, uint64_t v)
{
    msgpack_pack_uint64(pk, v);
}

void rec_job_encode(Rec *r, const JobRec *j, size_t *key_off, size_t *err_off)
{
    msgpack_packer *pk = &r->pk;
    r->sb.size = 0;
    msgpack_pack_array(pk, JOB_V1_FIELDS);
    pack_u64(pk, 1);
    pack_u64(pk, j->qid);
    pack_u64(pk, j->pri);
    pack_u64(pk, (uint64_t)j->state);
    pack_u64(pk, j->attempts);
    pack_u64(pk, j->kicks);
    pack_u64(pk, j->created_ms);
    pack_u64(pk, j->due_ms);
    pack_u64(pk, j->ttr_ms);
    pack_u64(pk, j->lease);
    *key_off = *err_off = 0;
    if (j->key) {
        msgpack_pack_bin(pk, j->keylen);
        *key_off = r->sb.size;
        msgpack_pack_bin_body(pk, j->key, j->keylen);
    } else {
        msgpack_pack_nil(pk);
    }
    if (j->error) {
        msgpack_pack_str(pk, j->errorlen);
        *err_off = r->sb.size;
        msgpack_pack_str_body(pk, j->error, j->errorlen);
    } else {
        msgpack_pack_nil(pk);
    }
}

/* Bytes of the header (after the type byte) and of the body of a scalar,
 * string, bin or ext, and the number of elements a container holds. */
static int mp_head(const unsigned char *p, size_t left, size_t *head, uint64_t *body, uint64_t *items)
{
    unsigned c = p[0];
    *head = 0, *body = 0, *items = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 0;
    if (c <= 0x8f) {
        *items = 2u * (c & 0x0f);
        return 0;
    }
    if (c <= 0x9f) {
        *items = c & 0x0f;
        return 0;
    }
    if (c <= 0xbf) {
        *body = c & 0x1f;
        return 0;
    }
    size_t w;
    switch (c) {
    case 0xc4: case 0xc5: case 0xc6: w = 1u << (c - 0xc4); break;        /* bin: len */
    case 0xc7: case 0xc8: case 0xc9: w = 1u << (c - 0xc7); break;        /* ext: len, type */
    case 0xca: *body = 4; return 0;
    case 0xcb: *body = 8; return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: *body = 1u << (c - 0xcc); return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: *body = 1u << (c - 0xd0); return 0;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: *body = 1 + (1u << (c - 0xd4)); return 0;
    case 0xd9: case 0xda: case 0xdb: w = 1u << (c - 0xd9); break;        /* str: len */
    case 0xdc: case 0xdd: w = 2u << (c - 0xdc); break;                   /* array: count */
    case 0xde: case 0xdf: w = 2u << (c - 0xde); break;                   /* map: count */
    default: return -1;                                                   /* 0xc1 */
    }
    if (left < 1 + w)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < w; i++)
        v = v << 8 | p[1 + i];
    *head = w;
    if (c >= 0xdc)
        *items = c >= 0xde ? 2 * v : v;
    else
        *body = v + (c >= 0xc7 && c <= 0xc9); /* ext: its type byte */
    return 0;
}

int rec_wellformed(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t off = 0;
    uint64_t pending = 1; /* values still to read */
    while (pending) {
        size_t head;
        uint64_t body, items;
        if (off >= len || mp_head(p + off, len - off, &head, &body, &items) != 0)
            return PL_ECORRUPT;
        off += 1 + head;
        /* Every value takes at least a byte: a count or a length beyond
         * what is left is damage, and must never size an allocation. */
        if (body > len - off)
            return PL_ECORRUPT;
        off += (size_t)body;
        if (items > len - off || pending - 1 + items > len - off)
            return PL_ECORRUPT;
        pending = pending - 1 + items;
    }
    return off == len ? 0 : PL_ECORRUPT;
}

/* Decode buf into the zone's object; the zone is cleared each time, so only
 * its first chunk is ever used for records this small. buf is checked
 * first: msgpack_unpack allocates what a container's count says. */
static int unpack_array(Rec *r, const void *buf, size_t len, msgpack_object **items, uint32_t *n)
{
    msgpack_object obj;
    size_t off = 0;
    msgpack_zone_clear(&r->zone);
    if (rec_wellformed(buf, len) != 0 ||
        msgpack_unpack(buf, len, &off, &r->zone, &obj) != MSGPACK_UNPACK_SUCCESS ||
        obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size < 1 ||
        obj.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return PL_ECORRUPT;
    *items = obj.via.array.ptr;
    *n = obj.via.array.size;
    return 0;
}

static int get_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return PL_EFORMAT;
    *v = o->via.u64;
    return 0;
}

static int get_u32(const msgpack_object *o, uint32_t *v)
{
    uint64_t x;
    if (get_u64(o, &x) || x > UINT32_MAX)
        return PL_EFORMAT;
    *v = (uint32_t)x;
    return 0;
}

static int get_bytes(const msgpack_object *o, const char **p, size_t *n)
{
    if (o->type == MSGPACK_OBJECT_NIL) {
        *p = NULL;
        *n = 0;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = o->via.str.ptr;
        *n = o->via.str.size;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        *p = o->via.bin.ptr;
        *n = o->via.bin.size;
        return 0;
    }
    return PL_EFORMAT;
}

/* The fast path of rec_job_decode: the header as rec_job_encode writes
 * it (a fixarray of 12, version 1, minimal integers); anything else goes to
 * the general decoder. 0, or -1 to fall back. */
static int rd_uint(const unsigned char **pp, const unsigned char *end, uint64_t *v)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return -1;
    unsigned c = *p++;
    size_t n;
    if (c <= 0x7f) {
        *v = c;
        *pp = p;
        return 0;
    }
    switch (c) {
    case 0xcc: n = 1; break;
    case 0xcd: n = 2; break;
    case 0xce: n = 4; break;
    case 0xcf: n = 8; break;
    default: return -1;
    }
    if ((size_t)(end - p) < n)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | p[i];
    *v = x;
    *pp = p + n;
    return 0;
}

static int rd_u32(const unsigned char **pp, const unsigned char *end, uint32_t *v)
{
    uint64_t x;
    if (rd_uint(pp, end, &x) || x > UINT32_MAX)
        return -1;
    *v = (uint32_t)x;
    return 0;
}

static int rd_bytes(const unsigned char **pp, const unsigned char *end, const char **s, size_t *n)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return -1;
    unsigned c = *p++;
    size_t len, hl;
    if (c == 0xc0) {
        *s = NULL;
        *n = 0;
        *pp = p;
        return 0;
    }
    if (c >= 0xa0 && c <= 0xbf) {
        len = c & 0x1f;
        hl = 0;
    } else if (c == 0xc4 || c == 0xd9) {
        hl = 1;
    } else if (c == 0xc5 || c == 0xda) {
        hl = 2;
    } else if (c == 0xc6 || c == 0xdb) {
        hl = 4;
    } else {
        return -1;
    }
    if (hl) {
        if ((size_t)(end - p) < hl)
            return -1;
        len = 0;
        for (size_t i = 0; i < hl; i++)
            len = len << 8 | p[i];
        p += hl;
    }
    if ((size_t)(end - p) < len)
        return -1;
    *s = (const char *)p;
    *n = len;
    *pp = p + len;
    return 0;
}

static int job_decode_fast(const void *buf, size_t len, JobRec *j)
{
    const unsigned char *p = buf, *end = p + len;
    uint64_t v, state;
    if (len < 13 || p[0] != (0x90 | JOB_V1_FIELDS) || p[1] != 1)
        return -1;
    p += 2;
    if (rd_u32(&p, end, &j->qid) || rd_u32(&p, end, &j->pri) || rd_uint(&p, end, &state) ||
        rd_u32(&p, end, &j->attempts) || rd_u32(&p, end, &j->kicks) || rd_uint(&p, end, &v))
        return -1;
    j->created_ms = v;
    if (rd_uint(&p, end, &j->due_ms) || rd_u32(&p, end, &j->ttr_ms) || rd_uint(&p, end, &j->lease) ||
        rd_bytes(&p, end, &j->key, &j->keylen) || rd_bytes(&p, end, &j->error, &j->errorlen) ||
        p != end || state < JOB_READY || state > JOB_BURIED)
        return -1;
    j->state = (int)state;
    return 0;
}

int rec_job_decode(Rec *r, const void *buf, size_t len, JobRec *j)
{
    if (job_decode_fast(buf, len, j) == 0)
        return 0;
    msgpack_object *a;
    uint32_t n;
    uint64_t state;
    int rc = unpack_array(r, buf, len, &a, &n);
    if (rc)
        return rc;
    if (a[0].via.u64 > 1)
        return PL_EFORMAT;
    if (a[0].via.u64 != 1 || n < JOB_V1_FIELDS)
        return PL_ECORRUPT;
    if (get_u32(&a[1], &j->qid) || get_u32(&a[2], &j->pri) || get_u64(&a[3], &state) ||
        get_u32(&a[4], &j->attempts) || get_u32(&a[5], &j->kicks) ||
        get_u64(&a[6], &j->created_ms) || get_u64(&a[7], &j->due_ms) ||
        get_u32(&a[8], &j->ttr_ms) || get_u64(&a[9], &j->lease) ||
        get_bytes(&a[10], &j->key, &j->keylen) || get_bytes(&a[11], &j->error, &j->errorlen) ||
        state < JOB_READY || state > JOB_BURIED)
        return PL_ECORRUPT;
    j->state = (int)state;
    return 0;
}

void rec_queue_encode(Rec *r, const QueueStats *q)
{
    msgpack_packer *pk = &r->pk;
    size_t nl = strlen(q->name);
    r->sb.size = 0;
    msgpack_pack_array(pk, QUEUE_V2_FIELDS);
    pack_u64(pk, 2);
    pack_u64(pk, q->qid);
    msgpack_pack_str(pk, nl);
    msgpack_pack_str_body(pk, q->name, nl);
    pack_u64(pk, q->created_ms);
    pack_u64(pk, q->conf.ttr_ms);
    pack_u64(pk, q->conf.max_attempts);
    pack_u64(pk, q->conf.backoff_ms);
    pack_u64(pk, q->conf.backoff_max_ms);
    pack_u64(pk, q->conf.max_body);
    pack_u64(pk, (uint64_t)q->paused);
    const uint64_t c[] = {q->ready, q->delayed, q->reserved, q->buried, q->puts, q->reserves,
                          q->acks, q->releases, q->buries, q->kicks, q->expiries, q->deletes};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        pack_u64(pk, c[i]);
    pack_u64(pk, q->conf.key_retention_s);
}

int rec_queue_decode(Rec *r, const void *buf, size_t len, QueueStats *q)
{
    msgpack_object *a;
    uint32_t n;
    const char *name;
    size_t nl;
    uint64_t paused;
    int rc = unpack_array(r, buf, len, &a, &n);
    if (rc)
        return rc;
    uint64_t ver = a[0].via.u64;
    if (ver > 2)
        return PL_EFORMAT;
    if (ver < 1 || n < (ver == 1 ? QUEUE_V1_FIELDS : QUEUE_V2_FIELDS))
        return PL_ECORRUPT;
    memset(q, 0, sizeof *q);
    if (get_u32(&a[1], &q->qid) || get_bytes(&a[2], &name, &nl) || !name ||
        nl > QUEUE_NAME_MAX || get_u64(&a[3], &q->created_ms) ||
        get_u32(&a[4], &q->conf.ttr_ms) || get_u32(&a[5], &q->conf.max_attempts) ||
        get_u32(&a[6], &q->conf.backoff_ms) || get_u32(&a[7], &q->conf.backoff_max_ms) ||
        get_u32(&a[8], &q->conf.max_body) || get_u64(&a[9], &paused))
        return PL_ECORRUPT;
    memcpy(q->name, name, nl);
    q->name[nl] = '\0';
    q->paused = paused != 0;
    uint64_t *c[] = {&q->ready, &q->delayed, &q->reserved, &q->buried, &q->puts, &q->reserves,
                     &q->acks, &q->releases, &q->buries, &q->kicks, &q->expiries, &q->deletes};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        if (get_u64(&a[10 + i], c[i]))
            return PL_ECORRUPT;
    q->conf.key_retention_s = 86400;
    if (ver >= 2 && get_u32(&a[22], &q->conf.key_retention_s))
        return PL_ECORRUPT;
    return 0;
}
