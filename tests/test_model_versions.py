"""End-to-end tests of a model that changes while data is in flight (issue
13, item 2): every staged row and batch records the version of the model it
was validated with, qload loads a batch with exactly that version's columns
(a merge never touches a column the row did not have), `qload --migrate`
adds new columns with their defaults and refuses, saying why, what it will
not do (a type change, a narrowed length, a dropped column), and
`qctl schema diff --target DSN` shows the model against the warehouse.

VersionTest runs the real engine (listener -> validate -> batch) twice on
one data directory: with the users model v1, then, after a SIGTERM, with v2,
which adds `tier` (default 'basic'); rows are in flight across the restart
in sealed batches and as staged rows waiting in a paused queue. MigrateTest
stages no rows (prog_stagefill stores each pipeline) and checks the
refusals. A real PostgreSQL serves each class (pgfix)."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase, qctl  # noqa: E402
from plhelp import SLOW, binary, pipeline, run, wait_for  # noqa: E402
import pgfix  # noqa: E402
import plhelp  # noqa: E402
import test_qload  # noqa: E402  (QloadCase; importing the module runs none of its tests)

TIER = "      tier: {type: string, length: 20, default: basic}"


def wait_quiet(fn, timeout, interval=0.1):
    try:
        return wait_for(fn, timeout, interval, "condition")
    except AssertionError:
        return None


class VersionTest(EngineTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pgfix.PgCluster()

    @classmethod
    def tearDownClass(cls):
        cls.pg.close()

    def setUp(self):
        super().setUp()
        self.dsn = self.pg.create_db("versions")

    def post(self, eng, row):
        r = eng.put("in_users", json.dumps({"model": "users", "row": row}))
        self.assertEqual(r.status // 100, 2, r)

    def sealed(self, eng):
        return sum(b["rows"] for b in self.batches(eng) if b["state"] in ("sealed", "loaded"))

    def wait_sealed(self, eng, n):
        self.assertTrue(wait_quiet(lambda: self.sealed(eng) == n, 20 * SLOW),
                        (self.batches(eng), eng.stderr_tail()))

    def qload(self, eng, *args):
        return run([binary("qload"), "--data", eng.data, "--target", self.dsn, "--json"] + list(args),
                   timeout=60)

    def users(self):
        return {int(r["id"]): (r["name"], r.get("tier"))
                for r in self.pg.query_json("SELECT * FROM users", self.dsn)}

    def in_flight(self):
        """Rows staged under v1 and loaded; more staged under v1 (sealed,
        and waiting in the paused queue final as staged rows); the engine
        restarted with v2 (tier, default 'basic'), the queue resumed, rows
        staged under v2. Returns the v2 engine; nothing loaded since the
        first load."""
        v1 = self.engine(pipeline("versions", tier=""), name="v1").start()
        for i in range(1, 7):
            self.post(v1, {"id": i, "name": "n%d" % i})
        self.wait_sealed(v1, 6)
        r = self.qload(v1, "--create-tables", "--mode", "merge")
        self.assertEqual(r.code, 0, r)
        # v1 rows in a sealed batch
        for i in (1, 2, 3):
            self.post(v1, {"id": i, "name": "u%d" % i})
        self.post(v1, {"id": 7, "name": "n7"})
        self.wait_sealed(v1, 10)
        # v1 rows validated, waiting for the batch stage
        p = qctl(v1.data, "pause", "final")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.post(v1, {"id": 4, "name": "u4"})
        self.post(v1, {"id": 8, "name": "n8"})
        self.assertTrue(wait_quiet(lambda: v1.stats().get("final", {}).get("ready") == 2, 20 * SLOW),
                        v1.stats())
        self.assertEqual(v1.terminate()[0], 0)
        v2 = self.engine(pipeline("versions", tier=TIER), data=v1.data, name="v2").start()
        p = qctl(v2.data, "resume", "final")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.wait_sealed(v2, 12)
        self.post(v2, {"id": 5, "name": "u5", "tier": "gold"})
        self.post(v2, {"id": 6, "name": "u6", "tier": "silver"})
        self.post(v2, {"id": 9, "name": "n9"})
        self.wait_sealed(v2, 15)
        return v2

    def check_loaded(self, eng):
        got = self.users()
        self.assertEqual(got, {
            1: ("u1", "platinum"),   # a v1 row keeps the value the column holds
            2: ("u2", "basic"), 3: ("u3", "basic"), 4: ("u4", "basic"),  # ... the default
            5: ("u5", "gold"), 6: ("u6", "silver"),                      # v2 rows set it
            7: ("n7", "basic"), 8: ("n8", "basic"),   # new v1 rows: the table's default
            9: ("n9", "basic"),                       # a v2 row without it: the model's default
        })
        # the batches say which version of the model they hold
        vers = {}
        for b in self.batches(eng):
            vers.setdefault(b["model_version"], 0)
            vers[b["model_version"]] += b["rows"]
        self.assertEqual(sorted(vers.values()), [3, 12], vers)

    def test_v1_rows_keep_what_the_new_column_holds(self):
        """The column added by hand (ALTER TABLE ... DEFAULT 'basic'): rows
        staged under v1 do not overwrite it with NULL in merge mode; rows
        staged under v2 set it."""
        eng = self.in_flight()
        self.pg.psql("ALTER TABLE users ADD COLUMN tier varchar(20) DEFAULT 'basic';"
                     "UPDATE users SET tier = 'platinum' WHERE id = 1", self.dsn)
        r = self.qload(eng, "--mode", "merge")
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.json()["rows"], 9, r)
        self.check_loaded(eng)

    def test_migrate_and_schema_diff(self):
        """qctl schema diff shows the column v2 adds; qload --migrate adds
        it with its default (then the diff is empty), and the merge keeps
        what v1 rows did not have."""
        eng = self.in_flight()
        p = qctl(eng.data, "schema", "diff", "--target", self.dsn)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"add\s+tier character varying\(20\) DEFAULT 'basic'")
        p = qctl(eng.data, "schema", "diff", "--target", self.dsn, "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        d = json.loads(p.stdout)
        self.assertFalse(d["in_sync"], d)
        users = [m for m in d["models"] if m["model"] == "users"][0]
        self.assertEqual([(c["column"], c["action"]) for c in users["changes"]], [("tier", "add")])
        audit = [m for m in d["models"] if m["model"] == "audit"][0]
        self.assertEqual(audit["changes"], [])
        # --migrate alone (--model audit: no batch of it to load)
        r = self.qload(eng, "--migrate", "--model", "audit")
        self.assertEqual(r.code, 0, r)
        self.assertIn("added column tier", r.err)
        self.assertEqual(r.json()["rows"], 0, r)
        p = qctl(eng.data, "schema", "diff", "--target", self.dsn, "--json")
        self.assertTrue(json.loads(p.stdout)["in_sync"], p.stdout)
        self.pg.psql("UPDATE users SET tier = 'platinum' WHERE id = 1", self.dsn)
        r = self.qload(eng, "--mode", "merge", "--migrate")
        self.assertEqual(r.code, 0, r)
        self.assertNotIn("added column", r.err)
        self.check_loaded(eng)


THINGS_V1 = """\
models:
  things:
    properties:
      id: {type: integer, key: true}
      a: {type: string, length: 20}
      b: {type: integer}
      c: {type: text, required: true}
      f: {type: string, length: 10}
