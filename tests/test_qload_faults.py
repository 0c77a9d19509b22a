"""qload under warehouse faults, against a real PostgreSQL (tests/pgfix.py).

WarehouseCrashTest: a warehouse tuned with synchronous_commit=off (COMMIT
returns before its WAL is flushed) is crashed with `pg_ctl stop -m immediate`
several times while `qload --follow` loads a steady stream of batches that
tests/prog_stagefill keeps sealing; at the end every staged row must be in the
table exactly once. The table has no key, so a batch loaded twice shows.

TableMismatchTest: a table that does not match the model (a wrong column
type, an extra NOT NULL column without a default, a CHECK constraint every row
violates, an UNLOGGED table) fails the batch with the difference, turns no row
into a reject, and the batch loads normally after the table is fixed and
`qctl batches retry`; a few genuinely bad rows still become rejects.
"""
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgfix  # noqa: E402
import plhelp  # noqa: E402
import test_qload  # noqa: E402  (its PIPELINE; importing the module runs none of its tests)

SLOW = plhelp.SLOW


# ---------------------------------------------------------------- item 3
class WarehouseCrashTest(test_qload.QloadCase):
    # A tuned warehouse: COMMIT does not wait for the WAL flush unless the
    # session asks for it (pgfix's cluster also runs with fsync=off, which a
    # crash of the server process, unlike one of the machine, does not punish).
    cluster_conf = {"synchronous_commit": "off"}

    CRASHES = 6
    ROUNDS = 10         # staging rounds between two crashes
    ROWS = 40           # rows per round, sealed in batches of 20

    def test_crashes_during_follow_lose_nothing(self):
        self.sql("CREATE TABLE events (id integer, payload text)")  # no key: doubles show
        self.assertEqual(self.one("SHOW synchronous_commit"), "off")
        nid = self.ROWS
        self.stage("events", [{"id": i, "payload": "first"} for i in range(nid)], batch_rows=20)
        errf = open(os.path.join(self.tmp, "qload.err"), "w+b")
        self.addCleanup(errf.close)
        q = subprocess.Popen([self.qload_bin, "--data", self.data, "--target", self.dsn,
                              "--follow", "--poll", "0.02", "--json"],
                             env=self.env, stdout=subprocess.PIPE, stderr=errf)
        self.addCleanup(self.end, q)

        def ledger():
            return int(self.one("SELECT CASE WHEN to_regclass('pickline_ledger') IS NULL"
                                " THEN 0 ELSE (xpath('/row/n/text()', query_to_xml("
                                "'SELECT count(*) AS n FROM pickline_ledger', false, true,"
                                " '')))[1]::text::int END"))
        for crash in range(self.CRASHES):
            for _ in range(self.ROUNDS):
                self.stage("events", [{"id": i, "payload": "c%d" % crash}
                                      for i in range(nid, nid + self.ROWS)], batch_rows=20)
                nid += self.ROWS
                time.sleep(0.02)
            # Crash right after qload committed something (its newest
            # commits are the ones an asynchronous commit still holds).
            seen = ledger()
            self.stage("events", [{"id": i, "payload": "last%d" % crash}
                                  for i in range(nid, nid + 20)])
            nid += 20
            self.assertTrue(pgfix.wait_until(lambda: ledger() > seen, 30 * SLOW, interval=0.01),
                            "qload loaded nothing in 30 s")
            self.pg.crash()
            # Rows keep arriving while the warehouse is down.
            self.stage("events", [{"id": i, "payload": "down%d" % crash}
                                  for i in range(nid, nid + self.ROWS)], batch_rows=20)
            nid += self.ROWS
            time.sleep(0.2)
            if q.poll() is not None:
                errf.seek(0)
                self.fail("qload --follow exited (%d) when the warehouse crashed: %s" % (
                    q.returncode, errf.read().decode("utf-8", "replace")[-3000:]))
            self.pg.start()

        def settled():
            return all(b["state"] == "loaded" for b in self.batches())
        self.assertTrue(pgfix.wait_until(settled, 120 * SLOW, interval=0.2),
                        "batches not all loaded: %s" % self.qctl("batches", "--limit", "0").out)
        q.send_signal(signal.SIGTERM)
        out, _ = q.communicate(timeout=60 * SLOW)
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
        self.assertEqual(q.returncode, 0, err[-3000:])
        self.assertIn("reconnect", err)

        total, distinct, lost = self.sql(
            "SELECT count(*), count(DISTINCT id), %d - count(DISTINCT id) FROM events "
            "WHERE id BETWEEN 0 AND %d" % (nid, nid - 1))[0]
        self.assertEqual((int(lost), int(total) - int(distinct)), (0, 0),
                         "rows staged %d: %s lost, %d duplicated after %d crashes" % (
                             nid, lost, int(total) - int(distinct), self.CRASHES))
        self.assertEqual(int(self.one("SELECT count(*) FROM events")), nid)
        bat = self.batches()
        self.assertEqual(sum(b["rows"] for b in bat), nid)
        self.assertEqual(int(self.one("SELECT sum(rows) FROM pickline_ledger")), nid)
        self.assertEqual(len(bat), int(self.one("SELECT count(*) FROM pickline_ledger")))
        # The server runs with fsync=off: qload says once what that risks.
        self.assertEqual(err.count("fsync = off"), 1, err[-3000:])

    def test_leftover_rows_not_dropped_when_ledger_lost_the_batch(self):
        """qload is killed after it marked a batch loaded and before it dropped
        the rows; meanwhile the warehouse lost the commit (a crash of a server
        that did not flush it, a restore from a backup). The next run finds
        the batch's ledger row missing and loads the batch again instead of
        dropping the only copy of its rows."""
        self.sql("CREATE TABLE events (id integer, payload text)")
        ids = self.stage("events", [{"id": i, "payload": "p"} for i in range(300)],
                         batch_rows=100)
        r = self.qload("--json", env_extra={"PICKLINE_QLOAD_CRASH": "after_mark"})
        self.assertEqual(r.code, -signal.SIGKILL, r)
        self.assertEqual(self.batches()[0]["state"], "loaded")
        self.assertEqual(self.one("SELECT count(*) FROM events"), "100")
        # The warehouse loses batch 1 (its rows and its ledger row).
        self.sql("DELETE FROM events; DELETE FROM pickline_ledger")
        r = self.qload("--json")
        self.assertEqual(r.code, 0, r)
        self.assertIn("batch %d" % ids[0], r.err)
        self.assertIn("not in the warehouse", r.err)
        self.assertEqual(r.json()["rows"], 300, r)
        self.assertEqual(self.sql("SELECT count(*), count(DISTINCT id) FROM events"),
                         [["300", "300"]])
        self.assertEqual([b["state"] for b in self.batches()], ["loaded"] * 3)
        # The ledger holds it now: a later run only drops rows, loads nothing.
        r = self.qload("--json")
        self.assertEqual((r.code, r.json()["rows"]), (0, 0), r)
        self.assertEqual(self.one("SELECT count(*) FROM events"), "300")

    def test_leftover_rows_dropped_when_ledger_holds_the_batch(self):
        self.sql("CREATE TABLE events (id integer, payload text)")
        self.stage("events", [{"id": i, "payload": "p"} for i in range(200)], batch_rows=100)
        r = self.qload("--json", env_extra={"PICKLINE_QLOAD_CRASH": "after_mark"})
        self.assertEqual(r.code, -signal.SIGKILL, r)
        r = self.qload("--json")
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.json()["rows"], 100, r)   # only batch 2 was left to load
        self.assertEqual(self.sql("SELECT count(*), count(DISTINCT id) FROM events"),
                         [["200", "200"]])
        # batch 1's rows are gone from the store
        show = self.qctl_json("batches", "show", "1")
        self.assertEqual((show["state"], show["data"]), ("loaded", []), show)


    def test_unlogged_ledger_is_refused(self):
        # A crash empties an UNLOGGED table: the ledger would forget the
        # batches it recorded, and they would load twice.
        self.sql("CREATE UNLOGGED TABLE pickline_ledger (store text, batch bigint, model text,"
                 " rows bigint, rejected bigint, loaded_at timestamptz NOT NULL DEFAULT now(),"
                 " PRIMARY KEY (store, batch)); CREATE TABLE events (id integer, payload text)")
        self.stage("events", [{"id": i, "payload": "p"} for i in range(10)])
        r = self.qload("--json")
        self.assertEqual(r.code, 1, r)
        self.assertIn("pickline_ledger is UNLOGGED", r.err)
        self.assertIn("SET LOGGED", r.err)
        self.assertEqual(self.one("SELECT count(*) FROM events"), "0")
        self.assertEqual([b["state"] for b in self.batches()], ["sealed"])
        self.sql("ALTER TABLE pickline_ledger SET LOGGED")
        r = self.qload("--json")
        self.assertEqual((r.code, r.json()["rows"]), (0, 10), r)


