/* t_service.c: see t_service.h. */
#include "t_service.h"
#include "t.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

typedef struct Answer {
    char *path, *header, *body;
    unsigned status;
} Answer;

static struct {
    pthread_mutex_t mu;
    struct MHD_Daemon *d;
    char base[64];
    Answer *answers;
    size_t nanswers;
    TsRequest *reqs;
    size_t nreqs;
} sv = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Upload: a request being read. */
typedef struct Upload {
    char *target;     /* as sent (from the URI log callback) */
    FILE *f;          /* the body, written into p as it comes */
    char *p;
    size_t len;
} Upload;

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    T_CHECK(d != NULL);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    char **h = cls;
    size_t old = *h ? strlen(*h) : 0, n = strlen(key) + strlen(value ? value : "") + 3;
    *h = realloc(*h, old + n + 1);
    T_CHECK(*h != NULL);
    snprintf(*h + old, n + 1, "%s: %s\n", key, value ? value : "");
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ccls,
                         enum MHD_RequestTerminationCode code)
{
    (void)cls, (void)c, (void)code;
    Upload *u = *ccls;
    if (u) {
        if (u->f)
            fclose(u->f);
        free(u->target);
        free(u->p);
        free(u);
        *ccls = NULL;
    }
}

/* on_uri: the request line's target as sent, before libmicrohttpd decodes it. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls, (void)c;
    Upload *u = calloc(1, sizeof *u);
    T_CHECK(u != NULL);
    u->target = dup_n(uri, strlen(uri));
    return u;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **ccls)
{
    (void)cls, (void)version;
    Upload *u = *ccls;
    T_CHECK(u != NULL);
    if (!u->f && !u->p) { /* the first call: the headers */
        u->f = open_memstream(&u->p, &u->len);
        T_CHECK(u->f != NULL);
        return MHD_YES;
    }
    if (*size) {
        T_EQ(fwrite(data, 1, *size, u->f), *size);
        *size = 0;
        return MHD_YES;
    }
    T_EQ(fclose(u->f), 0); /* the body is complete in p, len */
    u->f = NULL;
    TsRequest r = {0};
    r.method = dup_n(method, strlen(method));
    r.target = dup_n(u->target, strlen(u->target));
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, &r.headers);
    if (!r.headers)
        r.headers = dup_n("", 0);
    r.body = dup_n(u->p, u->len);
    r.len = u->len;
    unsigned status = 404;
    const char *hdr = NULL, *body = "{\"error\":\"no answer set for this path\"}";
    pthread_mutex_lock(&sv.mu);
    sv.reqs = realloc(sv.reqs, (sv.nreqs + 1) * sizeof *sv.reqs);
    T_CHECK(sv.reqs != NULL);
    sv.reqs[sv.nreqs++] = r;
    for (size_t i = 0; i < sv.nanswers; i++)
        if (!strcmp(sv.answers[i].path, url)) {
            status = sv.answers[i].status;
            hdr = sv.answers[i].header;
            body = sv.answers[i].body;
        }
    struct MHD_Response *rs =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (hdr) {
        const char *colon = strchr(hdr, ':');
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(colon - hdr), hdr);
        MHD_add_response_header(rs, name, colon + 2);
    }
    pthread_mutex_unlock(&sv.mu);
    MHD_add_response_header(rs, "Content-Type", "application/json");
    enum MHD_Result ok = MHD_queue_response(c, status, rs);
    MHD_destroy_response(rs);
    return ok;
}

void ts_start(void)
{
    sv.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                            NULL, handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
                            MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&(struct sockaddr_in){
                                .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)},
                            MHD_OPTION_END);
    T_CHECK(sv.d != NULL);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(sv.d, MHD_DAEMON_INFO_BIND_PORT);
    T_CHECK(di && di->port);
    snprintf(sv.base, sizeof sv.base, "http://127.0.0.1:%u", (unsigned)di->port);
}

void ts_stop(void)
{
    if (sv.d)
        MHD_stop_daemon(sv.d);
    sv.d = NULL;
    for (size_t i = 0; i < sv.nanswers; i++) {
        free(sv.answers[i].path);
        free(sv.answers[i].header);
        free(sv.answers[i].body);
    }
    free(sv.answers);
    sv.answers = NULL;
    sv.nanswers = 0;
    for (size_t i = 0; i < sv.nreqs; i++)
        ts_request_free(&sv.reqs[i]);
    free(sv.reqs);
    sv.reqs = NULL;
    sv.nreqs = 0;
}

const char *ts_base(void)
{
    return sv.base;
}

void ts_answer(const char *path, unsigned status, const char *header, const char *body)
{
    pthread_mutex_lock(&sv.mu);
    sv.answers = realloc(sv.answers, (sv.nanswers + 1) * sizeof *sv.answers);
    T_CHECK(sv.answers != NULL);
    sv.answers[sv.nanswers++] = (Answer){dup_n(path, strlen(path)),
                                         header ? dup_n(header, strlen(header)) : NULL,
                                         dup_n(body, strlen(body)), status};
    pthread_mutex_unlock(&sv.mu);
}

size_t ts_count(void)
{
    pthread_mutex_lock(&sv.mu);
    size_t n = sv.nreqs;
    pthread_mutex_unlock(&sv.mu);
    return n;
}

TsRequest ts_request(size_t i)
{
    pthread_mutex_lock(&sv.mu);
    T_CHECK(i < sv.nreqs);
    TsRequest *o = &sv.reqs[i], r = {dup_n(o->method, strlen(o->method)),
                                     dup_n(o->target, strlen(o->target)),
                                     dup_n(o->headers, strlen(o->headers)),
                                     dup_n(o->body, o->len), o->len};
    pthread_mutex_unlock(&sv.mu);
    return r;
}

void ts_request_free(TsRequest *r)
{
    free(r->method);
    free(r->target);
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

const char *ts_header(const TsRequest *r, const char *name)
{
    static char v[4096];
    size_t nl = strlen(name);
    for (const char *p = r->headers; *p;) {
        const char *e = strchr(p, '\n');
        if (!strncasecmp(p, name, nl) && p[nl] == ':' && p[nl + 1] == ' ') {
            snprintf(v, sizeof v, "%.*s", (int)(e - p - nl - 2), p + nl + 2);
            return v;
        }
        p = e + 1;
    }
    return NULL;
}
