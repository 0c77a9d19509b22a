"""engine_fixtures: stand-ins for the third-party services that `pickline run`
talks to, helpers that drive the engine process, and EngineTestCase, the
base of the tests that run it (test_engine.py, test_validate.py, ...).

Every fixture is an in-process HTTP server (plhelp.Fixture: 127.0.0.1, port
0, its own daemon thread) with counters the tests read and knobs the tests
set. They answer HTTP/1.0 (one request per connection) so that a
"connection reset" is a real failure the client sees, not a stale keep-alive
connection that curl would quietly retry.

    ChangesFeed   GET /changes?since=CURSOR, paged, ETag / If-None-Match -> 304
    RecordAPI     GET /records/ID -> the record (hostile values) or 404
    Geocoder      GET /geocode?address=... -> {"lat":..,"lon":..}
    Sink          POST /inspect/KEY -> records what a stage sent (the staged row)
    Identity      POST /verify -> 202, then later POSTs the result to the
                  callback_url from a thread, retrying until a 2xx
    Flaky         GET|POST /flaky/KEY: a plan of modes per key (500, 429,
                  hang, reset, badjson, 404, ok)

Process helpers: Engine (start `pickline run` on a free port with a pipeline
written into a temp dir, wait for /health, stop with SIGTERM or SIGKILL,
collect stderr), qctl / qctl_stats / qctl_peek. Standard library only.
"""
import collections
import json
import os
import random
import signal
import string
import subprocess
import threading
import time
import urllib.parse

from plhelp import (SLOW, Fixture, TempDirTest, binary, free_port, http_request,  # noqa: F401
                    wait_for)

STATES = ("ready", "delayed", "reserved", "buried")


# ---------------------------------------------------------------- changes feed

class ChangesFeed(Fixture):
    """GET /changes?since=CURSOR -> {"changes":[...], "cursor":"N", "next":URL|null}.

    Each change is {"id":ID, "table":"users", "seq":N, ...}; the cursor is
    the seq of the last change returned. At most page_size changes a page;
    next is the absolute URL of the following page while more are waiting.
    Every answer carries ETag "feed-<number of changes>", and a request whose
    If-None-Match equals the current ETag gets 304.

    Knobs: page_size. Counters: log (one dict per request: since, inm,
    status, ids), served (change id -> times served), not_modified (304s)."""

    def __init__(self, page_size=50):
        super().__init__()
        self.page_size = page_size
        self.changes = []
        self.log = []
        self.served = collections.Counter()
        self.not_modified = 0
        self.fail_next = 0  # answer this many requests with 503 first

    def append(self, ids, table="users", **extra):
        """Appends one change per id (in order); returns the changes."""
        out = []
        with self.lock:
            for i in ids:
                c = {"id": i, "table": table, "seq": len(self.changes) + 1}
                c.update(extra)
                self.changes.append(c)
                out.append(c)
        return out

    def etag(self):
        return '"feed-%d"' % len(self.changes)

    def handle(self, req):
        if req.url_path != "/changes":
            return req.reply(404, {"error": "no such path"})
        with self.lock:
            inm = req.headers.get("If-None-Match")
            since = req.query.get("since", "")
            entry = {"since": since, "inm": inm, "t": time.monotonic()}
            self.log.append(entry)
            if self.fail_next > 0:
                self.fail_next -= 1
                entry["status"] = 503
                return req.reply(503, {"error": "try later"})
            etag = self.etag()
            if inm is not None and inm == etag:
                self.not_modified += 1
                entry["status"] = 304
                req.send_response(304)
                req.send_header("ETag", etag)
                req.end_headers()
                return
            try:
                c0 = int(since) if since else 0
            except ValueError:
                entry["status"] = 400
                return req.reply(400, {"error": "bad cursor"})
            rest = [c for c in self.changes if c["seq"] > c0]
            page = rest[:self.page_size]
            cursor = str(page[-1]["seq"]) if page else str(c0)
            nxt = None
            if len(rest) > len(page):
                nxt = "%s/changes?since=%s" % (self.url, cursor)
            for c in page:
                self.served[c["id"]] += 1
            entry["status"] = 200
            entry["ids"] = [c["id"] for c in page]
            body = {"changes": page, "cursor": cursor, "next": nxt}
        req.reply(200, body, headers={"ETag": etag})


