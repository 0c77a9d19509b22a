"""End-to-end tests of deletes (issue 13, item 1): hard deletes at a
PostgreSQL source reach the edge copy, by their notice while the engine
runs and by the reconciliation for those made while nobody listened; and
the `_deleted` marker of rows that arrive over HTTP, which
`qload --mode merge` turns into a DELETE or an update of the paranoid
column, as the model's on_delete: says.

Real parts: two PostgreSQL clusters for the class (pgfix: the source with a
users table whose trigger NOTIFYs inserts, updates and deletes, and the
edge), the real `pickline run`, `qload --follow --mode merge
--create-tables`, and for the HTTP tests the engine's listener on loopback
and a plain `qload --mode merge` run. Waits are bounded polls scaled by
plhelp.SLOW."""
import json
import os
import subprocess
import sys
import time
import unittest
import unittest.mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineError, EngineTestCase, qctl  # noqa: E402
from plhelp import SLOW, binary, pipeline, run, wait_for  # noqa: E402
import pgfix  # noqa: E402

COLS = "tenant, id, name, title, updated_at, deleted_at"

SCHEMA = r"""
CREATE TABLE users (
    tenant integer NOT NULL,
    id bigint NOT NULL,
    name varchar(50) NOT NULL,
    title varchar(50),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at timestamptz NOT NULL DEFAULT '2999-12-31T00:00:00Z',
    PRIMARY KEY (tenant, id));
-- what examples/edge-copy/setup.sql installs: a notice for every insert,
-- update and delete, with the op and the key
CREATE FUNCTION users_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r users;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    PERFORM pg_notify('users_changed', json_build_object('table', 'users',
        'op', lower(TG_OP), 'key', json_build_object('tenant', r.tenant, 'id', r.id))::text);
    RETURN NULL;
END $$;
CREATE TRIGGER users_notify AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_notify();
"""

RECONCILE = """\
    reconcile_dsn: "${target}"
    reconcile_interval: ${every}
    reconcile_range: ${range}
    reconcile_pause: 0
"""


def insert_sql(lo, hi, tenant=1):
    return ("INSERT INTO users (tenant, id, name, title) SELECT %d, g, 'N\"' || g || E',\\n', "
            "CASE WHEN g %% 2 = 0 THEN NULL ELSE 'T' || g END FROM generate_series(%d, %d) g;"
            % (tenant, lo, hi - 1))


def wait_quiet(fn, timeout, interval=0.1):
    try:
        return wait_for(fn, timeout, interval, "condition")
    except AssertionError:
        return None


