"""Configuration as operators expect it: ${VAR} and ${VAR:-default} from the
environment in any value of the pipeline file, secrets named by env:NAME or
file:PATH (the listener's token, a stage's dsn and header values), and a
secret's value never in the logs, in `pickline check`'s output or in the
copy of the pipeline the engine keeps in the store (which holds the file as
written); qctl and qload, which read that copy, work without the engine's
variables."""
import json
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgfix
from engine_fixtures import EngineTestCase, qctl
from plhelp import SLOW, Fixture, TempDirTest, binary, run, wait_for

TOKEN = "tok-3f9a1c77e2b54d0a8c1e"          # the listener's token, from ${PL_CFG_TOKEN}
API_KEY = "apikey-5b7e0d2c9a14f3e8"         # a header from ${PL_CFG_API_KEY}
ENV_KEY = "envkey-0c4d8e2a7f91b356"         # a header from env:PL_CFG_ENV_KEY
FILE_KEY = "filekey-9e1f3a5c7b2d4068"       # a header from file:PATH
SECRETS = (TOKEN, API_KEY, ENV_KEY, FILE_KEY)
ENGINE_VARS = ("PL_CFG_TOKEN", "PL_CFG_API_KEY", "PL_CFG_ENV_KEY", "PL_CFG_RECORDS",
               "PL_CFG_ROWS", "PL_CFG_DATA")


def env_without(*names, **add):
    """os.environ without names (and without every PL_CFG_*), plus add."""
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("PL_CFG_")}
    env.update(add)
    return env


def files_under(path):
    """(path, bytes) of every file under path."""
    for d, _, names in os.walk(path):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                yield p, f.read()


# The pipeline file as an operator writes it: ${VAR}s and secrets by
# reference. (Here in a str.format template: {port} and {secret_file} are
# the test's; the ${...} are for pickline.)
PIPE = """listen:
  address: 127.0.0.1
  port: {port}
  token: ${{PL_CFG_TOKEN}}
drain: ${{PL_CFG_DRAIN:-3}}
models:
  users:
    properties:
      id: {{type: integer, key: true}}
      name: {{type: string, length: 100}}
queues:
  retrieve: {{ttr: 10, max_attempts: 50, backoff: 0.1}}
  validate:
  final:
stages:
  - name: extract
    kind: http_extract
    input: retrieve
    output: validate
    url: ${{PL_CFG_RECORDS}}/records/{{id}}
    key_field: id
    model: users
    headers:
      Authorization: "Bearer ${{PL_CFG_API_KEY}}"
      X-Env-Key: env:PL_CFG_ENV_KEY
      X-File-Key: file:{secret_file}
  - name: check
    kind: validate
    input: validate
    model: users
    output: final
  - name: seal
    kind: batch
    input: final
    rows: ${{PL_CFG_ROWS:-2}}
    seconds: 0.3
"""
LINES = PIPE.splitlines()
URL_LINE = 1 + next(i for i, l in enumerate(LINES) if l.startswith("    url:"))
FILE_KEY_LINE = 1 + next(i for i, l in enumerate(LINES) if "X-File-Key:" in l)


class Records(Fixture):
    """GET /records/ID -> {"id": ID, "name": ...}, remembering the headers
    of every request."""

    def __init__(self):
        super().__init__()
        self.headers = []

    def handle(self, req):
        with self.lock:
            self.headers.append(dict(req.headers))
        m = re.fullmatch(r"/records/(\d+)", req.url_path)
        if not m:
            return req.reply(404, {"error": "no such path"})
        req.reply(200, {"id": int(m.group(1)), "name": "user %s" % m.group(1)})