# ---------------------------------------------------------------- record API

# A decimal number must come back as written (0.1000, not 0.1): records are
# serialised with this sentinel string, then the sentinel is replaced by the
# raw number text.
_RAW = "\u0000raw:"


def raw_number(text):
    """A value that RecordAPI writes into the JSON as the bare number text."""
    return _RAW + text


def hostile_record(rid, n, with_address=True):
    """A users record full of values that must round-trip exactly."""
    r = collections.OrderedDict()
    r["id"] = rid
    r["tenant"] = n % 7
    r["first_name"] = 'Zoë "Z" O\'Brien, #%d' % n
    r["last_name"] = "back\\slash, comma; tab\there"
    r["title"] = ""                      # empty string, not null
    r["middle_name"] = None              # null, not ""
    r["email"] = "user%d@example.org" % n
    r["note"] = "line one\nline two\r\nline \"three\", with ünïcödé ☃ and 😀 \u2028"
    r["big"] = 12345678901234567890123 + n        # beyond uint64: kept as text
    r["u64"] = 18446744073709551615               # uint64 max
    r["neg"] = -9223372036854775808               # int64 min
    r["price"] = raw_number("0.1000")             # a decimal as written
    r["exp"] = raw_number("1.5e300")
    r["active"] = (n % 2 == 0)
    r["created_at"] = "2024-02-29T23:59:59.123456Z"
    if with_address:
        r["address"] = "%d Main St, Apt \"%d\", Zürich" % (n, n % 10)
    return r


def record_text(rec):
    """The JSON text of a record built with raw_number values."""
    text = json.dumps(rec, ensure_ascii=False)
    # json.dumps escapes the NUL of the sentinel as \u0000.
    marker = json.dumps(_RAW)[1:-1]
    out, i = [], 0
    while True:
        j = text.find('"' + marker, i)
        if j < 0:
            out.append(text[i:])
            break
        k = text.find('"', j + 1)
        out.append(text[i:j])
        out.append(text[j + 1 + len(marker):k])
        i = k + 1
    return "".join(out)


class RecordAPI(Fixture):
    """GET /records/ID -> the record JSON, or 404 {"error":...} for unknown ids.

    Knobs: records (id -> dict, see hostile_record; or raw JSON text),
    delay (seconds before answering), bad_json (ids answered with 200 and a
    malformed body). Counters: hits (id -> requests), in_flight, max_in_flight,
    answered (id -> 200 answers sent)."""

    def __init__(self):
        super().__init__()
        self.records = {}
        self.delay = 0.0
        self.bad_json = set()
        self.hits = collections.Counter()
        self.answered = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    def add(self, rid, rec):
        with self.lock:
            self.records[rid] = rec

    def text_of(self, rid):
        rec = self.records[rid]
        return rec if isinstance(rec, str) else record_text(rec)

    def handle(self, req):
        if not req.url_path.startswith("/records/"):
            return req.reply(404, {"error": "no such path"})
        rid = urllib.parse.unquote(req.url_path[len("/records/"):])
        with self.lock:
            self.hits[rid] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            delay = self.delay
        try:
            if delay and self.sleep(delay):
                return
            with self.lock:
                if rid in self.bad_json:
                    return req.reply(200, '{"id": "%s", "oops": ' % rid)
                if rid not in self.records:
                    return req.reply(404, {"error": "no record %s" % rid})
                text = self.text_of(rid)
                self.answered[rid] += 1
            req.reply(200, text)
        finally:
            with self.lock:
                self.in_flight -= 1


# ---------------------------------------------------------------- geocoder