"""

THINGS_V3 = """\
models:
  things:
    properties:
      id: {type: integer, key: true}
      a: {type: string, length: 10}
      b: {type: string, length: 50}
      d: {type: integer, required: true}
      e: {type: string, length: 30, default: "it's"}
      f: {type: string, length: 40}
      g: {type: json}
"""


class MigrateTest(test_qload.QloadCase):
    def store(self, text):
        """Stores the pipeline text in the data directory (no rows)."""
        path = self.write("p.yml", text + "queues:\n  final:\nstages:\n  - name: seal\n"
                          "    kind: batch\n    input: final\n")
        r = plhelp.run([self.fill_bin, self.data, path, "things"], input="")
        self.assertEqual(r.code, 0, r)

    def columns(self):
        return {r[0]: (r[1], r[2], r[3]) for r in self.sql(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull::text,"
            " pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d"
            " ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE attrelid = 'things'::regclass AND attnum > 0 AND NOT attisdropped")}

    def test_migrate_adds_widens_and_refuses(self):
        self.store(THINGS_V1)
        r = self.qload("--create-tables", "--json")
        self.assertEqual(r.code, 0, r)
        self.store(THINGS_V3)
        before = self.columns()
        p = plhelp.run([self.qctl_bin, "--data", self.data, "schema", "diff", "--target", self.dsn,
                        "--json"], env=self.env)
        self.assertEqual(p.code, 0, p)
        d = p.json()
        self.assertFalse(d["in_sync"])
        ch = {c["column"]: c for c in d["models"][0]["changes"]}
        self.assertEqual({k: c["action"] for k, c in ch.items()},
                         {"a": "refuse", "b": "refuse", "c": "refuse", "d": "refuse", "e": "add",
                          "f": "widen", "g": "add"})
        self.assertIn("narrow", ch["a"]["reason"])
        self.assertIn("type", ch["b"]["reason"])
        self.assertIn("drop", ch["c"]["reason"])
        self.assertIn("default", ch["d"]["reason"])
        self.assertEqual(ch["e"]["model_type"], "character varying(30)")
        self.assertEqual((ch["f"]["table_type"], ch["f"]["model_type"]),
                         ("character varying(10)", "character varying(40)"))
        # the human form names each
        p = plhelp.run([self.qctl_bin, "--data", self.data, "schema", "diff", "--target", self.dsn],
                       env=self.env)
        self.assertEqual(p.code, 0, p)
        for word in ("add", "widen", "refuse"):
            self.assertIn(word, p.out)
        r = self.qload("--migrate", "--json")
        # What it refused is left undone: exit 1, as for a rejected row, so
        # that a script or a deploy step sees it.
        self.assertEqual(r.code, 1, r)
        self.assertIn("4 changes refused", r.err)
        for col in ("a", "b", "c", "d"):
            self.assertRegex(r.err, r"refused.*\b%s\b|\b%s\b.*refused" % (col, col))
        after = self.columns()
        self.assertEqual(after["a"], before["a"])            # not narrowed
        self.assertEqual(after["b"], before["b"])            # type kept
        self.assertEqual(after["c"], before["c"])            # not dropped
        self.assertNotIn("d", after)                         # required, no default: not added
        self.assertEqual(after["e"], ("character varying(30)", "false",
                                      "'it''s'::character varying"))
        self.assertEqual(after["f"][0], "character varying(40)")
        self.assertEqual(after["g"][0], "jsonb")
        # what is left is what it refused
        p = plhelp.run([self.qctl_bin, "--data", self.data, "schema", "diff", "--target", self.dsn,
                        "--json"], env=self.env)
        left = {c["column"]: c["action"] for c in p.json()["models"][0]["changes"]}
        self.assertEqual(left, {"a": "refuse", "b": "refuse", "c": "refuse", "d": "refuse"})

    def test_migrate_creates_missing_tables(self):
        self.store(THINGS_V3)
        p = plhelp.run([self.qctl_bin, "--data", self.data, "schema", "diff", "--target", self.dsn,
                        "--json"], env=self.env)
        self.assertEqual(p.code, 0, p)
        self.assertEqual([c["action"] for c in p.json()["models"][0]["changes"]], ["create"])
        r = self.qload("--migrate", "--json")
        self.assertEqual(r.code, 0, r)
        self.assertNotIn("refused", r.err)
        self.assertIn("d", self.columns())


if __name__ == "__main__":
    unittest.main()