class ConfigCheckTest(TempDirTest):
    def pipe(self, **kw):
        sf = self.write("api.key", FILE_KEY + "\n")
        return PIPE.format(port=kw.get("port", 7391), secret_file=sf)

    def check(self, text, env):
        path = self.write("pipeline.yml", text)
        return run([binary("pickline"), "check", path], env=env), path

    def test_check_names_an_unset_variable_at_its_line(self):
        env = env_without(PL_CFG_TOKEN=TOKEN, PL_CFG_API_KEY=API_KEY)
        r, path = self.check(self.pipe(), env)
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.out, "", r)
        self.assertEqual(r.err.strip(), "%s:%d: ${PL_CFG_RECORDS} is not set; export "
                         "PL_CFG_RECORDS, or give a default: ${PL_CFG_RECORDS:-default}"
                         % (path, URL_LINE))
        env["PL_CFG_RECORDS"] = "http://127.0.0.1:9"
        r, _ = self.check(self.pipe(), env)
        self.assertEqual(r.code, 0, r)
        self.assertIn("ok, 3 queues, 3 stages", r.out)
        self.assertIn("extract  http_extract  retrieve", r.out)

    def test_check_never_shows_a_secret(self):
        env = env_without(PL_CFG_TOKEN=TOKEN, PL_CFG_API_KEY=API_KEY, PL_CFG_RECORDS="http://x")
        r, _ = self.check(self.pipe(), env)
        self.assertEqual(r.code, 0, r)
        for s in SECRETS:
            self.assertNotIn(s, r.out + r.err)
        # A value that is not what its key takes is shown as written.
        env["PL_CFG_ROWS"] = "many-" + API_KEY
        r, path = self.check(self.pipe(), env)
        self.assertEqual(r.code, 1, r)
        self.assertIn("stage 'seal': rows: expected a whole number", r.err)
        self.assertIn("(got '${PL_CFG_ROWS:-2}')", r.err)
        self.assertNotIn(API_KEY, r.err)
        # A token that is too short: named by its variable, never shown.
        env = env_without(PL_CFG_TOKEN="shorttok7Q", PL_CFG_API_KEY=API_KEY,
                          PL_CFG_RECORDS="http://x")
        r, _ = self.check(self.pipe(), env)
        self.assertEqual(r.code, 1, r)
        self.assertIn("listen: token is shorter than 16 characters", r.err)
        self.assertNotIn("shorttok7Q", r.err)
        # A header value from a variable with a line break: named, not shown.
        env = env_without(PL_CFG_TOKEN=TOKEN, PL_CFG_API_KEY=API_KEY + "\r\nX-Evil: 1",
                          PL_CFG_RECORDS="http://x")
        r, _ = self.check(self.pipe(), env)
        self.assertEqual(r.code, 1, r)
        self.assertIn("headers: Authorization: has a line break", r.err)
        self.assertNotIn(API_KEY, r.err)

    def test_defaults_and_escapes(self):
        text = ("listen:\n  port: ${PL_CFG_PORT:-7392}\ndata: ${PL_CFG_DATA:-/var/lib/x}\n"
                "queues:\n  a:\n  b:\n"
                "stages:\n  - {name: \"n$${x}\", kind: noop, input: a, output: b}\n")
        r, path = self.check(text, env_without())
        self.assertEqual(r.code, 1, r)  # $${x} is a literal ${x}: not a valid stage name
        self.assertIn("%s:8: stage 1: name: 'n${x}' is invalid" % path, r.err)
        r, _ = self.check(text.replace("$${x}", "x"), env_without())
        self.assertEqual(r.code, 0, r)
        # A ${VAR} in flow style must be quoted: the YAML error says so.
        r, path = self.check("queues: {a: {ttr: ${PL_CFG_TTR}}}\n", env_without())
        self.assertEqual(r.code, 1, r)
        self.assertIn("%s:1: invalid YAML" % path, r.err)
        self.assertIn("write a ${VAR} in quotes", r.err)


class ConfigRunTest(EngineTestCase):
    def start(self, extra_env=None, secret_file=None):
        """The Records fixture, an Engine of PIPE (not started) and the
        environment it runs in (the secrets, the fixture's URL, extra_env)."""
        rec = self.fx.add(Records())
        sf = secret_file or self.write("api.key", FILE_KEY + "\n")
        env = {"PL_CFG_TOKEN": TOKEN, "PL_CFG_API_KEY": API_KEY, "PL_CFG_ENV_KEY": ENV_KEY,
               "PL_CFG_RECORDS": rec.url}
        env.update(extra_env or {})
        # Engine fills ${port} (string.Template): pickline's ${PL_CFG_...} are escaped for it.
        text = PIPE.format(port="${port}", secret_file=sf).replace("${PL_CFG", "$${PL_CFG")
        return rec, self.fx.engine(self.dir, text, token=TOKEN), env

    def test_secrets_reach_the_service_not_the_logs_or_the_store(self):
        rec, eng, env = self.start()
        # check, in the engine's environment: ok, and no secret in what it says
        r = run([binary("pickline"), "check", eng.path], env=dict(os.environ, **env))
        self.assertEqual(r.code, 0, r)
        for s in SECRETS:
            self.assertNotIn(s, r.out + r.err)
        eng.start(env=env)
        # the token from ${PL_CFG_TOKEN} guards the listener
        self.assertEqual(eng.request("GET", "/queues", auth=False).status, 401)
        for i in range(1, 5):
            r = eng.put("retrieve", json.dumps({"id": i}))
            self.assertEqual(r.status, 202, r)
        self.wait(lambda: sum(b["rows"] for b in self.qctl_json(eng, "batches")) == 4, 20,
                  "4 rows batched", eng)
        # every request carried the three headers, expanded and read
        with rec.lock:
            seen = list(rec.headers)
        self.assertGreaterEqual(len(seen), 4)
        for h in seen:
            self.assertEqual(h.get("Authorization"), "Bearer " + API_KEY)
            self.assertEqual(h.get("X-Env-Key"), ENV_KEY)
            self.assertEqual(h.get("X-File-Key"), FILE_KEY)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())
        # no secret in the logs, nor anywhere in the data directory; the
        # stored pipeline is the file as written
        log = eng.stderr()
        store = b"".join(b for _, b in files_under(eng.data))
        for s in SECRETS:
            self.assertNotIn(s, log)
            self.assertNotIn(s.encode(), store, "a secret is in the data directory")
        self.assertIn(b"Bearer ${PL_CFG_API_KEY}", store)
        self.assertIn(b"token: ${PL_CFG_TOKEN}", store)
        # qctl and qload read that copy without the engine's variables
        bare = env_without(*ENGINE_VARS)
        for args in (["schema"], ["batches"], ["stats"], ["rejects"]):
            p = subprocess.run([binary("qctl"), "--data", eng.data] + args, env=bare,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=30 * SLOW)
            self.assertEqual(p.returncode, 0, "qctl %s: %s" % (args, p.stderr))
        p = subprocess.run([binary("qctl"), "--data", eng.data, "schema", "--json"], env=bare,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=30 * SLOW)
        self.assertIn("users", p.stdout)
        # qload reads the models, then stops only at the missing warehouse
        p = subprocess.run([binary("qload"), "--data", eng.data, "--target",
                            "host=%s/nowhere dbname=x connect_timeout=2" % self.dir],
                           env=bare, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60 * SLOW)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("cannot connect to the target", p.stderr)
        self.assertNotIn("is not set", p.stderr)

    def test_a_secret_file_that_cannot_be_read_stops_the_start(self):
        missing = os.path.join(self.dir, "no-such-key")
        rec, eng, env = self.start(secret_file=missing)
        eng.start(wait=False, env=env)
        rc = eng.proc.wait(30 * SLOW)
        self.assertEqual(rc, 1, eng.stderr_tail())
        self.assertIn("%s:%d: stage 'extract': headers: X-File-Key: file:%s: cannot read %s: No "
                      "such file or directory" % (eng.path, FILE_KEY_LINE, missing, missing),
                      eng.stderr())
        self.assertEqual(rec.requests, 0)

    def test_an_unset_env_secret_stops_the_start(self):
        rec, eng, env = self.start()
        del env["PL_CFG_ENV_KEY"]
        eng.start(wait=False, env=env)
        rc = eng.proc.wait(30 * SLOW)
        self.assertEqual(rc, 1, eng.stderr_tail())
        self.assertIn("stage 'extract': headers: X-Env-Key: env:PL_CFG_ENV_KEY: environment "
                      "variable PL_CFG_ENV_KEY is not set", eng.stderr())


