"""End-to-end tests of qload, the bulk loader, against a real PostgreSQL.

One throwaway cluster (tests/pgfix.py) serves the whole class; every test
gets a fresh database and a fresh data directory. Rows are staged with
tests/prog_stagefill (model_validate + staging_append, as the engine's
validate and batch stages do), then the real qload binary loads them, and
the tests read the warehouse back with psql. Crashes are real: qload kills
itself with SIGKILL at a seam (PICKLINE_QLOAD_CRASH), and the warehouse is
really stopped and started under a running `qload --follow`.
"""
import datetime
import decimal
import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgfix  # noqa: E402
import plhelp  # noqa: E402

SLOW = plhelp.SLOW

# The seed's example model (DESIGN.md), with the models it relates to.
SEED_MODELS = """\
models:
  tenants:
    properties:
      id: {type: integer, key: true}
      name: {type: string, length: 100, required: true}
  users:
    properties:
      id: {type: serial, key: true}
      tenant: {type: integer, min: 0, required: true, key: true}
      first_name: {type: string, length: 50, required: true}
      last_name: {type: string, length: 50, required: true}
      title: {type: string, length: 50}
      email:
        type: string
        length: [5, 99]
        unique: true
        format: email
        messages:
          length: "an email has 5 to 99 characters"
          format: "that is not an email address"
          unique: "that email is taken"
      passhash: {type: string, length: 50}
      salt: {type: string, length: 50}
      permission: {type: integer, default: 1}
      phone: {type: string}
      mobile: {type: string}
      created_at: {type: datetime, required: true}
      updated_at: {type: datetime}
      deleted_at: {type: datetime, paranoid: true, default: "2999-12-31T00:00:00Z"}
      manager_id: {type: integer}
    belongs_to:
      tenant_ref: {model: tenants, fields: [tenant]}
      manager: {model: users, fields: [manager_id, tenant]}
    has_n:
      authorities: {model: authorities}
      subscriptions: {model: subscriptions, through: authorities}
  authorities:
    properties:
      id: {type: integer, key: true}
      user_id: {type: integer, required: true}
      tenant: {type: integer, required: true}
      name: {type: string, length: 50}
    belongs_to:
      user: {model: users, fields: [user_id, tenant]}
  subscriptions:
    properties:
      id: {type: integer, key: true}
      name: {type: string, length: 50}
  things:
    properties:
      id: {type: integer, key: true}
      s: {type: text}
      v: {type: string, length: 200}
      n: {type: decimal}
      big: {type: bigint}
      i: {type: integer}
      b: {type: boolean}
      ts: {type: datetime}
      d: {type: date}
      j: {type: json}
  events:
    properties:
      id: {type: integer, key: true}
      payload: {type: text}
"""

PIPELINE = SEED_MODELS + """\
queues:
  final:
stages:
  - name: seal
    kind: batch
    input: final
"""

# A user row of the seed model.
def user(i, tenant=1, **kw):
    r = {"id": i, "tenant": tenant, "first_name": "F%d" % i, "last_name": "L%d" % i,
         "email": "user%d@example.com" % i, "created_at": "2024-01-02T03:04:05Z"}
    r.update(kw)
    return r


class QloadCase(pgfix.ClusterTest, plhelp.TempDirTest):
    """One cluster for the class (ClusterTest), and per test a fresh
    database (self.dsn), data directory (self.data) and the models of
    PIPELINE (self.pipeline); helpers to stage rows, run qload and qctl, and
    read the warehouse. test_qload_faults's cases are QloadCases too."""

    tmp_prefix = "qload-test-"

    def setUp(self):
        super().setUp()
        self.qload_bin = plhelp.binary("qload")
        self.qctl_bin = plhelp.binary("qctl")
        self.fill_bin = plhelp.binary("tests/prog_stagefill")
        self.pipeline = self.write("pipeline.yml", PIPELINE)
        self.env = dict(os.environ)
        for k in ("PICKLINE_DATA", "PICKLINE_TARGET", "PICKLINE_QLOAD_CRASH"):
            self.env.pop(k, None)

    # ------------------------------------------------------------ helpers
    def stage(self, model, rows, batch_rows=None, seal=True):
        """Stages rows (dicts, or raw JSON lines as str) of model; returns the
        sealed batch ids."""
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
        argv = [self.fill_bin, self.data, self.pipeline, model]
        if batch_rows:
            argv += ["--batch-rows", str(batch_rows)]
        if not seal:
            argv.append("--no-seal")
        r = plhelp.run(argv, input="\n".join(lines) + "\n", timeout=120)
        self.assertEqual(r.code, 0, r)
        return [int(x) for x in r.out.split()]

    def qload(self, *args, env_extra=None, timeout=120, target=True):
        argv = [self.qload_bin, "--data", self.data]
        if target:
            argv += ["--target", self.dsn]
        argv += list(args)
        env = dict(self.env)
        env.update(env_extra or {})
        return plhelp.run(argv, env=env, timeout=timeout)

    def load_ok(self, *args):
        r = self.qload("--json", *args)
        self.assertEqual(r.code, 0, r)
        return r.json()

    def qctl(self, *args):
        """qctl --data (ours) ARGS, which must exit 0: its Result."""
        r = plhelp.run([self.qctl_bin, "--data", self.data] + list(args), env=self.env)
        self.assertEqual(r.code, 0, r)
        return r

    def qctl_json(self, *args):
        return self.qctl(*(list(args) + ["--json"])).json()

    def batches(self):
        return self.qctl_json("batches", "--limit", "0")

    def end(self, p):
        """Kills process p (if still running) and reaps it."""
        if p.poll() is None:
            p.kill()
        p.communicate()

    def sql(self, q):
        return self.pg.psql(q, dsn=self.dsn)

    def one(self, q):
        return self.pg.scalar(q, dsn=self.dsn)

    def rows(self, q):
        return self.pg.query_json(q, dsn=self.dsn)

    def ledger(self):
        return self.rows("SELECT store, batch, model, rows, rejected FROM pickline_ledger "
                         "ORDER BY batch")


