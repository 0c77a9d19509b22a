/* inflight.c: reading the in-flight file (inflight.h). */
#include "inflight.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* engine_alive: DIR/engine.lock names "pid N, ..." of a live process. */
static int engine_alive(const char *dir)
{
    char path[4200], who[64] = "";
    snprintf(path, sizeof path, "%s/engine.lock", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = pread(fd, who, sizeof who - 1, 0);
    close(fd);
    who[n > 0 ? n : 0] = '\0';
    long pid = 0;
    if (sscanf(who, "pid %ld", &pid) != 1 || pid <= 0)
        return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int inflight_working(const char *dir, const char uuid[32], const uint32_t *qids, uint64_t *counts,
                     size_t n)
{
    if (n)
        memset(counts, 0, n * sizeof *counts);
    if (!n || !engine_alive(dir))
        return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/engine.inflight", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat sb;
    char *buf = NULL;
    int rc = -1;
    if (fstat(fd, &sb) != 0 || (size_t)sb.st_size < sizeof(InflightHead) || sb.st_size > (64 << 20))
        goto out;
    size_t len = (size_t)sb.st_size;
    buf = malloc(len);
    if (!buf || pread(fd, buf, len, 0) != (ssize_t)len)
        goto out;
    InflightHead h;
    memcpy(&h, buf, sizeof h);
    if (memcmp(h.magic, INFLIGHT_MAGIC, 8) != 0 || memcmp(h.uuid, uuid, 32) != 0 ||
        sizeof h + (size_t)h.nslots * sizeof(InflightEntry) > len)
        goto out;
    for (uint32_t i = 0; i < h.nslots; i++) {
        InflightEntry f;
        memcpy(&f, buf + sizeof h + i * sizeof f, sizeof f);
        if (!f.id)
            continue;
        for (size_t k = 0; k < n; k++)
            if (qids[k] == f.qid) {
                counts[k]++;
                break;
            }
    }
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}