SCHEMA = """
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users (id, name) SELECT g, 'name ' || g FROM generate_series(1, 25) g;
"""

PG_PIPE = """listen:
  address: 127.0.0.1
  port: ${port}
drain: 3
models:
  users:
    properties:
      id: {type: bigint, key: true, required: true}
      name: {type: string, length: 100, required: true}
      updated_at: {type: datetime, required: true}
queues:
  keys: {ttr: 10}
stages:
  - name: users_src
    kind: pg_extract
    dsn: file:$${PL_CFG_SECRETS}/source.dsn
    table: users
    model: users
    updated_column: updated_at
    interval: 0.2
    rows: 10
    seconds: 0.3
"""


class ConfigPgTest(EngineTestCase):
    """A dsn from a file (file:${DIR}/source.dsn) end to end: the engine
    extracts with it; the DSN, password and all, is in no log and not in the
    store; qload loads the batches without the engine's variables."""

    @classmethod
    def setUpClass(cls):
        cls.pg = pgfix.PgCluster()

    @classmethod
    def tearDownClass(cls):
        cls.pg.close()

    def test_dsn_from_a_file(self):
        sdb = self.pg.create_db("src")
        tdb = self.pg.create_db("dst")
        self.pg.psql(SCHEMA, sdb)
        secrets = os.path.join(self.dir, "secrets")
        os.mkdir(secrets, 0o700)
        password = "pw-7d1e5a3c9b0f2e46"  # trust auth ignores it; a secret all the same
        dsn = "%s password=%s application_name=pickline-config-test" % (sdb, password)
        with open(os.path.join(secrets, "source.dsn"), "w") as f:
            f.write(dsn + "\n")
        eng = self.fx.engine(self.dir, PG_PIPE)
        env = {"PL_CFG_SECRETS": secrets}
        r = run([binary("pickline"), "check", eng.path], env=dict(os.environ, **env))
        self.assertEqual(r.code, 0, r)
        eng.start(env=env)
        self.wait(lambda: sum(b["rows"] for b in self.qctl_json(eng, "batches")
                              if b["state"] == "sealed") == 25, 30, "25 rows extracted and sealed",
                  eng)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())
        self.assertNotIn(password, eng.stderr())
        for p, b in files_under(eng.data):
            self.assertNotIn(password.encode(), b, p)
        p = subprocess.run([binary("qload"), "--data", eng.data, "--target", tdb,
                            "--create-tables"], env=env_without(*ENGINE_VARS),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=120 * SLOW)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        rows = self.pg.psql("SELECT count(*), min(id), max(id) FROM users", tdb)
        self.assertEqual(rows, [["25", "1", "25"]])
        self.assertNotIn(password, p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()