class Geocoder(Fixture):
    """GET /geocode?address=A -> {"lat":..,"lon":..}, deterministic in A.
    Counters: addresses (address -> requests)."""

    def __init__(self):
        super().__init__()
        self.addresses = collections.Counter()

    @staticmethod
    def locate(address):
        h = 0
        for ch in address.encode("utf-8"):
            h = (h * 131 + ch) % 1000003
        return {"lat": round(-90 + (h % 180000) / 1000.0, 3) + 0.0005,
                "lon": round(-180 + (h % 360000) / 1000.0, 3) + 0.0005}

    def handle(self, req):
        if req.url_path != "/geocode" or "address" not in req.query:
            return req.reply(400, {"error": "use /geocode?address=..."})
        a = req.query["address"]
        with self.lock:
            self.addresses[a] += 1
        req.reply(200, self.locate(a))


# ---------------------------------------------------------------- sink

class Sink(Fixture):
    """POST /inspect/KEY (or with the key in the body's "id"): keeps the body
    a stage sent, answers {"inspected": true, ...extra}. With an http_enrich
    stage (method POST, send: [fields]) it shows the staged row as the
    engine holds it. Counters: bodies (key -> list of raw bodies)."""

    def __init__(self):
        super().__init__()
        self.bodies = collections.defaultdict(list)
        self.extra = {}

    def handle(self, req):
        if not req.url_path.startswith("/inspect"):
            return req.reply(404, {"error": "no such path"})
        key = urllib.parse.unquote(req.url_path[len("/inspect"):].lstrip("/"))
        if not key:
            try:
                key = str(json.loads(req.req_body).get("id"))
            except (ValueError, AttributeError):
                key = ""
        with self.lock:
            self.bodies[key].append(req.req_body)
        out = {"inspected": True}
        out.update(self.extra)
        req.reply(200, out)


# ---------------------------------------------------------------- identity

