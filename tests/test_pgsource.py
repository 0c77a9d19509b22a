"""End-to-end tests of the PostgreSQL sources (issue 5): pg_notify and
pg_extract keeping an edge copy of a table current.

Two real PostgreSQL clusters are started for the class (pgfix): the source,
with a users table whose trigger NOTIFYs {"table","key"} on every insert and
update (a soft delete is an update of deleted_at), and the edge target. Each
test gets fresh databases, runs the real `pickline run` with pg_notify +
pg_extract, and `qload --follow --mode merge --create-tables` into the target,
and compares the tables row for row, value for value (`SELECT ... ORDER BY
key` text of both). Crash tests SIGKILL the engine; the source outage stops
the source cluster (pg_ctl stop -m fast) and starts it again.

Waits are bounded polls scaled by plhelp.SLOW. PICKLINE_KEEP_TEST_DIRS=1
keeps the work directories."""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase, qctl
from plhelp import SLOW, binary, pipeline, wait_for
import pgfix

COLS = ("tenant, id, first_name, last_name, title, email, score, active, profile, "
        "created_at, updated_at, deleted_at")

SCHEMA = r"""
CREATE TABLE users (
    tenant integer NOT NULL,
    id bigint NOT NULL,
    first_name varchar(50) NOT NULL,
    last_name varchar(50) NOT NULL,
    title varchar(50),
    email varchar(99),
    score numeric(12,4),
    active boolean,
    profile jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz NOT NULL DEFAULT '2999-12-31T00:00:00Z',
    PRIMARY KEY (tenant, id));
CREATE FUNCTION users_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('users_changed', json_build_object('table', 'users',
        'key', json_build_object('tenant', NEW.tenant, 'id', NEW.id))::text);
    RETURN NEW;
END $$;
CREATE TRIGGER users_notify AFTER INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_notify();
"""

NOTIFY = """
  - name: users_notices
    kind: pg_notify
    dsn: "env:PGSRC_TEST_DSN"
    channels: [users_changed]
    output: pg_keys
    wake: users_src
"""


def insert_sql(lo, hi, tenant=1, ts=None):
    """INSERT of ids lo..hi-1 with hostile text; ts: one updated_at for all."""
    upd = "'%s'" % ts if ts else "now()"
    return ("INSERT INTO users (tenant, id, first_name, last_name, title, email, score, active, "
            "profile, created_at, updated_at) SELECT %d, g, 'F\"' || g || E',\\n\\\\ \u00e9', "
            "'L' || g, CASE WHEN g %% 3 = 0 THEN NULL WHEN g %% 3 = 1 THEN '' ELSE 'Dr' END, "
            "'u' || g || '@example.com', g * 1.5 + 0.0001, g %% 2 = 0, "
            "json_build_object('n', g, 's', 'x\"y')::jsonb, now() - interval '1 day', %s "
            "FROM generate_series(%d, %d) g;" % (tenant, upd, lo, hi - 1))


