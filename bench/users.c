/* users.c: the seed's users model and its row generator (users.h). */
#include "users.h"

#include "pl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char USERS_MODEL_YAML[] =
    "models:\n"
    "  users:\n"
    "    table: users\n"
    "    drift: reject\n"
    "    properties:\n"
    "      id:         {type: serial, key: true}\n"
    "      tenant:     {type: integer, required: true, min: 0, key: true}\n"
    "      first_name: {type: string, length: 50, required: true}\n"
    "      last_name:  {type: string, length: 50, required: true}\n"
    "      title:      {type: string, length: 50}\n"
    "      email:\n"
    "        type: string\n"
    "        length: [5, 99]\n"
    "        unique: true\n"
    "        format: email\n"
    "        messages:\n"
    "          length: \"email must be 5 to 99 characters long\"\n"
    "          format: \"email must look like name@example.com\"\n"
    "          unique: \"this email is already taken\"\n"
    "      passhash:   {type: string, length: 50}\n"
    "      salt:       {type: string, length: 50}\n"
    "      permission: {type: integer, default: 1}\n"
    "      phone:      {type: string, length: 50}\n"
    "      created_at: {type: datetime, required: true}\n"
    "      updated_at: {type: datetime}\n"
    "      deleted_at: {type: datetime, paranoid: true, default: \"2999-12-31T00:00:00Z\"}\n";

static const char *const firsts[] = {
    "James", "Mary", "José", "Zoë", "Łukasz", "Aoife", "Nguyễn", "Søren", "Chloé", "Mohammed",
    "Priya", "Wei", "Olga", "Jean-Luc", "Anne Marie", "D'Arcy", "Иван", "明美", "François",
    "Björn", "Siobhán", "Ümit", "Tomás", "Kai", "Fatima", "Lars", "Yuki", "Émile", "Renée", "Ana",
    "Christopher", "Maximilian-Alexander",
};
static const char *const lasts[] = {
    "Smith", "O'Brien", "García", "Müller", "Nakamura", "Kowalski", "van der Berg", "Smith, Jr.",
    "Ng", "Ødegård", "Papadopoulos", "Dupont", "\"The Rock\" Johnson", "Brown", "Ivanova",
    "Schröder", "Li", "MacDonald", "Fernández-López", "Okafor", "Wójcik", "Đorđević",
    "Wolfeschlegelsteinhausen", "田中",
};
static const char *const titles[] = {
    "Engineer", "Senior Software Engineer", "VP, Sales", "Director of \"Growth\"", "CFO", "Ops",
    "Account Manager, EMEA", "Intern", "Head of Data & Analytics", "Café manager",
    "Principal Site Reliability Engineer (Platform)", "",
};
static const char *const handles[] = {
    "jsmith", "mary.o", "jose", "zoe_k", "lukasz.w", "aoife", "nguyen.van", "soren", "c.dupont",
    "mo", "priya.r", "wei", "olga.iv", "jl.picard", "annemarie", "darcy", "ivan", "akemi",
    "francois", "bjorn.s",
};
static const char *const domains[] = {
    "example.com", "mail.example.org", "corp.example.co.uk", "example.net", "eu.example.de",
    "x.io",
};

#define NEL(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void pk_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pk_key(msgpack_packer *pk, const char *k)
{
    pk_str(pk, k, strlen(k));
}

static void pk_cstr(msgpack_packer *pk, const char *k, const char *v)
{
    pk_key(pk, k);
    pk_str(pk, v, strlen(v));
}

static size_t fmt_time(char *buf, size_t n, uint64_t secs, uint64_t r)
{
    time_t tt = (time_t)secs;
    struct tm tm;
    gmtime_r(&tt, &tm);
    size_t len = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    if (r % 10 == 0)
        len += (size_t)snprintf(buf + len, n - len, ".%06u", (unsigned)(r >> 8) % 1000000u);
    buf[len++] = 'Z';
    buf[len] = '\0';
    return len;
}

static void b64(char *out, size_t n, uint64_t seed)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 10 == 0)
            r = mix(seed + i);
        out[i] = a[r & 63];
        r >>= 6;
    }
    out[n] = '\0';
}