class PgDeleteTest(EngineTestCase):
    @classmethod
    def setUpClass(cls):
        cls.src = pgfix.PgCluster()
        try:
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
        self.sdb = self.src.create_db("src")
        self.tdb = self.dst.create_db("edge")
        self.src.psql(SCHEMA + "GRANT SELECT ON users TO extractor;", self.sdb)
        self.edsn = self.sdb.replace("user=postgres", "user=extractor")

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

    def engine_of(self, on_delete="", reconcile=None, interval=0.2):
        """An engine of pg_deletes.yml (not started): the model's on_delete
        line, and a reconcile: block {every, range[, dsn]} against the edge
        (or the dsn: given)."""
        rec = ""
        if reconcile:
            rec = RECONCILE.replace("${target}", reconcile.get("dsn", self.tdb)).replace(
                "${every}", str(reconcile["every"])).replace("${range}", str(reconcile["range"]))
        text = pipeline("pg_deletes", on_delete=("    on_delete: %s" % on_delete) if on_delete else "",
                        reconcile=rec)
        return super().engine(text, dsn=self.edsn, interval=interval)

    def loader(self, eng):
        f = open(os.path.join(self.dir, "qload-%d.log" % (len(self.loaders) + 1)), "wb")
        p = subprocess.Popen([binary("qload"), "--data", eng.data, "--target", self.tdb, "--follow",
                              "--mode", "merge", "--create-tables", "--poll", "0.1"],
                             stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        self.loaders.append((p, f))
        return p

    def rows(self, pg, dsn, where=""):
        return pg.psql("SELECT %s FROM users %s ORDER BY tenant, id" % (COLS, where), dsn)

    def wait_equal(self, eng, timeout=30, where=""):
        """Waits until the edge equals the source, row for row; returns them."""
        box = {}

        def same():
            box["s"] = self.rows(self.src, self.sdb, where)
            try:
                box["t"] = self.rows(self.dst, self.tdb, where)
            except pgfix.PgFixError:
                return False
            return box["s"] == box["t"]

        if not wait_quiet(same, timeout * SLOW):
            s, t = box.get("s") or [], box.get("t") or []
            sk = {(r[0], r[1]) for r in s}
            tk = {(r[0], r[1]) for r in t}
            self.fail("edge != source after %.0fs: %d source rows, %d edge rows, missing %s, "
                      "extra (still in the edge) %s\n%s" % (
                          timeout * SLOW, len(s), len(t), sorted(sk - tk)[:10],
                          sorted(tk - sk)[:12], eng.stderr_tail(30)))
        return box["s"]

    # ------------------------------------------------------------ tests

    def test_hard_deletes_reach_the_edge(self):
        """5 rows hard-DELETEd at the source disappear from the edge copy
        (on_delete: hard): the delete notice carries the key, pg_extract
        finds the row gone and stages a tombstone, qload's merge deletes it.
        A row deleted and inserted again in one go stays (the notice is
        checked against the source)."""
        self.src.psql(insert_sql(1, 51), self.sdb)
        eng = self.engine_of(on_delete="hard", interval=30).start(timeout=15)
        self.loader(eng)
        self.assertEqual(len(self.wait_equal(eng)), 50)
        self.src.psql("DELETE FROM users WHERE id IN (3, 9, 20, 21, 50);"
                      "DELETE FROM users WHERE id = 30;" + insert_sql(30, 31), self.sdb)
        rows = self.wait_equal(eng)
        self.assertEqual(len(rows), 45)
        self.assertEqual(self.dst.scalar("SELECT count(*) FROM users WHERE id IN (3, 9, 20, 21, 50)",
                                         self.tdb), "0")
        self.assertEqual(self.dst.scalar("SELECT count(*) FROM users WHERE id = 30", self.tdb), "1")
        st = eng.stats().get("pg_keys", {})
        self.assertEqual(st.get("buried", 0), 0, st)

    def test_hard_delete_soft_in_the_edge(self):
        """With on_delete: soft (the default of a model with a paranoid
        column) a hard delete at the source sets deleted_at in the edge."""
        self.src.psql(insert_sql(1, 21), self.sdb)
        eng = self.engine_of(interval=30).start(timeout=15)
        self.loader(eng)
        self.wait_equal(eng)
        self.src.psql("DELETE FROM users WHERE id IN (4, 5, 6, 7, 8)", self.sdb)

        def soft():
            return self.dst.scalar("SELECT count(*) FROM users WHERE deleted_at < '2999-01-01'",
                                   self.tdb) == "5"
        self.assertTrue(wait_quiet(soft, 30 * SLOW), eng.stderr_tail())
        self.assertEqual(self.dst.scalar("SELECT count(*) FROM users", self.tdb), "20")

    def test_deletes_while_stopped_found_by_reconciliation(self):
        """Rows deleted while the engine was stopped (their notices went to
        nobody) are found by the reconciliation (ranges of 7 keys compared
        by count and hash, the keys of a differing range read) and deleted
        in the edge; so are rows deleted without a notice while it runs."""
        self.src.psql(insert_sql(1, 101) + insert_sql(1, 11, tenant=2), self.sdb)
        eng = self.engine_of(on_delete="hard", reconcile={"every": 2, "range": 7}, interval=30)
        eng.start(timeout=15)
        self.loader(eng)
        self.assertEqual(len(self.wait_equal(eng)), 110)
        self.assertEqual(eng.terminate()[0], 0)
        gone = [3, 4, 17, 50, 51, 52, 53, 88, 99, 100]
        self.src.psql("DELETE FROM users WHERE tenant = 1 AND id IN (%s);"
                      "DELETE FROM users WHERE tenant = 2 AND id = 10;"
                      "UPDATE users SET title = 'kept', updated_at = clock_timestamp() WHERE id = 5;" % ",".join(map(str, gone))
                      + insert_sql(200, 203), self.sdb)
        eng.start(timeout=15)
        rows = self.wait_equal(eng, timeout=45)
        self.assertEqual(len(rows), 110 - 11 + 3)
        self.assertRegex(eng.stderr(), r"reconcil")
        # a delete nobody is told about, while the engine runs
        self.src.psql("ALTER TABLE users DISABLE TRIGGER users_notify;"
                      "DELETE FROM users WHERE tenant = 1 AND id IN (60, 61, 95);"
                      "ALTER TABLE users ENABLE TRIGGER users_notify;", self.sdb)
        rows = self.wait_equal(eng, timeout=45)
        self.assertEqual(len(rows), 110 - 11 + 3 - 3)
        st = eng.stats().get("pg_keys", {})
        self.assertEqual(st.get("buried", 0), 0, st)

    def test_reconciliation_pages_a_range_in_key_order(self):
        """A range that differs is read from the edge in pages of 1000 keys
        in the key's order (tenant, id as numbers, not as their text): rows
        deleted while the engine was stopped, anywhere in a range of 2,500
        keys, are all found (before, a page sorted by the keys' text, '1',
        '10', '100', '1000', ..., ended at id 18xx and the next page began
        after it: ids 2-9, 20-99 and 200-999 were never checked)."""
        self.src.psql(insert_sql(1, 2501), self.sdb)
        eng = self.engine_of(on_delete="hard", reconcile={"every": 2, "range": 10000},
                             interval=30)
        eng.start(timeout=15)
        self.loader(eng)
        self.assertEqual(len(self.wait_equal(eng, timeout=45)), 2500)
        self.assertEqual(eng.terminate()[0], 0)
        gone = [2, 5, 99, 700, 1001, 1500, 1999, 2000, 2400, 2500]
        self.src.psql("DELETE FROM users WHERE tenant = 1 AND id IN (%s)"
                      % ",".join(map(str, gone)), self.sdb)
        eng.start(timeout=15)
        rows = self.wait_equal(eng, timeout=45)
        self.assertEqual(len(rows), 2500 - len(gone))
        self.assertRegex(eng.stderr(), r"reconciled .* %d gone from the source" % len(gone))

    def test_reconcile_dsn_from_the_environment(self):
        """reconcile_dsn: "env:NAME" reads the edge's dsn when the engine
        starts; a variable that is not set, or holds no connection string,
        stops the start with a message that names reconcile_dsn (and not
        the value); set, the reconciliation finds a delete nobody was told
        about."""
        self.src.psql(insert_sql(1, 21), self.sdb)
        eng = self.engine_of(on_delete="hard", interval=30,
                             reconcile={"every": 1, "range": 5, "dsn": "env:PL_TEST_EDGE_DSN"})
        env = {k: v for k, v in os.environ.items() if k != "PL_TEST_EDGE_DSN"}
        with unittest.mock.patch.dict(os.environ, env, clear=True):
            with self.assertRaises(EngineError) as cm:
                eng.start(timeout=15)
        eng._close_err()
        self.assertIn("reconcile_dsn", str(cm.exception))
        self.assertIn("PL_TEST_EDGE_DSN", str(cm.exception))
        with self.assertRaises(EngineError) as cm:
            eng.start(timeout=15, env={"PL_TEST_EDGE_DSN": "secret-password-xyz"})
        eng._close_err()
        self.assertIn("reconcile_dsn: env:PL_TEST_EDGE_DSN is not a valid libpq connection",
                      str(cm.exception))
        self.assertNotIn("secret-password-xyz", str(cm.exception))
        eng.start(timeout=15, env={"PL_TEST_EDGE_DSN": self.tdb})
        self.loader(eng)
        self.assertEqual(len(self.wait_equal(eng)), 20)
        self.src.psql("ALTER TABLE users DISABLE TRIGGER users_notify;"
                      "DELETE FROM users WHERE tenant = 1 AND id IN (7, 19);"
                      "ALTER TABLE users ENABLE TRIGGER users_notify;", self.sdb)
        self.assertEqual(len(self.wait_equal(eng, timeout=45)), 18)


class HttpDeleteTest(EngineTestCase):
    """The `_deleted` marker of rows that come in over HTTP."""

    @classmethod
    def setUpClass(cls):
        cls.pg = pgfix.PgCluster()

    @classmethod
    def tearDownClass(cls):
        cls.pg.close()

    def setUp(self):
        super().setUp()
        self.dsn = self.pg.create_db("http")

    def post(self, eng, model, row):
        r = eng.put("in_" + model, json.dumps({"model": model, "row": row}))
        self.assertEqual(r.status // 100, 2, r)

    def staged(self, eng):
        """Rows in sealed (or loaded) batches."""
        return sum(b["rows"] for b in self.batches(eng) if b["state"] in ("sealed", "loaded"))

    def load(self, eng, rows):
        """Waits until rows rows are sealed, then qload --mode merge."""
        self.assertTrue(wait_quiet(lambda: self.staged(eng) == rows, 20 * SLOW),
                        (self.batches(eng), eng.stderr_tail()))
        r = run([binary("qload"), "--data", eng.data, "--target", self.dsn, "--mode", "merge",
                 "--create-tables", "--json"], timeout=60)
        self.assertEqual(r.code, 0, r)
        return r.json()

    def table(self, name):
        return {int(r[0]): r[1:] for r in self.pg.psql("SELECT * FROM %s ORDER BY id" % name, self.dsn)}

    def run_marker(self, docs_on_delete):
        eng = self.engine(pipeline("http_deletes", docs_on_delete=docs_on_delete)).start()
        for m in ("users", "items", "docs"):
            for i in range(1, 6):
                self.post(eng, m, {"id": i, "name": "%s%d" % (m, i)})
        self.load(eng, 15)
        for m in ("users", "items", "docs"):
            self.post(eng, m, {"id": 2, "_deleted": True})
            self.post(eng, m, {"id": 4, "_deleted": True, "deleted_at": "2024-05-05T05:05:05Z"}
                      if m != "items" else {"id": 4, "_deleted": True})
            self.post(eng, m, {"id": 5, "name": "again"})
        res = self.load(eng, 24)
        self.assertEqual(res["rejected"], 0, res)
        return eng

    def test_deleted_marker_by_model(self):
        """users (a paranoid column: on_delete soft by default) keeps its
        rows with deleted_at set; items (no paranoid column: hard) loses
        them; the other rows are as they were."""
        self.run_marker("")
        users = self.table("users")
        self.assertEqual(sorted(users), [1, 2, 3, 4, 5])
        self.assertEqual(users[4][1], "2024-05-05 05:05:05+00")
        self.assertNotEqual(users[2][1], "2999-12-31 00:00:00+00")
        self.assertEqual(users[2][0], "users2")       # the other columns stay
        self.assertEqual(users[1][1], "2999-12-31 00:00:00+00")
        self.assertEqual(users[5][0], "again")
        items = self.table("items")
        self.assertEqual(sorted(items), [1, 3, 5])
        self.assertEqual(items[5][0], "again")

    def test_on_delete_hard_with_a_paranoid_column(self):
        """on_delete: hard deletes the row even when the model has a
        paranoid column."""
        self.run_marker("    on_delete: hard")
        docs = self.table("docs")
        self.assertEqual(sorted(docs), [1, 3, 5])
        self.assertEqual(sorted(self.table("users")), [1, 2, 3, 4, 5])


if __name__ == "__main__":
    unittest.main()