class PgSourceTest(EngineTestCase):
    @classmethod
    def setUpClass(cls):
        cls.src = pgfix.PgCluster()
        try:
            # The engine reads as its own role, so a test can lock it out.
            cls.src.psql("CREATE ROLE extractor LOGIN")
            cls.dst = pgfix.PgCluster()
        except BaseException:
            cls.src.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.src.close()
        cls.dst.close()

    def setUp(self):
        super().setUp()
        self.loaders = []
        self.addCleanup(self.stop_loaders)
        if not self.src.running:
            self.src.start()
        self.sdb = self.src.create_db("src")
        self.tdb = self.dst.create_db("edge")
        self.src.psql(SCHEMA + "GRANT SELECT ON users TO extractor;", self.sdb)
        self.edsn = self.sdb.replace("user=postgres", "user=extractor")
        os.environ["PGSRC_TEST_DSN"] = self.edsn

    def stop_loaders(self):
        for p, f in self.loaders:
            if p.poll() is None:
                p.kill()
            p.wait()
            f.close()

    def failure_report(self):
        out = [super().failure_report()]
        for _, f in self.loaders:
            try:
                with open(f.name, "rb") as r:
                    out.append("--- qload\n%s" % r.read().decode()[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    # -- helpers

    def engine(self, notify=True, page=5000, interval=0.2, rows=1000, extra=""):
        """An engine of pg_extract.yml, started: with the pg_notify stage
        (notify), the extract's page, interval and rows, and extra lines."""
        eng = super().engine(pipeline("pg_extract", notify=NOTIFY if notify else "", extra=extra),
                             dsn=self.edsn, page=page, interval=interval, rows=rows)
        return eng.start(timeout=15)

    def loader(self, eng):
        f = open(os.path.join(self.dir, "qload-%d.log" % (len(self.loaders) + 1)), "wb")
        p = subprocess.Popen([binary("qload"), "--data", eng.data, "--target", self.tdb, "--follow",
                              "--mode", "merge", "--create-tables", "--poll", "0.1"],
                             stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        self.loaders.append((p, f))
        return p

    def rows(self, pg, dsn, where=""):
        return pg.psql("SELECT %s FROM users %s ORDER BY tenant, id" % (COLS, where), dsn)

    def target_rows(self, where=""):
        try:
            return self.rows(self.dst, self.tdb, where)
        except pgfix.PgFixError:
            return None  # the table is not created yet

    def wait_equal(self, eng, timeout=30, where=""):
        """Waits until the target equals the source (row for row, value for
        value), and returns the rows."""
        box = {}

        def same():
            box["s"] = self.rows(self.src, self.sdb, where)
            box["t"] = self.target_rows(where)
            return box["t"] is not None and box["s"] == box["t"]

        if not wait_for_quiet(same, timeout):
            s, t = box.get("s") or [], box.get("t") or []
            sk = {(r[0], r[1]) for r in s}
            tk = {(r[0], r[1]) for r in t}
            diff = [(a, b) for a, b in zip(s, t) if a != b][:3]
            self.fail("target != source after %.0fs: %d source rows, %d target rows, missing %s, "
                      "extra %s, first differences %s\n%s" % (
                          timeout * SLOW, len(s), len(t), sorted(sk - tk)[:10],
                          sorted(tk - sk)[:10], diff, eng.stderr_tail(30)))
        return box["s"]

    def ledger(self):
        """(batches, rows) in the target's ledger."""
        r = self.dst.psql("SELECT count(*), coalesce(sum(rows), 0) FROM pickline_ledger", self.tdb)
        return int(r[0][0]), int(r[0][1])

    def staged_rows(self, eng):
        """Rows in every batch the engine sealed or holds open."""
        return sum(b["rows"] for b in self.batches(eng))

    def wait_loaded(self, eng, timeout=30):
        """Waits until every batch is loaded (none open with rows, none sealed)."""
        def done():
            bs = self.batches(eng)
            return bs and all(b["state"] == "loaded" for b in bs if b["rows"] > 0)
        self.assertTrue(wait_for_quiet(done, timeout), self.batches(eng))

    def wait_keys_done(self, eng):
        """Waits until every key notice on pg_keys is worked (none buried)."""
        def drained():
            st = eng.stats().get("pg_keys", {})
            return sum(st.get(k, 0) for k in ("ready", "reserved", "delayed", "buried")) == 0
        self.assertTrue(wait_for_quiet(drained, 10), eng.stats())

    # -- tests

    def test_initial_copy_values_and_rejects(self):
        """The first run copies every row exactly (quotes, commas, newlines,
        backslashes, unicode, NULL versus '', numerics, booleans, json,
        timestamps); an invalid row becomes a reject and stops nothing."""
        self.src.psql(insert_sql(1, 1201), self.sdb)
        self.src.psql("INSERT INTO users (tenant, id, first_name, last_name, email) "
                      "VALUES (2, 7, 'Bad', 'Email', 'not-an-email')", self.sdb)
        eng = self.engine(page=500)
        self.loader(eng)
        rows = self.wait_equal(eng, where="WHERE email <> 'not-an-email'")
        self.assertEqual(len(rows), 1200)
        self.assertIn(["1", "3", 'F"3,\n\\ \u00e9', "L3", None, "u3@example.com", "4.5001", "f",
                       '{"n": 3, "s": "x\\"y"}'], [r[:9] for r in rows])
        self.assertEqual(rows[0][4], "")      # '' stays '' (g % 3 == 1)
        self.assertEqual(rows[1][4], "Dr")
        self.assertEqual(self.dst.scalar("SELECT count(*) FROM users WHERE tenant = 2", self.tdb), "0")
        rej = self.rejects(eng, "users")
        self.assertEqual(len(rej), 1, rej)
        self.assertIn("email", json.dumps(rej))
        self.assertEqual(eng.terminate()[0], 0)

    def test_same_timestamp_pages_exactly_once(self):
        """500 rows sharing one updated_at, paged 50 at a time: each row is
        staged exactly once (no notices here: only the watermark extract)."""
        self.src.psql(insert_sql(1, 501, ts="2024-05-01 10:00:00.123456+00"), self.sdb)
        self.src.psql(insert_sql(501, 521, ts="2024-05-01 10:00:00.123457+00"), self.sdb)
        eng = self.engine(notify=False, page=50)
        self.loader(eng)
        self.wait_equal(eng)
        self.wait_loaded(eng)
        self.assertEqual(self.staged_rows(eng), 520)
        self.assertEqual(self.ledger()[1], 520)
        # The cursor is the last row of the last page.
        self.assertRegex(eng.stderr(), "connected to the source")

    def test_updates_while_paging(self):
        """Rows updated (and inserted) while the extract is paging all arrive."""
        self.src.psql(insert_sql(1, 3001), self.sdb)
        eng = self.engine(page=50, interval=0.1)
        self.loader(eng)
        for i in range(20):
            lo = 1 + i * 150
            self.src.psql("UPDATE users SET last_name = last_name || '-u%d', "
                          "updated_at = clock_timestamp() WHERE id BETWEEN %d AND %d;" % (i, lo, lo + 9)
                          + insert_sql(5000 + i * 5, 5005 + i * 5), self.sdb)
            time.sleep(0.02)
        rows = self.wait_equal(eng, timeout=45)
        self.assertEqual(len(rows), 3100)
        self.assertEqual(sum(1 for r in rows if "-u" in r[3]), 200)

    def test_sigkill_mid_extract_then_restart(self):
        """SIGKILL while the initial extract pages; the restart goes on from
        the committed cursor: no row missing, none staged twice."""
        n = 20000
        self.src.psql(insert_sql(1, n + 1), self.sdb)
        eng = self.engine(notify=False, page=200, rows=2000)

        def some():
            return self.staged_rows(eng) >= 1000
        self.assertTrue(wait_for_quiet(some, 30), eng.stderr_tail())
        eng.kill()
        staged = self.staged_rows(eng)
        self.assertLess(staged, n, "the extract finished before the kill; make the table bigger")
        eng.start(timeout=15)
        self.loader(eng)
        rows = self.wait_equal(eng, timeout=60)
        self.assertEqual(len(rows), n)
        self.wait_loaded(eng)
        self.assertEqual(self.staged_rows(eng), n, "a row was staged twice or lost")
        self.assertEqual(self.ledger()[1], n)
        self.assertEqual(self.ledger()[0], len([b for b in self.batches(eng) if b["rows"]]))

    def test_source_outage_catch_up(self):
        """The source stops and starts; changes made while the engine was
        disconnected arrive through the catch-up after the reconnect."""
        self.src.psql(insert_sql(1, 201), self.sdb)
        eng = self.engine(interval=30)  # only notices and reconnects wake it
        self.loader(eng)
        self.wait_equal(eng)
        # Lock the engine out, then restart the server: it stays down while
        # the rows change (their notices go to nobody).
        self.src.psql("ALTER ROLE extractor NOLOGIN")
        self.src.stop()
        self.assertTrue(wait_for_quiet(lambda: eng.stderr().count(" down: ") >= 2, 10),
                        eng.stderr_tail())
        self.src.start()
        self.src.psql("UPDATE users SET title = 'gap', updated_at = clock_timestamp() "
                      "WHERE id <= 50;" + insert_sql(300, 320), self.sdb)
        time.sleep(1.0)
        self.assertIsNone(self.dst.scalar("SELECT id FROM users WHERE title = 'gap' LIMIT 1",
                                          self.tdb), "a change arrived while the engine was "
                          "locked out: the test does not test the catch-up")
        self.src.psql("ALTER ROLE extractor LOGIN")
        rows = self.wait_equal(eng, timeout=45)
        self.assertEqual(sum(1 for r in rows if r[4] == "gap"), 50)
        self.assertEqual(len(rows), 220)
        self.assertRegex(eng.stderr(), "stage=users_notices listening on 1 channel again")

    def test_churn_edge_equals_source(self):
        """Inserts, updates and soft deletes in a churn: the edge copy equals
        the source, value for value; the notices flow through pg_keys."""
        self.src.psql(insert_sql(1, 501), self.sdb)
        eng = self.engine(interval=0.5)
        self.loader(eng)
        for i in range(30):
            sql = insert_sql(1000 + i * 10, 1010 + i * 10)
            sql += ("UPDATE users SET score = score + 1, active = NOT active, "
                    "profile = jsonb_set(profile, '{n}', to_jsonb(%d)), updated_at = clock_timestamp() "
                    "WHERE id %% 30 = %d;" % (i, i))
            sql += ("UPDATE users SET deleted_at = now(), updated_at = clock_timestamp() "
                    "WHERE id %% 97 = %d;" % (i % 97))
            self.src.psql(sql, self.sdb)
        rows = self.wait_equal(eng, timeout=45)
        self.assertEqual(len(rows), 800)
        self.assertGreater(sum(1 for r in rows if not r[11].startswith("2999")), 0)
        st = eng.stats()
        self.assertEqual(st.get("pg_keys", {}).get("buried", 0), 0, st)
        self.assertRegex(eng.stderr(), "stage=users_notices listening on 1 channel")

    def test_bad_notice_is_a_reject(self):
        """A payload that is not {"table","key"} is logged and recorded as a
        reject under the channel's name; good notices still flow."""
        eng = self.engine()
        self.loader(eng)
        self.assertTrue(wait_for_quiet(lambda: "listening on" in eng.stderr(), 15))
        self.src.psql("SELECT pg_notify('users_changed', 'not json'); "
                      "SELECT pg_notify('users_changed', '{\"table\":\"users\"}');", self.sdb)
        self.src.psql(insert_sql(1, 11), self.sdb)
        self.wait_equal(eng)

        def rejects():
            p = qctl(eng.data, "rejects", "users_changed", "--json")
            return p.returncode == 0 and len(json.loads(p.stdout)) == 2 and p.stdout
        out = wait_for_quiet(rejects, 10)
        self.assertTrue(out, eng.stderr_tail())
        self.assertIn("not a JSON object", out)
        self.assertIn("no \\\"key\\\" object", out)
        # Bad key notices put straight on pg_keys are buried with the reason.
        for body in ('{"table":"users","key":{"tenant":1}}', '{"table":"orders","key":{"id":1}}',
                     '{"table":"users","key":{"tenant":1,"id":"abc"}}', '[1]'):
            p = qctl(eng.data, "put", "pg_keys", body)
            self.assertEqual(p.returncode, 0, p.stderr)

        def buried():
            return len(eng.peek("pg_keys", "buried")) == 4
        self.assertTrue(wait_for_quiet(buried, 15), eng.peek("pg_keys"))
        errors = " ".join(j.get("error") or "" for j in eng.peek("pg_keys", "buried"))
        self.assertIn("no value for key column 'id'", errors)
        self.assertIn("extracts 'users'", errors)
        self.assertIn("does not fit table users", errors)
        self.assertIn("job body", errors)

    def test_filter_and_since(self):
        """where: and since: (the last 90 days) limit the copy, for the
        watermark extract and for key notices alike."""
        self.src.psql(insert_sql(1, 101) + insert_sql(1, 51, tenant=3) +
                      "UPDATE users SET updated_at = now() - interval '200 days' "
                      "WHERE id > 90;", self.sdb)
        eng = self.engine(page=20, extra='    since: 7776000\n    where: "tenant <> 3"')
        self.loader(eng)
        where = "WHERE tenant <> 3 AND updated_at > now() - interval '90 days'"
        rows = self.wait_equal(eng, where=where)
        self.assertEqual(len(rows), 90)
        self.src.psql("UPDATE users SET title = 'n' WHERE id = 5 AND tenant = 3;"
                      "UPDATE users SET title = 'old' WHERE id = 95 AND tenant = 1;" +
                      insert_sql(200, 210), self.sdb)
        rows = self.wait_equal(eng, where=where)
        self.assertEqual(len(rows), 100)
        self.wait_keys_done(eng)
        time.sleep(0.5)  # a wrongly staged row would be sealed and loaded by now
        self.assertEqual(self.dst.scalar("SELECT count(*) FROM users", self.tdb), "100")
        self.assertEqual(self.dst.scalar("SELECT count(*) FROM users WHERE tenant = 3 OR id > 90 "
                                         "AND id < 200", self.tdb), "0")

    def test_late_commit_arrives_by_notice(self):
        """A row changed with an updated_at behind the watermark (a
        transaction that committed late) is missed by the watermark extract
        and arrives through its notice (the key job path); a notice for a row
        deleted since is acked with nothing to do."""
        self.src.psql(insert_sql(1, 101), self.sdb)
        eng = self.engine(interval=0.1)
        self.loader(eng)
        self.wait_equal(eng)
        self.src.psql("UPDATE users SET title = 'late', updated_at = '2001-01-01T00:00:00Z' "
                      "WHERE id = 7; UPDATE users SET title = 'gone' WHERE id = 8; "
                      "DELETE FROM users WHERE id = 8;", self.sdb)
        rows = self.wait_equal(eng, where="WHERE id <> 8")
        self.assertEqual([r[4] for r in rows if r[1] == "7"], ["late"])
        # A hard delete is not carried (only soft deletes are): row 8 stays
        # as it was last extracted, or with its 'gone' title.
        self.assertEqual(self.dst.scalar("SELECT count(*) FROM users WHERE id = 8", self.tdb), "1")
        self.wait_keys_done(eng)


def wait_for_quiet(fn, timeout, interval=0.1):
    """wait_for without raising: the value, or None on timeout."""
    try:
        return wait_for(fn, timeout, interval, "condition")
    except AssertionError:
        return None


if __name__ == "__main__":
    unittest.main()