void users_row(size_t i, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    uint64_t r = mix(i), r2 = mix(i ^ 0xabcdef12345ULL), r3 = mix(i + 0x5555555555ULL);
    char buf[128];
    size_t n;

    msgpack_pack_map(&pk, 13);
    pk_key(&pk, "id");
    msgpack_pack_uint64(&pk, i + 1);
    pk_key(&pk, "tenant");
    msgpack_pack_int64(&pk, (int64_t)(r % 97) + 1);
    pk_cstr(&pk, "first_name", firsts[(r >> 8) % NEL(firsts)]);
    pk_cstr(&pk, "last_name", lasts[(r >> 16) % NEL(lasts)]);
    pk_key(&pk, "title");
    if ((r >> 24) % 5 == 0)
        msgpack_pack_nil(&pk);
    else {
        const char *t = titles[(r >> 28) % NEL(titles)];
        pk_str(&pk, t, strlen(t));
    }
    pk_key(&pk, "email");
    n = (size_t)snprintf(buf, sizeof buf, "%s.%zu@%s", handles[(r >> 32) % NEL(handles)], i + 1,
                         domains[(r >> 40) % NEL(domains)]);
    pk_str(&pk, buf, n);
    pk_key(&pk, "passhash");
    b64(buf, 44, r2);
    pk_str(&pk, buf, 44);
    pk_key(&pk, "salt");
    n = 16 + (size_t)((r2 >> 50) % 14);
    b64(buf, n, r3);
    pk_str(&pk, buf, n);
    pk_key(&pk, "permission");
    msgpack_pack_int64(&pk, (int64_t)((r >> 44) % 4) + 1);
    pk_key(&pk, "phone");
    switch ((r >> 48) % 10) {
    case 0: case 1: case 2:
        msgpack_pack_nil(&pk);
        break;
    case 3: case 4: case 5:
        n = (size_t)snprintf(buf, sizeof buf, "+1 (555) %03u-%04u", (unsigned)(r3 % 1000),
                             (unsigned)((r3 >> 10) % 10000));
        pk_str(&pk, buf, n);
        break;
    case 6: case 7:
        n = (size_t)snprintf(buf, sizeof buf, "+44 20 %04u %04u", (unsigned)(r3 % 10000),
                             (unsigned)((r3 >> 14) % 10000));
        pk_str(&pk, buf, n);
        break;
    default:
        n = (size_t)snprintf(buf, sizeof buf, "030 %08u", (unsigned)(r3 % 100000000));
        pk_str(&pk, buf, n);
        break;
    }
    uint64_t created = 1546300800 + r2 % (6 * 365 * 86400ULL); /* 2019 .. 2024 */
    pk_key(&pk, "created_at");
    n = fmt_time(buf, sizeof buf, created, r3 >> 4);
    pk_str(&pk, buf, n);
    pk_key(&pk, "updated_at");
    if ((r2 >> 40) % 4 == 0)
        msgpack_pack_nil(&pk);
    else {
        n = fmt_time(buf, sizeof buf, created + (r3 >> 20) % (365 * 86400ULL), r3 >> 9);
        pk_str(&pk, buf, n);
    }
    pk_key(&pk, "deleted_at");
    if ((r2 >> 56) % 20 == 0) {
        n = fmt_time(buf, sizeof buf, created + (r3 >> 30) % (400 * 86400ULL), 1);
        pk_str(&pk, buf, n);
    } else {
        pk_str(&pk, "2999-12-31T00:00:00Z", 20);
    }
}

void users_gen_init(UsersGen *g, const Model *m)
{
    memset(g, 0, sizeof *g);
    g->m = m;
    msgpack_sbuffer_init(&g->sb);
    msgpack_sbuffer_init(&g->vb);
    msgpack_zone_init(&g->zone, 4096);
    sb_init(&g->errs);
}

void users_gen_free(UsersGen *g)
{
    msgpack_sbuffer_destroy(&g->sb);
    msgpack_sbuffer_destroy(&g->vb);
    msgpack_zone_destroy(&g->zone);
    sb_free(&g->errs);
}

static msgpack_object unpack(UsersGen *g, const char *p, size_t n)
{
    msgpack_object o;
    size_t off = 0;
    msgpack_zone_clear(&g->zone);
    if (msgpack_unpack(p, n, &off, &g->zone, &o) != MSGPACK_UNPACK_SUCCESS || off != n) {
        fprintf(stderr, "users: a generated row is not one msgpack value (a bug in bench/users.c)\n");
        exit(1);
    }
    return o;
}

static int sampled(size_t i)
{
    return i < 2000 || i % 9973 == 0;
}

void users_gen_row(UsersGen *g, size_t i, const char **p, size_t *n)
{
    g->sb.size = 0;
    users_row(i, &g->sb);
    if (!g->validated && !sampled(i)) {
        *p = g->sb.data;
        *n = g->sb.size;
        return;
    }
    msgpack_object o = unpack(g, g->sb.data, g->sb.size);
    size_t nerr = 0;
    g->vb.size = 0;
    sb_reset(&g->errs);
    if (model_validate(g->m, &o, &g->vb, &g->errs, &nerr) != 0) {
        fprintf(stderr, "users: generated row %zu breaks the users model: [%s]\n", i,
                g->errs.buf ? g->errs.buf : "");
        exit(1);
    }
    if (!g->validated && (g->vb.size != g->sb.size || memcmp(g->vb.data, g->sb.data, g->sb.size))) {
        Strbuf a, b;
        sb_init(&a);
        sb_init(&b);
        row_to_json(g->sb.data, g->sb.size, &a);
        row_to_json(g->vb.data, g->vb.size, &b);
        fprintf(stderr, "users: note: model_validate normalises row %zu differently, so every row "
                "is validated from now on (slower)\n  ours:       %s\n  normalised: %s\n",
                i, a.buf, b.buf);
        sb_free(&a);
        sb_free(&b);
        g->validated = 1;
    }
    *p = g->validated ? g->vb.data : g->sb.data;
    *n = g->validated ? g->vb.size : g->sb.size;
}

void users_gen_json(UsersGen *g, size_t i, Strbuf *out)
{
    const char *p;
    size_t n;
    users_gen_row(g, i, &p, &n);
    if (row_to_json(p, n, out) != 0) {
        fprintf(stderr, "users: row %zu does not convert to JSON (a bug)\n", i);
        exit(1);
    }
}

void users_gen_csv(UsersGen *g, size_t i, Strbuf *out)
{
    const char *p;
    size_t n;
    users_gen_row(g, i, &p, &n);
    msgpack_object o = unpack(g, p, n);
    if (model_csv_row(g->m, &o, 0, out) != 0) {
        fprintf(stderr, "users: model_csv_row refused row %zu (a bug)\n", i);
        exit(1);
    }
}