class QloadTest(QloadCase):
    def create_tables(self):
        """Runs the models' DDL (qload --create-tables) from a data directory
        of its own that holds no batches, so nothing is loaded yet."""
        ddl = os.path.join(self.tmp, "ddl-data")
        r = plhelp.run([self.fill_bin, ddl, self.pipeline, "events"], input="")
        self.assertEqual(r.code, 0, r)
        r = plhelp.run([self.qload_bin, "--data", ddl, "--target", self.dsn, "--create-tables",
                        "--json"], env=self.env)
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.json()["batches"], 0, r)

    # ------------------------------------------------------------ command line
    def test_help_and_usage_errors(self):
        r = plhelp.run([self.qload_bin, "--help"], env=self.env)
        self.assertEqual(r.code, 0, r)
        for word in ("--target", "--follow", "--create-tables", "--mode", "--pipeline",
                     "--model", "--json", "--quiet", "--poll", "PICKLINE_QLOAD_CRASH",
                     "before_copy", "during_copy", "before_commit", "after_commit"):
            self.assertIn(word, r.out)
        r = plhelp.run([self.qload_bin, "--data", self.data], env=self.env)
        self.assertEqual(r.code, 2, r)
        self.assertIn("--target", r.err)
        r = self.qload("--mode", "upsert")
        self.assertEqual(r.code, 2, r)
        self.assertIn("append or merge", r.err)
        r = self.qload("--bogus")
        self.assertEqual(r.code, 2, r)
        r = self.qload("--poll", "abc")
        self.assertEqual(r.code, 2, r)
        # $PICKLINE_TARGET and $PICKLINE_DATA stand in for the flags.
        self.stage("events", [{"id": 1, "payload": "x"}])
        self.create_tables()
        env = dict(self.env, PICKLINE_TARGET=self.dsn, PICKLINE_DATA=self.data)
        r = plhelp.run([self.qload_bin, "--json"], env=env)
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.json()["rows"], 1)
        # A model that is not declared is a usage error.
        r = self.qload("--model", "nosuch")
        self.assertEqual(r.code, 2, r)
        self.assertIn("nosuch", r.err)

    def test_no_data_directory(self):
        r = self.qload()
        self.assertEqual(r.code, 1, r)
        self.assertIn("does not exist", r.err)

    # ------------------------------------------------------------ values
    def test_hostile_values_round_trip(self):
        texts = [
            "", "plain", 'a "quoted" word', "comma, and more,,", "line\nfeed", "cr\rreturn",
            "crlf\r\nend", "back\\slash \\N \\. \\\\", '""', '"', ",", "\n", " lead and trail ",
            "NULL", "null", "\\N", "tab\there", "ctl \x01\x02\x07\x08\x0b\x0c\x1b\x1f\x7f",
            "emoji \U0001F600\U0001F680 and \u00e9\u00e8 \u4e2d\u6587 \u0645\u0631\u062d\u0628\u0627",
            "\u2028\u2029 separators", "combining e\u0301", "\ufeffbom", "x" * 5000,
        ]
        rows = []
        for i, t in enumerate(texts):
            rows.append({"id": i, "s": t, "v": t[:200], "n": None, "big": None, "i": None,
                         "b": None, "ts": None, "d": None, "j": None})
        nums = ["0.1000", "123456789012345678901234567890", "-98765432109876543210.000100",
                "0", "1e3", "-0.5", "3.14159265358979323846264338327950288"]
        for k, n in enumerate(nums):
            rows.append('{"id": %d, "n": %s}' % (100 + k, n))
        rows.append({"id": 200, "big": 9223372036854775807, "i": -2147483648, "b": True})
        rows.append({"id": 201, "big": -9223372036854775808, "i": 2147483647, "b": False})
        stamps = ["2020-02-29T23:59:59.123456+05:30", "1999-12-31T23:59:59Z",
                  "2024-06-01T12:00:00-07:00", "2024-06-01 12:00", "1970-01-01T00:00:00+00:00"]
        for k, ts in enumerate(stamps):
            rows.append({"id": 300 + k, "ts": ts, "d": "2024-02-29"})
        rows.append({"id": 400, "j": {"a": [1, "two", None, {"q": 'x"y\\z\n'}], "u": "\u00e9"}})
        rows.append({"id": 401, "j": "just a string"})
        rows.append({"id": 402, "s": None, "v": ""})
        self.stage("things", rows, batch_rows=7)
        self.create_tables()
        res = self.load_ok()
        self.assertEqual(res["rows"], len(rows), res)
        self.assertEqual(res["rejected"], 0, res)

        got = {r["id"]: r for r in self.rows("SELECT * FROM things")}
        self.assertEqual(len(got), len(rows))
        for i, t in enumerate(texts):
            self.assertEqual(got[i]["s"], t, "text %r" % t)
            self.assertEqual(got[i]["v"], t[:200], "varchar %r" % t)
            self.assertIsNone(got[i]["n"])
        # NULL versus "" in both text kinds
        self.assertEqual(got[0]["s"], "")
        self.assertIsNone(got[402]["s"])
        self.assertEqual(got[402]["v"], "")
        # numbers come back as written (numeric keeps 0.1000's scale)
        for k, n in enumerate(nums):
            want = decimal.Decimal(n)
            self.assertEqual(decimal.Decimal(str(got[100 + k]["n"])), want, n)
        self.assertEqual(str(got[100]["n"]), "0.1000")
        self.assertEqual(got[101]["n"], 123456789012345678901234567890)
        self.assertEqual(self.one("SELECT n::text FROM things WHERE id = 102"),
                         "-98765432109876543210.000100")
        self.assertEqual(got[200]["big"], 9223372036854775807)
        self.assertEqual(got[201]["big"], -9223372036854775808)
        self.assertEqual((got[200]["i"], got[201]["i"]), (-2147483648, 2147483647))
        self.assertEqual((got[200]["b"], got[201]["b"]), (True, False))
        # timestamps: the same instants (no zone means UTC)
        for k, ts in enumerate(stamps):
            want = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
            if want.tzinfo is None:
                want = want.replace(tzinfo=datetime.timezone.utc)
            back = datetime.datetime.fromisoformat(got[300 + k]["ts"])
            self.assertEqual(back, want, ts)
            self.assertEqual(got[300 + k]["d"], "2024-02-29")
        self.assertEqual(got[400]["j"], {"a": [1, "two", None, {"q": 'x"y\\z\n'}], "u": "\u00e9"})
        self.assertEqual(got[401]["j"], "just a string")
        # one ledger row per batch, all of this store
        led = self.ledger()
        self.assertEqual(len(led), (len(rows) + 6) // 7)
        self.assertEqual(len({r["store"] for r in led}), 1)
        self.assertEqual(sum(r["rows"] for r in led), len(rows))

    # ------------------------------------------------------------ exactly once
    def crash_then_rerun(self, seam):
        n, per = 3000, 1000
        ids = self.stage("events", [{"id": i, "payload": "p%d" % i} for i in range(n)],
                         batch_rows=per)
        self.assertEqual(len(ids), 3)
        # No key in the warehouse: a batch loaded twice would show as extra rows.
        self.sql("CREATE TABLE events (id integer, payload text)")
        r = self.qload("--json", env_extra={"PICKLINE_QLOAD_CRASH": seam})
        self.assertEqual(r.code, -signal.SIGKILL, r)
        committed = int(self.one("SELECT count(*) FROM events"))
        self.assertEqual(committed, per if seam == "after_commit" else 0, seam)
        self.assertEqual(len(self.ledger()), 1 if seam == "after_commit" else 0)
        res = self.load_ok()
        self.assertEqual(res["batches"], 3, res)
        self.assertEqual(res["rows"], n, res)
        self.assertEqual(self.sql("SELECT count(*), count(DISTINCT id), min(id), max(id) "
                                  "FROM events"), [[str(n), str(n), "0", str(n - 1)]])
        led = self.ledger()
        self.assertEqual([r["batch"] for r in led], ids)
        self.assertEqual([r["rows"] for r in led], [per] * 3)
        bat = self.qctl_json("batches")
        self.assertEqual([b["state"] for b in bat], ["loaded"] * 3)
        self.assertEqual(bat[0]["attempts"], 2)
        # Everything is marked loaded in the store: a third run finds nothing.
        res = self.load_ok()
        self.assertEqual((res["batches"], res["rows"]), (0, 0), res)
        self.assertEqual(int(self.one("SELECT count(*) FROM events")), n)

    def test_crash_before_copy(self):
        self.crash_then_rerun("before_copy")

    def test_crash_during_copy(self):
        self.crash_then_rerun("during_copy")

    def test_crash_before_commit(self):
        self.crash_then_rerun("before_commit")

    def test_crash_after_commit(self):
        self.crash_then_rerun("after_commit")

    def test_bad_crash_seam_is_usage_error(self):
        r = self.qload(env_extra={"PICKLINE_QLOAD_CRASH": "sometime"})
        self.assertEqual(r.code, 2, r)

    # ------------------------------------------------------------ merge
    def snapshot(self):
        return self.rows("SELECT * FROM users ORDER BY tenant, id")

    def test_merge_twice_same_table(self):
        self.stage("tenants", [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}])
        rows = [user(i, tenant=1 + i % 2) for i in range(1, 201)]
        # a key twice in one batch: the later row wins
        rows.append(user(7, tenant=2, first_name="Seven, later"))
        self.stage("users", rows)
        self.create_tables()
        self.load_ok("--mode", "merge")
        first = self.snapshot()
        self.assertEqual(len(first), 200)
        self.assertEqual([r["first_name"] for r in first if r["id"] == 7], ["Seven, later"])
        # the same rows again, in two more batches
        self.stage("users", rows, batch_rows=120)
        res = self.load_ok("--mode", "merge")
        self.assertEqual(res["batches"], 2, res)
        self.assertEqual(self.snapshot(), first)
        # an update through merge changes only that row
        self.stage("users", [user(3, tenant=2, title="Dr.", phone="+1 555")])
        self.load_ok("--mode", "merge")
        after = self.snapshot()
        changed = [r for r in after if r["id"] == 3]
        self.assertEqual((changed[0]["title"], changed[0]["phone"]), ("Dr.", "+1 555"))
        self.assertEqual([r for r in after if r["id"] != 3], [r for r in first if r["id"] != 3])

    def test_prune_forgets_only_loaded_batches(self):
        self.stage("tenants", [{"id": 1, "name": "one"}])
        self.stage("users", [user(i) for i in range(1, 31)], batch_rows=10)
        self.create_tables()
        self.load_ok("--mode", "merge")
        # One more batch, sealed but not loaded, and an open one.
        self.stage("users", [user(i) for i in range(31, 36)])
        self.stage("users", [user(40)], seal=False)
        before = self.qctl_json("batches", "--limit", "0")
        states = sorted(b["state"] for b in before)
        self.assertEqual(states, ["loaded"] * 4 + ["open", "sealed"], before)
        # Loaded a moment ago: the default (a week) keeps them.
        self.assertEqual(self.qctl_json("batches", "prune"), {"pruned": 0})
        self.assertEqual(len(self.qctl_json("batches", "--limit", "0")), 6)
        self.assertEqual(self.qctl_json("batches", "prune", "--older-than", "0"), {"pruned": 4})
        after = self.qctl_json("batches", "--limit", "0")
        self.assertEqual(sorted(b["state"] for b in after), ["open", "sealed"], after)
        # The warehouse and its ledger are untouched; the rest still loads.
        self.assertEqual(int(self.one("SELECT count(*) FROM users")), 30)
        self.assertEqual(len(self.ledger()), 4)
        self.load_ok("--mode", "merge")
        self.assertEqual(int(self.one("SELECT count(*) FROM users")), 35)

    def test_merge_soft_delete(self):
        self.stage("tenants", [{"id": 1, "name": "one"}])
        self.stage("users", [user(i) for i in range(1, 6)])
        self.create_tables()
        self.load_ok("--mode", "merge")
        live = self.one("SELECT count(*) FROM users WHERE deleted_at = '2999-12-31T00:00:00Z'")
        self.assertEqual(live, "5")
        self.stage("users", [{"id": 2, "tenant": 1, "_deleted": True},
                             {"id": 4, "tenant": 1, "_deleted": True,
                              "deleted_at": "2024-05-05T05:05:05Z"}])
        res = self.load_ok("--mode", "merge")
        self.assertEqual(res["rejected"], 0, res)
        got = {r["id"]: r for r in self.rows("SELECT * FROM users")}
        self.assertEqual(len(got), 5)
        self.assertEqual(got[4]["deleted_at"], "2024-05-05T05:05:05+00:00")
        d2 = datetime.datetime.fromisoformat(got[2]["deleted_at"])
        self.assertLess(abs((datetime.datetime.now(datetime.timezone.utc) - d2).total_seconds()),
                        600)
        for i in (1, 3, 5):
            self.assertEqual(got[i]["deleted_at"], "2999-12-31T00:00:00+00:00")
        # the other columns of a soft-deleted row stay as they were
        self.assertEqual((got[2]["first_name"], got[2]["email"]), ("F2", "user2@example.com"))

    def test_merge_refused_rows_rejected_rest_merged(self):
        self.stage("tenants", [{"id": 1, "name": "one"}])
        self.stage("users", [user(i) for i in range(1, 11)])
        self.create_tables()
        self.load_ok("--mode", "merge")
        self.sql("ALTER TABLE users ADD CONSTRAINT no_bob CHECK (first_name <> 'Bob')")
        self.stage("users", [user(2, first_name="Bob"), user(3, first_name="Carol"),
                             user(11, first_name="Bob"), user(12), user(3, title="Ms"),
                             {"id": 5, "tenant": 1, "_deleted": True}])
        r = self.qload("--mode", "merge", "--json")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.json()["rejected"], 2, r)
        rej = self.qctl_json("rejects")
        self.assertEqual(sorted(x["key"] for x in rej), ["11/1", "2/1"])
        got = {x["id"]: x for x in self.rows("SELECT * FROM users")}
        self.assertEqual(sorted(got), list(range(1, 11)) + [12])
        self.assertEqual(got[2]["first_name"], "F2")             # Bob refused
        self.assertEqual((got[3]["first_name"], got[3]["title"]), ("F3", "Ms"))  # last row wins
        self.assertNotEqual(got[5]["deleted_at"], "2999-12-31T00:00:00+00:00")
        self.assertEqual(got[6]["deleted_at"], "2999-12-31T00:00:00+00:00")

    def test_merge_without_unique_index_fails_batch(self):
        self.stage("events", [{"id": 1, "payload": "x"}])
        self.sql("CREATE TABLE events (id integer, payload text)")
        r = self.qload("--mode", "merge", "--json")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.json()["failed"], 1, r)
        self.assertIn("--mode append", r.err)

    # ------------------------------------------------------------ bad rows
    def test_bad_rows_rejected_rest_loaded(self):
        n = 300
        rows = [{"id": i, "payload": "p%d" % i} for i in range(n)]
        bad_check = {17, 150, 299}
        for i in bad_check:
            rows[i]["payload"] = "forbidden"
        rows[42]["payload"] = "dup"
        rows[43]["payload"] = "dup"            # refused by a unique index the model lacks
        rows[77]["payload"] = "x" * 30         # too long for the varchar(20) column
        self.stage("events", rows, batch_rows=200)
        self.sql("CREATE TABLE events (id integer PRIMARY KEY, payload varchar(20) "
                 "CHECK (payload <> 'forbidden')); CREATE UNIQUE INDEX ON events (payload)")
        r = self.qload("--json")
        self.assertEqual(r.code, 1, r)
        res = r.json()
        self.assertEqual(res["rejected"], 5, r)
        self.assertEqual(res["failed"], 0, r)
        self.assertEqual(res["rows"], n - 5, r)
        self.assertIn("check constraint", r.err)
        got = {int(a): b for a, b in self.sql("SELECT id, payload FROM events")}
        want = {i: rows[i]["payload"] for i in range(n) if i not in bad_check | {43, 77}}
        self.assertEqual(got, want)
        led = self.ledger()
        self.assertEqual([(x["rows"], x["rejected"]) for x in led], [(196, 4), (99, 1)])
        # The refused rows are in the rejects, as staged, with PostgreSQL's reason.
        rej = self.qctl_json("rejects")
        self.assertEqual(sorted((x["batch"], x["row"]["id"]) for x in rej),
                         [(1, 17), (1, 43), (1, 77), (1, 150), (2, 299)])
        why = {x["row"]["id"]: x["errors"][0]["message"] for x in rej}
        self.assertIn("check constraint", why[17])
        self.assertIn("duplicate key", why[43])
        self.assertIn("too long", why[77])
        self.assertEqual({x["row"]["id"]: x["row"]["payload"] for x in rej}[150], "forbidden")
        self.assertEqual([x["stage"] for x in rej], ["qload"] * 5)
        # Each is keyed by its model key, as a validate stage's reject is.
        self.assertEqual(sorted(x["key"] for x in rej), sorted(["17", "43", "77", "150", "299"]))
        self.assertIn("row 17 (key 17) rejected: ", r.err)
        bat = self.qctl_json("batches")
        self.assertEqual([(b["state"], b["rows"], b["removed"]) for b in bat],
                         [("loaded", 200, 4), ("loaded", 100, 1)])
        # Nothing is loaded twice by a rerun.
        res = self.load_ok()
        self.assertEqual((res["batches"], res["rows"]), (0, 0))
        self.assertEqual(int(self.one("SELECT count(*) FROM events")), n - 5)

    def test_missing_table_fails_batch_others_load(self):
        self.stage("events", [{"id": 1, "payload": "x"}])
        self.stage("subscriptions", [{"id": 1, "name": "news"}])
        self.sql("CREATE TABLE subscriptions (id integer PRIMARY KEY, name text)")
        r = self.qload("--json")
        self.assertEqual(r.code, 1, r)
        res = r.json()
        self.assertEqual((res["batches"], res["failed"], res["rows"]), (1, 1, 1), r)
        self.assertIn("table events does not exist; run qload --create-tables or create it",
                      r.err)
        states = {b["model"]: b for b in self.qctl_json("batches")}
        self.assertEqual(states["events"]["state"], "failed")
        self.assertIn("table events does not exist", states["events"]["error"])
        self.assertEqual(states["subscriptions"]["state"], "loaded")
        self.assertEqual(self.sql("SELECT id, name FROM subscriptions"), [["1", "news"]])

    def test_column_mismatch_fails_batch(self):
        self.stage("events", [{"id": 1, "payload": "x"}])
        self.sql("CREATE TABLE events (id integer PRIMARY KEY, body text)")
        r = self.qload("--json")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.json()["failed"], 1, r)
        self.assertIn("payload", r.err)
        self.assertIn("qctl batches retry", r.err)

    # ------------------------------------------------------------ order, DDL
    def test_parents_before_children(self):
        # children sealed first: users, then authorities, then tenants
        self.stage("users", [user(i, tenant=1 + i % 3) for i in range(1, 31)])
        self.stage("authorities", [{"id": i, "user_id": i, "tenant": 1 + i % 3, "name": "a"}
                                   for i in range(1, 31)])
        self.stage("tenants", [{"id": t, "name": "t%d" % t} for t in (1, 2, 3)])
        res = self.load_ok("--create-tables")
        self.assertEqual((res["batches"], res["rows"], res["rejected"]), (3, 63, 0), res)
        self.assertEqual([r["model"] for r in self.ledger()],
                         ["users", "authorities", "tenants"])  # by batch id
        loaded = self.sql("SELECT model FROM pickline_ledger ORDER BY loaded_at, batch")
        self.assertEqual([r[0] for r in loaded], ["tenants", "users", "authorities"])
        # the foreign keys are real: an orphan is refused and rejected
        self.stage("users", [user(99, tenant=42)])
        r = self.qload("--json")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.json()["rejected"], 1, r)
        self.assertIn("foreign key", r.err)

    def test_create_tables_seed_users(self):
        self.create_tables()
        cols = self.sql("SELECT column_name, data_type, is_nullable FROM "
                        "information_schema.columns WHERE table_name = 'users' "
                        "ORDER BY ordinal_position")
        names = [c[0] for c in cols]
        self.assertEqual(names, ["id", "tenant", "first_name", "last_name", "title", "email",
                                 "passhash", "salt", "permission", "phone", "mobile",
                                 "created_at", "updated_at", "deleted_at", "manager_id"])
        types = {c[0]: c[1] for c in cols}
        self.assertEqual(types["created_at"], "timestamp with time zone")
        self.assertEqual(types["first_name"], "character varying")
        nullable = {c[0]: c[2] for c in cols}
        self.assertEqual(nullable["first_name"], "NO")
        self.assertEqual(nullable["title"], "YES")
        cons = self.sql("SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE conrelid = 'users'::regclass ORDER BY contype, conname")
        kinds = [c[0] for c in cons]
        self.assertIn("p", kinds)
        self.assertIn("u", kinds)
        self.assertIn("f", kinds)
        self.assertIn("PRIMARY KEY (id, tenant)", [c[1] for c in cons])
        self.assertTrue(any("REFERENCES tenants" in c[1] for c in cons), cons)
        # rerunning the DDL is harmless, and the tables take the seed's rows
        self.stage("tenants", [{"id": 1, "name": "one"}])
        self.stage("users", [user(1), user(2, manager_id=1)])
        res = self.load_ok("--create-tables")
        self.assertEqual((res["rows"], res["rejected"]), (3, 0), res)
        self.assertEqual(self.one("SELECT permission FROM users WHERE id = 1"), "1")

    # ------------------------------------------------------------ the warehouse away
    def hold_lock(self, table):
        """Starts a psql that holds an exclusive lock on table (in an open
        transaction) until it is stopped; returns the process."""
        p = subprocess.Popen([self.pg.psql_bin, "-X", "-q", "-d", self.dsn],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        p.stdin.write(("BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; "
                       "SELECT 'locked';\n" % table).encode())
        p.stdin.flush()
        self.addCleanup(self._end_psql, p)
        ok = pgfix.wait_until(lambda: self.one(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = '%s' AND l.mode = 'AccessExclusiveLock' AND l.granted" % table)
            == "1", 20 * SLOW)
        self.assertTrue(ok, "the lock holder did not get its lock")
        return p

    def _end_psql(self, p):
        if p.poll() is None:
            p.kill()
        p.wait()
        if not p.stdin.closed:
            try:
                p.stdin.close()
            except OSError:
                pass

    def qload_waiting(self):
        return self.one("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'qload' AND wait_event_type = 'Lock'") == "1"

    def test_dead_target_without_follow(self):
        self.stage("events", [{"id": i, "payload": "p"} for i in range(100)])
        # no server at all
        r = self.qload("--json", target=False,
                       env_extra={"PICKLINE_TARGET": "host=%s port=1 dbname=x" % self.tmp})
        self.assertEqual(r.code, 1, r)
        self.assertIn("cannot connect to the target", r.err)
        # the server goes away in the middle of the batch
        self.sql("CREATE TABLE events (id integer PRIMARY KEY, payload text)")
        locker = self.hold_lock("events")
        q = subprocess.Popen([self.qload_bin, "--data", self.data, "--target", self.dsn],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertTrue(pgfix.wait_until(self.qload_waiting, 20 * SLOW), "qload never waited")
        self.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'qload'")
        out, err = q.communicate(timeout=30 * SLOW)
        self.assertEqual(q.returncode, 1, err)
        self.assertIn(b"the batch stays 'loading'", err)
        locker.stdin.write(b"COMMIT;\n")
        locker.stdin.close()
        locker.wait(timeout=10)
        self.assertEqual(self.one("SELECT count(*) FROM events"), "0")
        res = self.load_ok()
        self.assertEqual((res["batches"], res["rows"]), (1, 100), res)
        self.assertEqual(self.one("SELECT count(*) FROM events"), "100")
        self.assertEqual(len(self.ledger()), 1)

    def test_follow_survives_warehouse_restart(self):
        self.sql("CREATE TABLE events (id integer, payload text)")
        self.stage("events", [{"id": i, "payload": "a"} for i in range(0, 100)])
        q = subprocess.Popen([self.qload_bin, "--data", self.data, "--target", self.dsn,
                              "--follow", "--poll", "0.1", "--json"],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: q.poll() is None and q.kill())
        count = lambda: int(self.one("SELECT count(*) FROM events"))  # noqa: E731
        self.assertTrue(pgfix.wait_until(lambda: count() == 100, 30 * SLOW))
        # a batch in flight (waiting on a lock) when the warehouse stops
        locker = self.hold_lock("events")
        self.stage("events", [{"id": i, "payload": "b"} for i in range(100, 300)])
        self.assertTrue(pgfix.wait_until(self.qload_waiting, 20 * SLOW), "qload never waited")
        self.pg.stop()
        locker.stdin.close()
        locker.wait(timeout=10)
        self.stage("events", [{"id": i, "payload": "c"} for i in range(300, 350)])
        time.sleep(1.0)
        self.assertIsNone(q.poll(), "qload --follow exited while the warehouse was down")
        self.pg.start()
        ok = pgfix.wait_until(lambda: count() == 350, 60 * SLOW, interval=0.2)
        self.assertTrue(ok, "rows: %d" % count())
        q.send_signal(signal.SIGTERM)
        out, err = q.communicate(timeout=30 * SLOW)
        self.assertEqual(q.returncode, 0, err)
        self.assertIn(b"reconnect", err)
        res = json.loads(out)
        self.assertEqual((res["batches"], res["rows"]), (3, 350), res)
        self.assertEqual(self.sql("SELECT count(*), count(DISTINCT id) FROM events"),
                         [["350", "350"]])
        self.assertEqual([r["rows"] for r in self.ledger()], [100, 200, 50])

    def test_follow_wakes_when_a_batch_is_sealed(self):
        # A commit to the store wakes qload --follow (inotify on data.mdb):
        # a batch sealed while it waits loads long before the poll is due,
        # and is marked loaded with its rows dropped while qload runs on.
        self.sql("CREATE TABLE events (id integer, payload text)")
        self.stage("events", [{"id": 0, "payload": "first"}])
        q = subprocess.Popen([self.qload_bin, "--data", self.data, "--target", self.dsn,
                              "--follow", "--json", "--poll", "3600"],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: q.poll() is None and q.kill())
        count = lambda: int(self.one("SELECT count(*) FROM events"))  # noqa: E731
        self.assertTrue(pgfix.wait_until(lambda: count() == 1, 30 * SLOW))
        ids = self.stage("events", [{"id": i, "payload": "later"} for i in range(1, 51)])
        self.assertTrue(pgfix.wait_until(lambda: count() == 51, 30 * SLOW),
                        "the batch sealed while qload waited was not loaded (the next poll is "
                        "an hour away)")

        def settled():
            show = self.qctl_json("batches", "show", str(ids[0]))
            return show["state"] == "loaded" and show["data"] == []
        self.assertTrue(pgfix.wait_until(settled, 30 * SLOW), "the batch was not marked loaded "
                        "and its rows dropped while qload --follow waited")
        self.assertIsNone(q.poll())
        q.send_signal(signal.SIGTERM)
        out, err = q.communicate(timeout=30 * SLOW)
        self.assertEqual(q.returncode, 0, err)
        self.assertEqual(json.loads(out)["rows"], 51)

    def test_follow_stops_on_sigterm_when_idle(self):
        self.stage("events", [{"id": 1, "payload": "x"}], seal=False)  # an open batch
        q = subprocess.Popen([self.qload_bin, "--data", self.data, "--target", self.dsn,
                              "--follow", "--json", "--poll", "0.05"],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: q.poll() is None and q.kill())
        time.sleep(0.5 * SLOW)
        self.assertIsNone(q.poll())
        q.send_signal(signal.SIGTERM)
        out, err = q.communicate(timeout=20 * SLOW)
        self.assertEqual(q.returncode, 0, err)
        self.assertEqual(json.loads(out)["batches"], 0)
        # the open batch is not loaded; the ledger exists and is empty
        self.assertEqual(self.ledger(), [])

    def test_sigterm_finishes_the_current_batch(self):
        self.sql("CREATE TABLE events (id integer, payload text)")
        self.stage("events", [{"id": i, "payload": "a"} for i in range(500)])
        self.stage("events", [{"id": i, "payload": "b"} for i in range(500, 600)])
        locker = self.hold_lock("events")
        q = subprocess.Popen([self.qload_bin, "--data", self.data, "--target", self.dsn,
                              "--follow", "--json"],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: q.poll() is None and q.kill())
        self.assertTrue(pgfix.wait_until(self.qload_waiting, 20 * SLOW), "qload never waited")
        q.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        self.assertIsNone(q.poll(), "qload left its batch half done")
        locker.stdin.write(b"COMMIT;\n")
        locker.stdin.close()
        out, err = q.communicate(timeout=30 * SLOW)
        self.assertEqual(q.returncode, 0, err)
        # the batch in flight finished; the next one was left for later
        self.assertEqual(json.loads(out)["batches"], 1, err)
        self.assertEqual(self.one("SELECT count(*) FROM events"), "500")
        res = self.load_ok()
        self.assertEqual((res["batches"], res["rows"]), (1, 100), res)
        self.assertEqual(self.one("SELECT count(*) FROM events"), "600")

    def test_progress_line_on_a_terminal(self):
        import pty
        self.stage("events", [{"id": i, "payload": "p"} for i in range(2000)], batch_rows=500)
        self.create_tables()
        master, slave = pty.openpty()
        try:
            p = subprocess.Popen([self.qload_bin, "--data", self.data, "--target", self.dsn],
                                 env=self.env, stdout=subprocess.PIPE, stderr=slave)
            os.close(slave)
            slave = None
            out, _ = p.communicate(timeout=60 * SLOW)
            chunks = []
            while True:
                try:
                    b = os.read(master, 65536)
                except OSError:
                    break
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)
        err = b"".join(chunks).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("\rqload: batches 4/4, 2000 rows", err)
        self.assertIn("rows/s", err)
        # the human summary goes to stdout
        self.assertRegex(out.decode(), r"loaded 4 batches, 2000 rows in [0-9.]+ s")
        self.assertEqual(self.one("SELECT count(*) FROM events"), "2000")

if __name__ == "__main__":
    unittest.main()
