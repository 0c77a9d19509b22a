"""End-to-end tests of the async_submit stage's callbacks (POST
/callbacks/STAGE/TOKEN), as an outsider sees them: the real `pickline run`,
a submission service on loopback that keeps the callback URLs it is given,
and the test posting the callbacks itself.

  - tokens are secrets from the kernel's CSPRNG: at least 128 bits,
    URL-safe, and made of the bytes one getrandom(2) call returned (a
    preloaded shim logs every getrandom the engine makes), never of the
    xorshift generator's output;
  - a token is good once: a replay after the callback landed is refused,
    and so is a token past the stage's deadline;
  - callback data is checked against the model before it is merged: a bad
    value gets 422 with the reason, the row stays as it was, and the
    waiting job is buried with the reason (visible in qctl).

PICKLINE_KEEP_TEST_DIRS=1 keeps the temp dirs."""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase, depth, qctl  # noqa: E402
from plhelp import Fixture, http_request, pipeline  # noqa: E402

# Logs every buffer getrandom(2) hands to the process (one line of hex per
# call, to $GETRANDOM_LOG), then returns it: the bytes are the kernel's.
SHIM = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

ssize_t getrandom(void *buf, size_t n, unsigned int flags)
{
    long r = syscall(SYS_getrandom, buf, n, flags);
    const char *path = getenv("GETRANDOM_LOG");
    if (r > 0 && path) {
        static const char hex[] = "0123456789abcdef";
        char line[2 * 4096 + 1];
        size_t k = 0;
        for (long i = 0; i < r && k + 2 < sizeof line; i++) {
            line[k++] = hex[((unsigned char *)buf)[i] >> 4];
            line[k++] = hex[((unsigned char *)buf)[i] & 15];
        }
        line[k++] = '\n';
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
        if (fd >= 0) {
            ssize_t w = write(fd, line, k);
            (void)w;
            close(fd);
        }
    }
    return r;
}
"""


class Service(Fixture):
    """GET /records/ID -> a users record; POST /verify -> 202, keeping the
    body (with its callback_url) in submissions. It never calls back: the
    test does, with what it chooses."""

    def __init__(self):
        super().__init__()
        self.submissions = []

    def handle(self, req):
        if req.url_path.startswith("/records/"):
            i = int(req.url_path[len("/records/"):])
            return req.reply(200, {"id": i, "email": "u%d@example.com" % i})
        if req.url_path == "/verify" and req.command == "POST":
            with self.lock:
                self.submissions.append(json.loads(req.req_body))
            return req.reply(202, {"status": "queued"})
        req.reply(404, {"error": "no such path"})

    def urls(self, rid=None):
        with self.lock:
            return [s["callback_url"] for s in self.submissions if rid is None or s["id"] == rid]


def token_of(url):
    return url.rsplit("/", 1)[1]


def token_bytes(tok):
    """The bytes a token encodes: hex (what pickline used to send) or
    base64url without padding."""
    if re.fullmatch(r"[0-9a-f]{32}", tok):
        return bytes.fromhex(tok)
    return base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))


class CallbackTest(EngineTestCase):
    def engine(self, deadline=60, attempts=10, env=None):
        """An engine of callbacks.yml against a new Service, started (with
        env added to its environment)."""
        self.svc = self.fx.add(Service())
        eng = super().engine(pipeline("callbacks"), token="t0ken-of-the-test-0123456789",
                             svc=self.svc.url, deadline=deadline, attempts=attempts)
        return eng.start(env=env)

    def submit(self, eng, rid, n=1):
        """Puts record rid on the line; waits for its n-th submission."""
        if n == 1:
            self.assertEqual(eng.put("retrieve", {"id": rid}).status, 202)
        return self.wait(lambda: (lambda u: u[n - 1] if len(u) >= n else None)(self.svc.urls(rid)),
                         15, "submission %d of %d" % (n, rid), eng)

    def callback(self, url, body):
        return http_request("POST", url, json.dumps(body), {"Content-Type": "application/json"})

    def counts(self, eng):
        return {q: (v["ready"], v["delayed"], v["reserved"], v["buried"], v["puts"], v["acks"])
                for q, v in eng.stats().items()}

    # ------------------------------------------------------------ tests

    def test_1_tokens_are_bytes_of_one_getrandom_call(self):
        shim_c = os.path.join(self.dir, "shim.c")
        shim = os.path.join(self.dir, "getrandom_log.so")
        log = os.path.join(self.dir, "getrandom.log")
        with open(shim_c, "w") as f:
            f.write(SHIM)
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", shim, shim_c], check=True)
        env = {"LD_PRELOAD": shim, "GETRANDOM_LOG": log,
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
        eng = self.engine(env=env)
        urls = [self.submit(eng, rid) for rid in (1, 2, 3)]
        toks = [token_of(u) for u in urls]
        for u, t in zip(urls, toks):
            self.assertTrue(u.startswith(eng.base + "/callbacks/verify/"), u)
            self.assertRegex(t, r"^[A-Za-z0-9_-]+$", "a token is URL-safe as it is")
            self.assertGreaterEqual(len(token_bytes(t)) * 8, 128, t)
        self.assertEqual(len(set(toks)), 3)
        with open(log) as f:
            calls = [bytes.fromhex(line.strip()) for line in f if line.strip()]
        # Each token is (the start of) what one getrandom call returned:
        # straight from the kernel, no generator state in between.
        for t in toks:
            b = token_bytes(t)
            self.assertTrue(any(len(c) >= len(b) and c[:len(b)] == b for c in calls),
                            "token %s is not the output of a getrandom call (%d calls logged: %s)"
                            % (t, len(calls), [c.hex() for c in calls][:8]))
        # And the tokens work: each callback lands once.
        for rid, u in zip((1, 2, 3), urls):
            r = self.callback(u, {"person": "p-%d" % rid, "score": 0.5})
            self.assertEqual(r.status, 200, r)
        self.wait(lambda: depth(eng.stats(), "final") == 3, 10, "3 in final", eng)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_2_a_token_is_good_once(self):
        eng = self.engine()
        url = self.submit(eng, 1)
        body = {"person": "p-1", "score": "0.875"}
        # The store keeps only a hash of the token's secret half: what qctl
        # shows (peek, export) cannot be turned into a callback.
        tok = token_of(url)
        waits = eng.peek("_w.verify")
        self.assertEqual(len(waits), 1, waits)
        shown = json.dumps(waits)
        self.assertNotIn(tok[16:], shown)
        self.assertEqual(waits[0]["body"]["verifier_sha256"],
                         hashlib.sha256(tok[16:].encode()).hexdigest())
        self.assertNotIn("verifier", {k for k in waits[0]["body"] if k != "verifier_sha256"})
        # Two deliveries of one callback at once: one lands, one is refused.
        out = []
        ts = [threading.Thread(target=lambda: out.append(self.callback(url, body))) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(sorted(r.status for r in out), [200, 404], out)
        self.wait(lambda: depth(eng.stats(), "final") == 1, 10, "the job in final", eng)
        before = self.counts(eng)
        # A replay after it landed: refused with a JSON error, nothing changes.
        for u in (url, url + "A", url[:-1], url[:-1] + ("A" if url[-1] != "A" else "B")):
            r = self.callback(u, body)
            self.assertIn(r.status, (404, 410), "%s: %s" % (u, r))
            self.assertIn("error", r.json(), r)
        self.assertEqual(self.counts(eng), before)
        self.assertEqual(depth(eng.stats(), "final"), 1)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_3_a_token_past_the_deadline_is_refused(self):
        # One submission allowed: past the deadline the waiting job is
        # buried ("no callback within ..."), and its token is dead.
        eng = self.engine(deadline=1, attempts=1)
        url = self.submit(eng, 1)
        self.wait(lambda: depth(eng.stats(), "_w.verify", ("buried",)) == 1, 15,
                  "the waiting job buried past its deadline", eng)
        r = self.callback(url, {"person": "late", "score": 0.5})
        self.assertIn(r.status, (404, 410), r)
        self.assertIn("error", r.json(), r)
        self.assertEqual(depth(eng.stats(), "final"), 0)
        self.assertEqual(depth(eng.stats(), "_w.verify", ("buried",)), 1)
        self.assertEqual(len(self.svc.urls(1)), 1)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_4_a_resubmission_kills_the_old_token(self):
        eng = self.engine(deadline=1, attempts=5)
        old = self.submit(eng, 1)
        new = self.submit(eng, 1, n=2)  # the deadline passed: submitted again
        self.assertNotEqual(token_of(old), token_of(new))
        r = self.callback(old, {"person": "old"})
        self.assertIn(r.status, (404, 410), r)
        r = self.callback(new, {"person": "new", "score": 0.25})
        self.assertEqual(r.status, 200, r)
        self.wait(lambda: depth(eng.stats(), "final") == 1, 10, "in final", eng)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_5_bad_callback_data_gets_422_and_changes_nothing(self):
        eng = self.engine(deadline=60, attempts=10)
        bad = [({"person": {"a": 1}, "score": 0.5}, "person_id"),   # an object into string(40)
               ({"person": "x" * 41}, "person_id"),                 # too long
               ({"person": "ok", "score": 12.5}, "match_score"),     # over decimal(4,3)
               ({"at": "yesterday"}, "checked_at")]                 # not a datetime
        for i, (body, field) in enumerate(bad, start=1):
            url = self.submit(eng, i)
            r = self.callback(url, body)
            self.assertEqual(r.status, 422, "%s: %s" % (body, r))
            self.assertIn(field, r.json()["error"], r)
            # The event is recorded: the waiting job is buried with the reason.
            self.wait(lambda: depth(eng.stats(), "_w.verify", ("buried",)) == i, 5, "buried", eng)
            self.assertEqual(self.callback(url, {"person": "good"}).status // 100, 4,
                             "a token whose callback was refused is not good again")
        buried = eng.peek("_w.verify", "buried")
        self.assertEqual(len(buried), len(bad))
        for j in buried:
            self.assertIn("callback data", j["error"])
        self.assertTrue(any("person_id" in j["error"] and "string" in j["error"] for j in buried), buried)
        self.assertEqual(depth(eng.stats(), "final"), 0)
        # The row is as it was: kicked, the stage submits it again (the
        # whole row, as no `send` is set), without the refused values, and
        # a good callback then lands.
        p = qctl(eng.data, "kick", "_w.verify", "10")
        self.assertEqual(p.returncode, 0, p.stderr)
        for i in range(1, len(bad) + 1):
            url = self.submit(eng, i, n=2)
            sub = [s for s in self.svc.submissions if s["id"] == i][1]
            self.assertEqual((sub["person_id"], sub["match_score"], sub["checked_at"]), (None, None, None), sub)
            r = self.callback(url, {"person": "p-%d" % i, "score": "0.5", "at": "2026-01-02T03:04:05Z"})
            self.assertEqual(r.status, 200, r)
        self.wait(lambda: depth(eng.stats(), "final") == len(bad), 10, "all in final", eng)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())


if __name__ == "__main__":
    unittest.main()
