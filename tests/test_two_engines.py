"""Several engines, one warehouse (issue 13, item 10): two pickline engines,
each with its own data directory and its own sources (disjoint key ranges),
load into one PostgreSQL table through one qload each, and every row lands
exactly once: the ledger (pickline_ledger) is keyed by (store, batch), the
store being each data directory's own identity, so batch 1 of one engine is
never taken for batch 1 of the other. One qload is killed in the middle of
a COPY (its crash seam: SIGKILL with half the rows sent), the other with a
real SIGKILL while it follows; both start again and carry on.

Two qloads that start at the same instant against a fresh warehouse both
create the ledger (and, with --create-tables, the models' tables): the one
that comes second waited for the first's catalog entry and then failed with
a unique violation on PostgreSQL's catalog. That is shown deterministically
by holding a session that is creating the ledger while a qload starts."""
import collections
import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgfix  # noqa: E402
from engine_fixtures import EngineTestCase, qctl  # noqa: E402
from plhelp import SLOW, binary, pipeline, run, wait_for  # noqa: E402

LEDGER_DDL = ("CREATE TABLE pickline_ledger (store text, batch bigint, model text, rows bigint, "
              "rejected bigint, loaded_at timestamptz NOT NULL DEFAULT now(), "
              "PRIMARY KEY (store, batch))")