class Identity(Fixture):
    """POST /verify with a JSON body holding "callback_url" -> 202 at once;
    then, after `delay` seconds, a background thread POSTs the result
    (result(body) -> dict; default {"ok": true, "score": ..}) to the
    callback_url, retrying every `retry` seconds until a 2xx or `give_up`
    seconds (so a callback sent while the engine is down lands after it is
    back). Counters: submissions (list of parsed bodies), attempts (list of
    {"url", "status" (None: no answer), "error", "t"}), delivered (list of
    (url, body bytes) that got a 2xx)."""

    def __init__(self, delay=0.2, retry=0.25, give_up=60.0):
        super().__init__()
        self.delay = delay
        self.retry = retry
        self.give_up = give_up
        self.submissions = []
        self.attempts = []
        self.delivered = []
        self.submit_status = 202
        self.result = lambda body: {"ok": True, "score": 0.875, "ref": "idv-%s" % body.get("id")}
        self.threads = []

    def handle(self, req):
        if req.url_path != "/verify" or req.command != "POST":
            return req.reply(404, {"error": "no such path"})
        try:
            body = json.loads(req.req_body)
            cb = body["callback_url"]
        except (ValueError, KeyError, TypeError):
            return req.reply(400, {"error": "need a JSON body with callback_url"})
        with self.lock:
            self.submissions.append(body)
            status = self.submit_status
        if status // 100 != 2:
            return req.reply(status, {"error": "identity service unavailable"})
        res = json.dumps(self.result(body)).encode("utf-8")
        t = threading.Thread(target=self._deliver, args=(cb, res), daemon=True)
        t.start()
        with self.lock:
            self.threads.append(t)
        req.reply(202, {"status": "queued"})

    def _deliver(self, url, body):
        if self.sleep(self.delay):
            return
        end = time.monotonic() + self.give_up
        while not self.stopping.is_set():
            a = {"url": url, "t": time.monotonic(), "status": None, "error": None}
            try:
                r = http_request("POST", url, body, {"Content-Type": "application/json"}, timeout=5)
                a["status"] = r.status
                a["answer"] = r.text
            except OSError as e:
                a["error"] = "%s: %s" % (type(e).__name__, e)
            with self.lock:
                self.attempts.append(a)
                if a["status"] is not None and a["status"] // 100 == 2:
                    self.delivered.append((url, body))
                    return
            if time.monotonic() > end or self.sleep(self.retry):
                return

    def failed_attempts(self):
        with self.lock:
            return [a for a in self.attempts if a["status"] is None or a["status"] // 100 != 2]


# ---------------------------------------------------------------- flaky

class Flaky(Fixture):
    """GET or POST /flaky/KEY: answers by the plan of KEY, one mode per
    request (plan[KEY] is a list consumed from the front; when empty, the
    mode is `default`). Modes:
        "500"     500 with a JSON error
        "429"     429 with Retry-After: `retry_after` (seconds)
        "hang"    answers nothing for `hang` seconds, then 200 (past any
                  sane stage timeout)
        "reset"   closes the connection without answering (RST)
        "badjson" 200 with a malformed JSON body
        "404"     404
        "ok"      200 {"lat":..,"lon":..,"flaky":"ok","key":KEY}
    Counters: log (one (t, key, mode) per request), by_key (KEY -> list of
    (t, mode))."""

    MODES = ("500", "429", "hang", "reset", "badjson", "404", "ok")

    def __init__(self, default="ok"):
        super().__init__()
        self.default = default
        self.plan = collections.defaultdict(list)
        self.retry_after = 1
        self.hang = 6.0
        self.log = []
        self.by_key = collections.defaultdict(list)

    def set_plan(self, key, modes):
        for m in modes:
            assert m in self.MODES, m
        with self.lock:
            self.plan[key] = list(modes)

    def handle(self, req):
        if not req.url_path.startswith("/flaky/"):
            return req.reply(404, {"error": "no such path"})
        key = urllib.parse.unquote(req.url_path[len("/flaky/"):])
        with self.lock:
            mode = self.plan[key].pop(0) if self.plan[key] else self.default
            t = time.monotonic()
            self.log.append((t, key, mode))
            self.by_key[key].append((t, mode))
        if mode == "500":
            req.reply(500, {"error": "internal error"})
        elif mode == "429":
            req.reply(429, {"error": "slow down"}, headers={"Retry-After": str(self.retry_after)})
        elif mode == "hang":
            if not self.sleep(self.hang):
                req.reply(200, {"lat": 0, "lon": 0, "flaky": "late"})
        elif mode == "reset":
            req.reset()
        elif mode == "badjson":
            req.reply(200, '{"lat": 1.5, "lon": ')
        elif mode == "404":
            req.reply(404, {"error": "no such thing"})
        else:
            req.reply(200, {"lat": 52.5, "lon": 4.25, "flaky": "ok", "key": key})

    def modes_of(self, key):
        with self.lock:
            return [m for _, m in self.by_key[key]]


# ---------------------------------------------------------------- qctl

def qctl(data, *args, timeout=30, input=None):
    """Runs qctl --data DATA ARGS (input: text for stdin); returns
    CompletedProcess (text)."""
    return subprocess.run([binary("qctl"), "--data", data] + [str(a) for a in args],
                          input=input if input is not None else "",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout * SLOW)


def qctl_stats(data):
    """{queue: {"ready","delayed","reserved","buried",...}} from qctl stats --json."""
    p = qctl(data, "stats", "--json")
    if p.returncode != 0:
        raise AssertionError("qctl stats failed (%d): %s" % (p.returncode, p.stderr))
    return json.loads(p.stdout)


def depth(stats, queue, states=("ready", "delayed", "reserved", "buried")):
    q = stats.get(queue)
    if not q:
        return 0
    return sum(q[s] for s in states)


def qctl_peek(data, queue, state="all"):
    """The jobs of queue (list of dicts: id, state, attempts, error, body...)."""
    p = qctl(data, "peek", queue, "--state", state, "--limit", "0", "--json")
    if p.returncode != 0:
        raise AssertionError("qctl peek %s failed (%d): %s" % (queue, p.returncode, p.stderr))
    out = p.stdout.strip()
    return json.loads(out) if out else []


# ---------------------------------------------------------------- the engine

class EngineError(AssertionError):
    pass


class Engine:
    """`pickline run PIPELINE --data DIR --port PORT` as a child process.

    The pipeline text is a string.Template: ${port} (the listener's port,
    found free beforehand), ${token}, and any name given in subst (fixture
    URLs) are substituted; the file is written into workdir. stderr goes to
    workdir/engine-N.err (one file per start); .stderr() reads them all."""

    def __init__(self, workdir, pipeline, subst=None, token=None, data=None, name="pipeline"):
        self.workdir = workdir
        self.data = data or os.path.join(workdir, "data")
        self.port = free_port()
        self.token = token
        values = {"port": self.port, "token": token or ""}
        values.update(subst or {})
        self.text = string.Template(pipeline).substitute(values)
        self.path = os.path.join(workdir, name + ".yml")
        with open(self.path, "w") as f:
            f.write(self.text)
        self.proc = None
        self.starts = 0
        self.errfiles = []
        self.base = "http://127.0.0.1:%d" % self.port

    # -- process

    def check(self):
        """`pickline check`: raises with its output when the file is refused."""
        p = subprocess.run([binary("pickline"), "check", self.path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30 * SLOW)
        if p.returncode != 0:
            raise EngineError("pickline check %s failed (%d):\n%s%s\n--- pipeline\n%s"
                              % (self.path, p.returncode, p.stdout, p.stderr, self.text))
        return p.stdout

    def start(self, wait=True, timeout=15.0, env=None, args=()):
        """Starts the engine (with env added to the environment, and args
        after its own), and waits for /health unless wait is false. Returns
        self."""
        assert not self.running(), "engine already running"
        self.starts += 1
        err = os.path.join(self.workdir, "engine-%d.err" % self.starts)
        self.errfiles.append(err)
        self._err = open(err, "wb")
        self.proc = subprocess.Popen(
            [binary("pickline"), "run", self.path, "--data", self.data, "--port", str(self.port)]
            + [str(a) for a in args],
            stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err, cwd=self.workdir,
            env=dict(os.environ, **env) if env else None)
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=15.0):
        def up():
            if self.proc.poll() is not None:
                raise EngineError("pickline exited with %s before it was healthy\n%s"
                                  % (self.proc.returncode, self.stderr_tail()))
            try:
                return http_request("GET", self.base + "/health", timeout=2).status == 200
            except OSError:
                return False
        wait_for(up, timeout, 0.05, "GET /health of pickline on port %d" % self.port)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=15.0):
        """SIGTERM; waits for the exit (timeout scaled) and returns
        (exit code, seconds). Raises EngineError (after a SIGKILL) on a hang."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._close_err()
            raise EngineError("pickline did not exit within %.1fs of SIGTERM\n%s"
                              % (timeout * SLOW, self.stderr_tail()))
        self._close_err()
        return rc, time.monotonic() - t0

    def kill(self):
        """SIGKILL, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self._close_err()

    def _close_err(self):
        f = getattr(self, "_err", None)
        if f is not None and not f.closed:
            f.close()

    def stderr(self):
        out = []
        for p in self.errfiles:
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def stderr_tail(self, n=40):
        lines = self.stderr().splitlines()
        return "--- pickline stderr (last %d of %d lines)\n%s" % (min(n, len(lines)), len(lines),
                                                                 "\n".join(lines[-n:]))

    # -- HTTP to the listener

    def auth(self, headers=None):
        h = dict(headers or {})
        if self.token:
            h.setdefault("Authorization", "Bearer " + self.token)
        return h

    def request(self, method, path, body=None, headers=None, auth=True, timeout=10.0):
        return http_request(method, self.base + path, body, self.auth(headers) if auth else headers, timeout)

    def put(self, queue, body, key=None, query=""):
        h = {"Content-Type": "application/json"}
        if key is not None:
            h["Idempotency-Key"] = key
        return self.request("POST", "/queues/%s/jobs%s" % (queue, query), body, h)

    # -- queues

    def stats(self):
        return qctl_stats(self.data)

    def peek(self, queue, state="all"):
        return qctl_peek(self.data, queue, state)


