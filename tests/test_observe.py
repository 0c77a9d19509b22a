"""test_observe: what `pickline run` tells about itself is true, and is
read by the tools people use: GET /metrics passes `promtool check metrics`
(Debian's prometheus package) and its numbers are the line's; GET /ready
says 503 with the reason when a stage's dependency keeps failing, when a
sealed batch waits for qload too long, when the disk is nearly full, and
200 again once it is fixed; GET /health is liveness; GET / is a status page
that a real browser (headless Chromium, Debian's chromium package) renders
with every stage and queue of the line, in its DOM after the script ran and
in a screenshot.

Real processes and loopback HTTP; the service the fetch stage calls is a
fixture here that can be taken down and brought back."""
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib

import plhelp
from engine_fixtures import EngineTestCase, qctl
from plhelp import SLOW, Fixture, pipeline, wait_for

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


class Records(Fixture):
    """GET /records/ID -> {"id": ID, "email": ...}: a bad email for the ids
    in .bad; 503 for everything while .down; answered after .delay s."""

    def __init__(self):
        super().__init__()
        self.down = False
        self.bad = set()
        self.delay = 0

    def handle(self, req):
        with self.lock:
            self.requests += 1
        if self.delay and self.sleep(self.delay):
            return
        if self.down:
            return req.reply(503, {"error": "down for the test"})
        rid = int(req.url_path.rsplit("/", 1)[1])
        req.reply(200, {"id": rid, "email": "not-an-email" if rid in self.bad else "u%d@example.com" % rid})


def parse_metrics(text):
    """The samples of a Prometheus text page: {(name, labels text): value},
    and the families in order of their TYPE lines, with their types."""
    samples, families = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            families.append((name, typ))
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples, families


def labels(**kv):
    return "{" + ",".join('%s="%s"' % (k, v) for k, v in kv.items()) + "}"


class ObserveCase(EngineTestCase):
    tmp_prefix = "pickline-observe-"

    def start(self, health="", rows=4):
        self.api = self.fx.add(Records())
        eng = self.engine(pipeline("observe", health=health, rows=rows), api=self.api.url)
        eng.start()
        return eng

    def ready(self, eng):
        r = eng.request("GET", "/ready", auth=False)
        self.assertIn(r.status, (200, 503), r)
        body = r.json()
        self.assertEqual(body["status"], "ready" if r.status == 200 else "unready")
        return r.status, body["reasons"]

    def wait_ready(self, eng, status, what):
        box = {}

        def ok():
            box["r"] = self.ready(eng)
            return box["r"][0] == status and box["r"]
        return self.wait(ok, 30, "/ready to say %d (%s; last %r)" % (status, what, box.get("r")), eng)