class TwoEnginesTest(pgfix.ClusterTest, EngineTestCase):
    def setUp(self):
        super().setUp()
        self.procs = []
        self.addCleanup(self.stop_procs)

    def stop_procs(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()

    def feed(self, eng, ids, source):
        lines = "".join(json.dumps({"body": {"model": "events", "row": {"id": i, "source": source,
                                                                        "n": i * 7}}}) + "\n"
                        for i in ids)
        p = qctl(eng.data, "import", "rows", input=lines, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)

    def qload(self, eng, *args, env=None):
        """Starts qload for eng's data directory (its log in the test dir)."""
        log = open(os.path.join(self.dir, "qload-%s-%d.log" % (os.path.basename(eng.data),
                                                                len(self.procs))), "wb")
        p = subprocess.Popen([binary("qload"), "--data", eng.data, "--target", self.dsn,
                              "--create-tables", "--poll", "0.1"] + list(args),
                             stdout=log, stderr=log, env=dict(os.environ, **(env or {})))
        log.close()
        self.procs.append(p)
        return p

    def ledger(self):
        return self.pg.psql("SELECT store, count(*), sum(rows), sum(rejected) FROM pickline_ledger "
                            "GROUP BY store ORDER BY store", dsn=self.dsn)

    def loaded_batches(self, eng):
        bs = self.batches(eng)
        return [b for b in bs if b["state"] == "loaded"], [b for b in bs if b["state"] != "loaded"]

    def test_two_engines_load_one_table_exactly_once(self):
        # A table without a primary key: a batch loaded twice would show as
        # rows twice, not as rejects.
        self.pg.psql("CREATE TABLE events (id integer, source varchar(20), n integer)", dsn=self.dsn)
        a = self.engine(pipeline("fleet"), data=os.path.join(self.dir, "data-a"), name="a")
        b = self.engine(pipeline("fleet"), data=os.path.join(self.dir, "data-b"), name="b")
        a.start()
        b.start()
        self.feed(a, range(1, 601), "a")
        self.feed(b, range(10001, 10601), "b")
        self.wait_empty(a, ["rows", "valid"], timeout=60)
        self.wait_empty(b, ["rows", "valid"], timeout=60)

        # Both qloads start at once on a fresh warehouse (no ledger yet); A's
        # kills itself in the middle of the COPY of its first batch.
        qa = self.qload(a, env={"PICKLINE_QLOAD_CRASH": "during_copy"})
        qb = self.qload(b, "--follow")
        self.assertEqual(qa.wait(60 * SLOW), -signal.SIGKILL)
        qa = self.qload(a, "--follow")
        # B is killed for real while it follows, once it has loaded some.
        wait_for(lambda: len(self.ledger()) == 2 and min(int(r[1]) for r in self.ledger()) >= 3,
                 60, 0.05, "both qloads to have loaded 3 batches")
        qb.kill()
        qb.wait()
        qb = self.qload(b, "--follow")

        # More from both sources while the qloads follow.
        self.feed(a, range(601, 1201), "a")
        self.feed(b, range(10601, 11201), "b")
        self.wait_empty(a, ["rows", "valid"], timeout=60)
        self.wait_empty(b, ["rows", "valid"], timeout=60)

        def settled():
            la, na = self.loaded_batches(a)
            lb, nb = self.loaded_batches(b)
            return not na and not nb and sum(x["rows"] for x in la) == 1200 and \
                sum(x["rows"] for x in lb) == 1200 and (la, lb)

        la, lb = self.wait(settled, 120, "every batch of both engines loaded", a)
        for p in (qa, qb):
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(30 * SLOW), 0)

        rows = self.pg.psql("SELECT source, count(*), count(DISTINCT id), min(id), max(id), "
                            "sum(n) FROM events GROUP BY source ORDER BY source", dsn=self.dsn)
        self.assertEqual(rows, [["a", "1200", "1200", "1", "1200", str(7 * sum(range(1, 1201)))],
                                ["b", "1200", "1200", "10001", "11200",
                                 str(7 * sum(range(10001, 11201)))]])
        # The ledger: one entry per batch of each store, under two stores.
        led = self.ledger()
        self.assertEqual(len(led), 2, led)
        self.assertEqual(sorted((int(r[1]), int(r[2]), int(r[3])) for r in led),
                         sorted([(len(la), 1200, 0), (len(lb), 1200, 0)]))
        per = collections.Counter(r[0] for r in self.pg.psql(
            "SELECT store, batch FROM pickline_ledger", dsn=self.dsn))
        self.assertEqual(sorted(per.values()), sorted([len(la), len(lb)]))
        # Each store's batch numbers start at 1: only the store tells them apart.
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM pickline_ledger WHERE batch = 1",
                                        dsn=self.dsn), "2")
        self.assertEqual(self.rejects(a) + self.rejects(b), [])
        for e in (a, b):
            rc, _ = e.terminate()
            self.assertEqual(rc, 0, e.stderr_tail())

    def test_a_qload_starting_while_another_creates_the_tables(self):
        """A session creating the ledger (then a model's table) holds its
        catalog entries uncommitted, as a second qload starting at the same
        instant does; a qload that starts then waits for it, and once the
        other commits it goes on: the tables exist."""
        eng = self.engine(pipeline("fleet"))
        eng.start()
        rounds = [(LEDGER_DDL, range(1, 11)),
                  ("CREATE TABLE events (id integer PRIMARY KEY, source varchar(20) NOT NULL, "
                   "n integer)", range(11, 21))]
        for k, (ddl, ids) in enumerate(rounds):
            self.feed(eng, ids, "a")
            self.wait(lambda: sum(b["rows"] for b in self.batches(eng) if b["state"] == "sealed")
                      == len(ids), 20, "the rows sealed", eng)
            hold = subprocess.Popen([self.pg.psql_bin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                                     self.dsn], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            hold.stdin.write("BEGIN;\n%s;\n" % ddl)
            hold.stdin.flush()
            wait_for(lambda: self.pg.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'",
                dsn=self.dsn) == "1", 30, 0.05, "the other session to hold its CREATE TABLE")
            q = self.qload(eng, "--json")
            # qload waits on the other session's uncommitted catalog entry ...
            wait_for(lambda: self.pg.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'qload' AND "
                "wait_event_type = 'Lock'", dsn=self.dsn) == "1",
                30, 0.05, "qload to wait for the other session's CREATE TABLE")
            # ... which commits now, as the other qload would.
            out, err = hold.communicate("COMMIT;\n", timeout=30)
            self.assertEqual(hold.returncode, 0, err)
            rc = q.wait(60 * SLOW)
            with open(os.path.join(self.dir, "qload-data-%d.log" % (len(self.procs) - 1))) as f:
                log = f.read()
            self.assertEqual(rc, 0, log)
            self.assertEqual(json.loads(log.splitlines()[-1] if log.startswith("{") else
                                        [x for x in log.splitlines() if x.startswith("{")][0])
                             ["rows"], len(ids), log)
            if k == 0:  # the next round creates the table while the other session does
                self.assertEqual(self.pg.scalar("SELECT count(*) FROM events", dsn=self.dsn), "10")
                self.pg.psql("DROP TABLE events", dsn=self.dsn)
        self.assertEqual(self.pg.psql("SELECT min(id), max(id), count(*) FROM events",
                                      dsn=self.dsn), [["11", "20", "10"]])
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM pickline_ledger", dsn=self.dsn), "2")
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())


if __name__ == "__main__":
    unittest.main()