class Fixtures:
    """Owns the fixtures and engines of one test: close() stops them all."""

    def __init__(self):
        self.items = []
        self.engines = []

    def add(self, fx):
        self.items.append(fx)
        return fx

    def engine(self, *a, **kw):
        e = Engine(*a, **kw)
        self.engines.append(e)
        return e

    def close(self):
        for e in self.engines:
            try:
                e.kill()
            except Exception:
                pass
        for fx in self.items:
            try:
                fx.close()
            except Exception:
                pass


def exact(text):
    """Parses JSON keeping every number's text (so 0.1000 != 0.1)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text, parse_float=lambda s: ("num", s), parse_int=lambda s: ("num", s))


def rand_sleep(lo, hi):
    time.sleep(random.uniform(lo, hi))


# ---------------------------------------------------------------- the test case

class EngineTestCase(TempDirTest):
    """Base of the tests that run `pickline run`: a temporary directory
    (self.dir, kept when the test fails), the test's fixtures and engines
    (self.fx: every engine killed and every fixture closed when the test
    ends, before the directory goes), and on a failure the end of every
    engine's stderr."""

    tmp_prefix = "pickline-engine-test-"

    def setUp(self):
        super().setUp()
        self.fx = Fixtures()
        self.addCleanup(self.fx.close)

    def failure_report(self):
        return "\n".join("pipeline %s\n%s" % (e.path, e.stderr_tail(60)) for e in self.fx.engines)

    def engine(self, pipeline, token=None, workdir=None, data=None, name="pipeline", **subst):
        """An Engine (not started) of the pipeline text in workdir (default
        self.dir), ${...} filled from subst (see Engine), and checked; data
        and name as Engine's."""
        e = self.fx.engine(workdir or self.dir, pipeline, subst=subst, token=token, data=data, name=name)
        e.check()
        return e

    def wait(self, pred, timeout, what, eng=None):
        """wait_for(pred) with the end of eng's stderr in its failure."""
        try:
            return wait_for(pred, timeout, 0.05, what)
        except AssertionError as ex:
            if eng is not None:
                raise AssertionError("%s\n%s" % (ex, eng.stderr_tail())) from None
            raise

    def wait_depth(self, eng, queue, n, timeout=20, states=STATES):
        """Waits until queue holds exactly n jobs (in states); returns the
        stats."""
        box = {}

        def ok():
            box["s"] = eng.stats()
            return depth(box["s"], queue, states) == n

        try:
            wait_for(ok, timeout, 0.1, "%s to hold %d jobs" % (queue, n))
        except AssertionError as ex:
            raise AssertionError("%s\nstats: %s\n%s" % (ex, json.dumps(box.get("s"))[:3000],
                                                        eng.stderr_tail())) from None
        return box["s"]

    def qctl_json(self, eng, *args):
        """qctl --data (eng's) ARGS --json, which must exit 0: its JSON."""
        p = qctl(eng.data, *(list(args) + ["--json"]))
        self.assertEqual(p.returncode, 0, "qctl %s: %s" % (" ".join(map(str, args)), p.stderr))
        return json.loads(p.stdout or "null")

    def wait_empty(self, eng, queues, timeout=20):
        """Waits until every one of queues holds no job (buried ones count);
        returns the stats. A timeout names the queues' stats, what was
        buried and why, and eng's stderr."""
        box = {}

        def ok():
            box["s"] = eng.stats()
            return all(depth(box["s"], q) == 0 for q in queues)

        try:
            wait_for(ok, timeout, 0.1, "%s to empty" % ", ".join(queues))
        except AssertionError as ex:
            buried = {q: [(j["body"], j["error"]) for j in eng.peek(q, "buried")][:5] for q in queues}
            raise AssertionError("%s\nstats: %s\nburied: %s\n%s"
                                 % (ex, {q: box["s"].get(q) for q in queues}, buried,
                                    eng.stderr_tail())) from None
        return box["s"]

    def batches(self, eng):
        """Every batch of eng's data directory (qctl batches --json)."""
        return self.qctl_json(eng, "batches", "--limit", "0") or []

    def batch_rows(self, eng, bid):
        """The rows of batch bid, in order."""
        return [d["row"] for d in self.qctl_json(eng, "batches", "show", bid, "--rows", "1000000")["data"]]

    def rejects(self, eng, *args):
        """Every reject (of the model in args) of eng's data directory."""
        return self.qctl_json(eng, "rejects", "--limit", "0", *args) or []