class MetricsTest(ObserveCase):

    def test_metrics_pass_promtool_and_tell_the_truth(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is missing: scripts/install-deps.sh installs "
                                       "Debian's prometheus package, which has it")
        eng = self.start()
        self.api.bad = {8, 9, 10}
        for i in range(1, 11):
            self.assertEqual(eng.put("ids", {"id": i}).status, 202)
        self.wait_empty(eng, ["ids", "raw", "valid"])
        rejects = self.rejects(eng)
        self.assertEqual(len(rejects), 3)
        batches = self.batches(eng)
        states = sorted(b["state"] for b in batches)
        self.assertEqual(states, ["open", "sealed"], batches)
        r = eng.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["content-type"].startswith("text/plain; version=0.0.4"))
        p = subprocess.run([promtool, "check", "metrics"], input=r.body, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual((p.returncode, p.stdout.decode()), (0, ""), "promtool check metrics:\n" + r.text)
        samples, families = parse_metrics(r.text)
        # Each family once, with HELP, its samples together.
        names = [f for f, _ in families]
        self.assertEqual(len(names), len(set(names)), names)
        for name in names:
            self.assertIn("# HELP %s " % name, r.text)
        order = []
        for (name, _) in samples:
            fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in names else name
            if not order or order[-1] != fam:
                self.assertNotIn(fam, order, "family %s interleaved" % fam)
                order.append(fam)
        # The numbers are the line's.
        m = lambda name, **kv: samples[(name, labels(**kv) if kv else "")]  # noqa: E731
        self.assertEqual(m("pickline_stage_jobs_total", stage="fetch", outcome="done"), 10)
        self.assertEqual(m("pickline_stage_jobs_total", stage="seal", outcome="done"), 7)
        self.assertEqual(m("pickline_stage_latency_seconds_count", stage="fetch"), 10)
        self.assertEqual(m("pickline_stage_latency_seconds_bucket", stage="fetch", le="+Inf"), 10)
        self.assertEqual(m("pickline_queue_jobs", queue="ids", state="ready"), 0)
        self.assertEqual(m("pickline_queue_puts_total", queue="ids"), 10)
        self.assertEqual(m("pickline_queue_acks_total", queue="ids"), 10)
        self.assertEqual(m("pickline_batches", model="users", state="sealed"), 1)
        self.assertEqual(m("pickline_batches", model="users", state="open"), 1)
        self.assertEqual(m("pickline_batch_rows", model="users", state="sealed"), 4)
        self.assertEqual(m("pickline_batch_rows", model="users", state="open"), 3)
        self.assertEqual(m("pickline_rejects", model="users", field="email", rule="format"), 3)
        self.assertGreater(m("pickline_commit_seconds_count"), 0)
        self.assertEqual(m("pickline_commit_seconds_count"), m("pickline_commit_seconds_bucket", le="+Inf"))
        self.assertGreater(m("pickline_map_used_bytes"), 0)
        self.assertGreater(m("pickline_disk_free_bytes"), 0)
        self.assertEqual(m("pickline_ready"), 1)
        # The token guards /metrics like /queues; /health and /ready are public.
        self.assertEqual(eng.request("GET", "/health", auth=False).status, 200)

    def test_status_json_matches(self):
        eng = self.start(rows=100)
        for i in range(1, 6):
            eng.put("ids", {"id": i})
        self.wait_empty(eng, ["ids", "raw", "valid"])
        st = eng.request("GET", "/status").json()
        self.assertEqual([s["name"] for s in st["stages"]], ["fetch", "check", "seal"])
        self.assertEqual(st["stages"][0]["input"], "ids")
        self.assertEqual(st["stages"][0]["outputs"], ["raw"])
        self.assertEqual(st["stages"][0]["done"], 5)
        self.assertEqual(sorted(q["name"] for q in st["queues"]), ["ids", "raw", "valid"])
        self.assertEqual(st["batches"][0]["model"], "users")
        self.assertEqual(st["batches"][0]["open"], {"batches": 1, "rows": 5})
        self.assertTrue(st["ready"]["ok"])
        self.assertGreaterEqual(st["history"]["points"][-1][1], 15)


class ReadyTest(ObserveCase):

    def test_failing_dependency_makes_unready_until_it_works(self):
        eng = self.start(health="  dependency_failures: 3")
        self.assertEqual(self.ready(eng), (200, []))
        self.api.down = True
        eng.put("ids", {"id": 1})
        _, reasons = self.wait_ready(eng, 503, "the service is down")
        self.assertEqual(len(reasons), 1, reasons)
        self.assertRegex(reasons[0], r"^stage 'fetch': the last \d+ attempts at its dependency failed")
        self.assertNotIn("503", reasons[0], "/ready is public: no error text")
        self.assertEqual(eng.request("GET", "/health", auth=False).status, 200, "alive all along")
        st = eng.request("GET", "/status").json()
        self.assertIn("503", st["stages"][0]["last_failure"])
        self.assertGreaterEqual(st["stages"][0]["dependency_failures"], 3)
        self.api.down = False
        self.wait_ready(eng, 200, "the service is back")
        self.wait_empty(eng, ["ids", "raw", "valid"])

    def test_source_whose_database_is_down_makes_unready(self):
        text = ("listen:\n  port: ${port}\nhealth:\n  dependency_failures: 2\nqueues:\n  keys:\n"
                "stages:\n  - name: notices\n    kind: pg_notify\n    dsn: \"host=127.0.0.1 port=%d "
                "dbname=x\"\n    channels: [c]\n    output: keys\n" % plhelp.free_port())
        eng = self.engine(text)
        eng.start()
        _, reasons = self.wait_ready(eng, 503, "the database is down")
        self.assertRegex(reasons[0], r"^stage 'notices': the last \d+ attempts at its dependency failed")

    def test_batch_not_loaded_makes_unready(self):
        eng = self.start(health="  batch_wait: 1", rows=1)
        eng.put("ids", {"id": 1})
        self.wait_empty(eng, ["ids", "raw", "valid"])
        (batch,) = self.batches(eng)
        self.assertEqual(batch["state"], "sealed")
        _, reasons = self.wait_ready(eng, 503, "qload not loading")
        self.assertIn("batch %d of model 'users' was sealed" % batch["id"], reasons[0])
        self.assertIn("is qload running?", reasons[0])
        # An operator sets it aside: nothing waits for qload any more.
        p = qctl(eng.data, "batches", "fail", str(batch["id"]), "--reason", "test")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.wait_ready(eng, 200, "no batch waits")

    def test_disk_nearly_full_makes_unready(self):
        # More free bytes than any disk here has: the real disk is "nearly full".
        eng = self.start(health="  disk_min: %d" % (1 << 50))
        _, reasons = self.wait_ready(eng, 503, "the disk")
        self.assertIn("the disk of the data directory is nearly full", reasons[0])
        r = eng.request("GET", "/metrics")
        self.assertIn("\npickline_ready 0\n", r.text)


# ---------------------------------------------------------------- the page in a browser

def chromium_argv(profile, *args):
    exe = shutil.which("chromium")
    if not exe:
        raise AssertionError("chromium is missing: scripts/install-deps.sh installs Debian's chromium")
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--user-data-dir=" + profile, "--virtual-time-budget=10000"] + list(args)


def read_png(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB or RGBA,
    non-interlaced PNG (what Chromium writes)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, hdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, [[tuple(r[x * bpp:x * bpp + 3]) for x in range(w)] for r in rows]


def boxes(png, color, min_pixels=1500):
    """The number of areas of exactly color (4-connected, at least
    min_pixels): the boxes the page paints in that color."""
    w, h, px = png
    seen = set()
    count = 0
    for y in range(h):
        for x in range(w):
            if px[y][x] != color or (x, y) in seen:
                continue
            stack, n = [(x, y)], 0
            seen.add((x, y))
            while stack:
                cx, cy = stack.pop()
                n += 1
                for nx, ny in ((cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)):
                    if 0 <= nx < w and 0 <= ny < h and (nx, ny) not in seen and px[ny][nx] == color:
                        seen.add((nx, ny))
                        stack.append((nx, ny))
            if n >= min_pixels:
                count += 1
    return count


class WorkingTest(ObserveCase):

    def test_jobs_the_engine_works_are_counted_as_working(self):
        # The engine holds the jobs it works in memory, not by a lease: on
        # disk they are ready. /status, /metrics and qctl top say which of
        # them its slots work (before: 3 ready and 0 reserved everywhere,
        # as if nothing worked them).
        eng = self.start()
        self.api.delay = 30  # past the stage's timeout: 2 s, then a retry
        for i in range(1, 4):
            self.assertEqual(eng.put("ids", {"id": i}).status, 202)
        box = {}

        def status_working():
            st = eng.request("GET", "/status").json()
            box["q"] = [q for q in st["queues"] if q["name"] == "ids"][0]
            return box["q"]["working"] == 3
        self.wait(status_working, 30, "/status to count 3 jobs working", eng)
        q = box["q"]
        self.assertEqual((q["ready"], q["reserved"]), (3, 0), q)
        self.assertGreaterEqual(q["held"], 3, q)

        def metrics_working():
            samples, _ = parse_metrics(eng.request("GET", "/metrics").text)
            return samples.get(("pickline_queue_working_jobs", labels(queue="ids"))) == 3
        self.wait(metrics_working, 30, "/metrics to count 3 jobs working", eng)

        def top_working():
            r = qctl(eng.data, "top", "--iterations", "1")
            box["top"] = r.stdout
            return (re.search(r"^fetch\s+http_extract\s+ids\s+0\s+3\s+0\s", box["top"], re.M) and
                    re.search(r"^ids\s+0\s+3\s+0\s+0\s+0\s", box["top"], re.M))
        self.wait(top_working, 30, "qctl top to show 3 jobs working of ids", eng)
        self.assertIn("WORKING", box["top"])
        # Stopped, nothing works them: top reads no stale in-flight file.
        eng.terminate()
        r = qctl(eng.data, "top", "--iterations", "1")
        out = r.stdout
        self.assertRegex(out, re.compile(r"^ids\s+\d+\s+0\s", re.M), out)


STAGE_COLOR = (0xd6, 0xea, 0xf8)  # .stage's background in status.c
QUEUE_COLOR = (0xfd, 0xeb, 0xd0)  # .queue's


class StatusPageTest(ObserveCase):

    def test_page_in_headless_chromium_shows_every_stage(self):
        eng = self.start()
        self.api.bad = {3}
        for i in range(1, 7):
            eng.put("ids", {"id": i})
        self.wait_empty(eng, ["ids", "raw", "valid"])
        r = eng.request("GET", "/", auth=False)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"], "text/html; charset=utf-8")
        self.assertNotRegex(r.text, r"(src|href)=\"?(https?:)?//", "no external asset")
        self.assertEqual(eng.request("GET", "/nope", auth=False).status, 404)
        profile = tempfile.mkdtemp(prefix="chromium-", dir=self.dir)
        url = eng.base + "/"
        dom = plhelp.run(chromium_argv(profile, "--dump-dom", url), timeout=120)
        self.assertEqual(dom.code, 0, dom)
        for s in ("fetch", "check", "seal"):
            self.assertIn('data-stage="%s"' % s, dom.out, "stage %s is not on the page:\n%s" % (s, dom.out))
        for q in ("ids", "raw", "valid"):
            self.assertIn('data-queue="%s"' % q, dom.out)
        self.assertIn(">ready<", dom.out)
        self.assertRegex(dom.out, r"<td>users</td><td>email</td><td>format</td><td>1</td>")
        shot = os.path.join(self.dir, "status.png")
        r = plhelp.run(chromium_argv(profile, "--window-size=1100,760", "--screenshot=" + shot, url),
                       timeout=120)
        self.assertEqual(r.code, 0, r)
        png = read_png(shot)
        self.assertEqual(png[:2], (1100, 760))
        self.assertEqual(boxes(png, STAGE_COLOR), 3, "a box per stage in the screenshot")
        self.assertEqual(boxes(png, QUEUE_COLOR), 3, "a box per queue in the screenshot")
        keep = os.environ.get("PICKLINE_KEEP_SCREENSHOT")
        if keep:  # how examples/status-page.png was made
            shutil.copy(shot, keep)

    def test_page_asks_for_the_token(self):
        self.api = self.fx.add(Records())
        token = "t" * 32
        eng = self.engine(pipeline("observe", health="", rows=4).replace(
            "  port: ${port}\n", "  port: ${port}\n  token: ${token}\n"), token=token, api=self.api.url)
        eng.start()
        self.assertEqual(eng.request("GET", "/status", auth=False).status, 401)
        self.assertEqual(eng.request("GET", "/", auth=False).status, 200)
        profile = tempfile.mkdtemp(prefix="chromium-", dir=self.dir)
        dom = plhelp.run(chromium_argv(profile, "--dump-dom", eng.base + "/"), timeout=120)
        self.assertEqual(dom.code, 0, dom)
        self.assertIn("a bearer token is needed", dom.out)
        self.assertIn('id="auth" style="display: block;"', dom.out)


# ---------------------------------------------------------------- qctl top in a terminal

class TopTest(ObserveCase):
    """qctl top as people see it: in a terminal (tmux), read with
    capture-pane, quit with the q key."""

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.sock] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=30)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "top").stdout

    def test_top_shows_the_line_of_stages(self):
        self.assertIsNotNone(shutil.which("tmux"), "tmux is missing: scripts/install-deps.sh installs it")
        eng = self.start()
        self.assertEqual(qctl(eng.data, "pause", "raw").returncode, 0)
        for i in range(1, 6):
            eng.put("ids", {"id": i})
        self.wait_depth(eng, "raw", 5, states=("ready",))
        self.sock = "pickline-top-%d" % os.getpid()
        self.addCleanup(lambda: self.tmux("kill-server"))
        r = self.tmux("new-session", "-d", "-s", "top", "-x", "150", "-y", "50",
                      "%s --data %s top --interval 0.3" % (plhelp.binary("qctl"), eng.data))
        self.assertEqual(r.returncode, 0, r.stderr)
        row = lambda name: re.compile(r"^%s\s" % name, re.M)  # noqa: E731
        self.wait(lambda: re.search(r"^check\s+validate\s+raw\s+5\s+0\s+0\s+\S+\s+->\s+valid\s*$",
                                    self.screen(), re.M), 30, "the check stage with 5 jobs waiting", eng)
        text = self.screen()
        self.assertIn("STAGE", text)
        self.assertRegex(text, re.compile(r"^fetch\s+http_extract\s+ids\s+0\s+0\s+0\s+\S+\s+->\s+raw\s*$", re.M))
        self.assertRegex(text, re.compile(r"^seal\s+batch\s+valid\s+0\s+0\s+0\s+\S+\s+->\s+\(batches\)\s*$", re.M))
        at = [row(n).search(text).start() for n in ("fetch", "check", "seal")]
        self.assertEqual(at, sorted(at), "the stages in the order of the flow:\n" + text)
        # It is live: the queue drains once resumed.
        self.assertEqual(qctl(eng.data, "resume", "raw").returncode, 0)
        self.wait(lambda: re.search(r"^check\s+validate\s+raw\s+0\s+0\s+0\s", self.screen(), re.M), 30,
                  "the check stage's queue to drain on the screen", eng)
        self.tmux("send-keys", "-t", "top", "q")
        self.wait(lambda: self.tmux("has-session", "-t", "top").returncode != 0, 10, "top to quit on q", eng)