# ---------------------------------------------------------------- item 6
class TableMismatchTest(test_qload.QloadCase):

    def events(self, n, payload="p%d", start=0):
        return [{"id": i, "payload": payload % i} for i in range(start, start + n)]

    def failed_then_retried(self, ddl, fix, rows=60, expect=()):
        """Stages rows events into a table made by ddl: the batch must fail
        (no rejects, nothing loaded) with an error holding every string of
        expect; after fix and `qctl batches retry` it loads all rows."""
        (bid,) = self.stage("events", self.events(rows))
        self.sql(ddl)
        r = self.qload("--json")
        self.assertEqual(r.code, 1, r)
        res = r.json()
        self.assertEqual((res["failed"], res["rejected"], res["rows"]), (1, 0, 0), r)
        (b,) = self.batches()
        self.assertEqual((b["id"], b["state"], b["removed"]), (bid, "failed", 0), b)
        for word in expect:
            self.assertIn(word, b["error"])
            self.assertIn(word, r.err)
        self.assertIn("qctl batches retry %d" % bid, b["error"])
        self.assertEqual(self.qctl_json("rejects"), [])
        self.assertEqual(self.one("SELECT count(*) FROM events"), "0")
        self.assertEqual(self.one("SELECT count(*) FROM pickline_ledger"), "0")
        # qctl batches shows the reason
        self.assertIn("failed", self.qctl("batches").out)
        # the operator fixes the table and retries
        self.sql(fix)
        self.qctl("batches", "retry", str(bid))
        r = self.qload("--json")
        self.assertEqual(r.code, 0, r)
        self.assertEqual((r.json()["rows"], r.json()["rejected"]), (rows, 0), r)
        (b,) = self.batches()
        self.assertEqual((b["state"], b["rows"], b["removed"]), ("loaded", rows, 0), b)
        self.assertEqual(self.sql("SELECT count(*), count(DISTINCT id) FROM events"),
                         [[str(rows), str(rows)]])
        return b

    def test_wrong_column_type_fails_batch(self):
        self.failed_then_retried(
            "CREATE TABLE events (id uuid, payload text)",
            "ALTER TABLE events ALTER COLUMN id TYPE integer USING NULL",
            expect=("column id", "uuid", "integer"))

    def test_wrong_types_in_merge_mode_fail_batch(self):
        (bid,) = self.stage("things", [{"id": i, "i": i, "ts": "2024-01-02T03:04:05Z"}
                                       for i in range(30)])
        self.sql("CREATE TABLE things (id integer PRIMARY KEY, s text, v varchar(200),"
                 " n numeric, big bigint, i boolean, b boolean, ts integer, d date, j jsonb)")
        r = self.qload("--mode", "merge", "--json")
        self.assertEqual(r.code, 1, r)
        self.assertEqual((r.json()["failed"], r.json()["rejected"]), (1, 0), r)
        (b,) = self.batches()
        self.assertEqual((b["state"], b["removed"]), ("failed", 0))
        # both differences, each with the table's type and the model's
        for word in ("column i", "boolean", "column ts", "datetime", "integer"):
            self.assertIn(word, b["error"])
        self.assertEqual(self.qctl_json("rejects"), [])
        self.sql("DROP TABLE things")
        self.qctl("batches", "retry", str(bid))
        r = self.qload("--mode", "merge", "--create-tables", "--json")
        self.assertEqual((r.code, r.json()["rows"]), (0, 30), r)

    def test_extra_not_null_column_fails_batch(self):
        # Columns the model does not fill but that take care of themselves
        # (a default, an identity, a generated column, nullable) are fine.
        self.failed_then_retried(
            "CREATE TABLE events (id integer, payload text, source text NOT NULL,"
            " n bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL DEFAULT now(),"
            " twice integer GENERATED ALWAYS AS (id * 2) STORED, note text)",
            "ALTER TABLE events ALTER COLUMN source SET DEFAULT 'pickline'",
            expect=("column source", "NOT NULL", "default"))
        self.assertEqual(self.sql("SELECT DISTINCT source FROM events"), [["pickline"]])

    def test_check_constraint_refusing_every_row_fails_batch(self):
        b = self.failed_then_retried(
            "CREATE TABLE events (id integer, payload text CONSTRAINT ok_only"
            " CHECK (payload LIKE 'ok%'))",
            "ALTER TABLE events DROP CONSTRAINT ok_only",
            rows=20, expect=("ok_only", "23514", "20 of 20"))
        self.assertEqual(b["attempts"], 2)

    def test_check_constraint_refusing_a_big_batch_fails_batch(self):
        # The decision comes from a sample of the refused rows, in the
        # middle of the batch; no row of the 5000 becomes a reject.
        n = 5000
        (bid,) = self.stage("events", self.events(n))
        self.sql("CREATE TABLE events (id integer, payload text CONSTRAINT ok_only"
                 " CHECK (payload LIKE 'ok%'))")
        r = self.qload("--json")
        self.assertEqual(r.code, 1, r)
        self.assertEqual((r.json()["failed"], r.json()["rejected"]), (1, 0), r)
        (b,) = self.batches()
        self.assertEqual((b["state"], b["removed"]), ("failed", 0))
        self.assertIn("ok_only", b["error"])
        self.assertEqual(self.qctl_json("rejects"), [])
        self.assertEqual(self.one("SELECT count(*) FROM events"), "0")

    def test_unlogged_table_fails_batch(self):
        self.failed_then_retried(
            "CREATE UNLOGGED TABLE events (id integer, payload text)",
            "ALTER TABLE events SET LOGGED",
            expect=("UNLOGGED", "SET LOGGED"))

    def test_follow_table_broken_then_fixed(self):
        """Under one long-lived connection (--follow) the table is checked
        again after a batch failed, so a fix and a retry load normally."""
        self.sql("CREATE TABLE events (id integer, payload text)")
        (a,) = self.stage("events", self.events(20))
        errf = open(os.path.join(self.tmp, "qload.err"), "w+b")
        self.addCleanup(errf.close)
        q = subprocess.Popen([self.qload_bin, "--data", self.data, "--target", self.dsn,
                              "--follow", "--poll", "0.05", "--json"],
                             env=self.env, stdout=subprocess.PIPE, stderr=errf)
        self.addCleanup(self.end, q)

        def state(bid):
            return {b["id"]: b["state"] for b in self.batches()}.get(bid)

        def wait_state(bid, want):
            ok = pgfix.wait_until(lambda: state(bid) == want, 30 * SLOW)
            self.assertTrue(ok, "batch %d is %s, not %s" % (bid, state(bid), want))

        wait_state(a, "loaded")
        # A constraint every new row violates: the batch fails as a whole.
        self.sql("ALTER TABLE events ADD CONSTRAINT ok_only CHECK (payload LIKE 'ok%') NOT VALID")
        (b,) = self.stage("events", self.events(20, start=100))
        wait_state(b, "failed")
        # The constraint goes, but a NOT NULL column without a default comes.
        self.sql("ALTER TABLE events DROP CONSTRAINT ok_only;"
                 " ALTER TABLE events ADD COLUMN source text NOT NULL DEFAULT 'old';"
                 " ALTER TABLE events ALTER COLUMN source DROP DEFAULT")
        (c,) = self.stage("events", self.events(20, start=200))
        wait_state(c, "failed")
        errs = {x["id"]: x["error"] for x in self.batches()}
        self.assertIn("ok_only", errs[b])
        self.assertIn("column source is NOT NULL without a default", errs[c])
        # The operator fixes the table and retries both.
        self.sql("ALTER TABLE events ALTER COLUMN source SET DEFAULT 'new'")
        self.qctl("batches", "retry", str(b))
        self.qctl("batches", "retry", str(c))
        wait_state(b, "loaded")
        wait_state(c, "loaded")
        q.send_signal(signal.SIGTERM)
        out, _ = q.communicate(timeout=30 * SLOW)
        self.assertEqual(q.returncode, 0)
        self.assertEqual(self.sql("SELECT source, count(*) FROM events GROUP BY 1 ORDER BY 1"),
                         [["new", "40"], ["old", "20"]])
        self.assertEqual(self.qctl_json("rejects"), [])

    def test_some_bad_rows_still_rejected(self):
        # Genuinely bad rows, not a table that refuses the batch: 40 of 400
        # rows violate the CHECK (every tenth); a batch of two bad rows; and a
        # burst of 40 bad rows at the head of a batch of 300 (the first 32
        # refused rows all agree, but rows further on load).
        rows = self.events(400)
        for i in range(0, 400, 10):
            rows[i]["payload"] = "bad"
        self.stage("events", rows)
        self.stage("events", [{"id": 1000, "payload": "bad"}, {"id": 1001, "payload": "bad"}])
        burst = self.events(300, start=2000)
        for r in burst[:40]:
            r["payload"] = "bad"
        self.stage("events", burst)
        self.sql("CREATE TABLE events (id integer, payload text CONSTRAINT no_bad"
                 " CHECK (payload <> 'bad'))")
        r = self.qload("--json")
        self.assertEqual(r.code, 1, r)
        res = r.json()
        self.assertEqual((res["batches"], res["failed"], res["rejected"], res["rows"]),
                         (3, 0, 82, 620), r)
        self.assertEqual([(b["state"], b["removed"]) for b in self.batches()],
                         [("loaded", 40), ("loaded", 2), ("loaded", 40)])
        rej = self.qctl_json("rejects", "--limit", "0")
        self.assertEqual(sorted(x["row"]["id"] for x in rej),
                         list(range(0, 400, 10)) + [1000, 1001] + list(range(2000, 2040)))
        self.assertTrue(all("no_bad" in x["errors"][0]["message"] for x in rej))
        self.assertEqual(self.one("SELECT count(*) FROM events WHERE payload = 'bad'"), "0")
        self.assertEqual(self.sql("SELECT count(*), count(DISTINCT id) FROM events"),
                         [["620", "620"]])


if __name__ == "__main__":
    unittest.main()
