/* peertest: runs both benchmark peers (peer.h) at body=100 and batch 1, 100, 1000
 * and prints a table. A smoke test for the peers, not a benchmark of ours.
 *
 *   peertest [n]   n cycles per run (default 20000; 3000 for ping-pong beanstalkd)
 *
 * Exits 1 when any run failed, after having stopped every server it started. */
#include "peer.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define BODY 100

static void
row(const char *peer, size_t batch, size_t n, int rc, const PeerResult *r)
{
    if (rc == 0)
        printf("%-10s %5d %6zu %7zu %12.0f %9.0f %9.0f\n", peer, BODY, batch, n,
               r->cycles_per_s, r->p50_us, r->p99_us);
    else
        printf("%-10s %5d %6zu %7zu  FAILED: %s\n", peer, BODY, batch, n, r->err);
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    static const size_t batches[] = { 1, 100, 1000 };
    size_t nbig = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
    char workdir[] = "/tmp/peertest.XXXXXX";
    char err[256];
    PeerResult r;
    PgTmp *pg;
    int failed = 0;

    if (nbig == 0) {
        fprintf(stderr, "usage: peertest [n > 0]\n");
        return 2;
    }
    if (!mkdtemp(workdir)) {
        perror("peertest: mkdtemp");
        return 1;
    }
    printf("%-10s %5s %6s %7s %12s %9s %9s\n", "peer", "body", "batch", "n", "cycles/s",
           "p50_us", "p99_us");

    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        size_t n = batches[i] == 1 && nbig > 3000 ? 3000 : nbig;
        int rc = peer_beanstalkd_run(workdir, BODY, batches[i], n, &r);

        row("beanstalkd", batches[i], n, rc, &r);
        failed |= rc != 0;
    }

    pg = pgtmp_start(err, sizeof err);
    if (!pg) {
        printf("%-10s  FAILED: %s\n", "postgres", err);
        failed = 1;
    }
    for (size_t i = 0; pg && i < sizeof batches / sizeof batches[0]; i++) {
        int rc = peer_pg_run(pg, BODY, batches[i], nbig, &r);

        row("postgres", batches[i], nbig, rc, &r);
        failed |= rc != 0;
    }
    pgtmp_stop(pg);

    if (rmdir(workdir) == -1) {
        perror("peertest: rmdir workdir (peer left files behind?)");
        failed = 1;
    }
    return failed;
}
