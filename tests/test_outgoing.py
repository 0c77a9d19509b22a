"""End-to-end tests of the requests pickline sends (issue 10, item 7):
`pickline check` refuses URLs and headers that would let a value change the
request (CR/LF, bad hosts and ports), and `pickline run` renders URL
templates so that no job field can move a request to another path: a field
of "." or ".." is percent-encoded (%2E, %2E%2E) and, in the path, refused
(the job is buried with the reason), because servers and proxies that
normalise paths (RFC 3986 6.2.2, nginx) would still read %2E%2E as "..".

The service is a loopback HTTP fixture that records the raw request target
(path and query, as sent) of every request it gets."""
import os
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase
from plhelp import Fixture, pipeline, wait_for


class PathRecorder(Fixture):
    """GET /api/v1/records/ID -> {"id": ID (decoded), "q": Q}, where Q is
    the record's q field (records: id -> q); GET /api/v1/lookup?q=..&id=..
    -> {"found": true}; anything else -> 404. targets: every raw request
    target in arrival order."""

    def __init__(self):
        super().__init__()
        self.targets = []
        self.records = {}

    def handle(self, req):
        with self.lock:
            self.targets.append(req.path)
        path = req.url_path
        if path.startswith("/api/v1/records/") and path.count("/") == 4:
            rid = urllib.parse.unquote(path[len("/api/v1/records/"):])
            return req.reply(200, {"id": rid, "q": self.records.get(rid, "plain")})
        if path == "/api/v1/lookup":
            return req.reply(200, {"found": True})
        req.reply(404, {"error": "no such path %s" % path})

    def seen(self):
        with self.lock:
            return list(self.targets)


class OutgoingTest(EngineTestCase):
    def check(self, text):
        """`pickline check` of text: (Result, path)."""
        return self.check_pipeline(text, name="p.yml")

    def test_check_refuses_injection_and_bad_addresses(self):
        base = ("queues:\n  a:\n  b:\nstages:\n  - name: p\n    kind: http_poll\n"
                "    output: b\n")
        cases = [
            # (extra lines, the line named, words of the message)
            ('    url: "http://127.0.0.1:8080/x\\r\\nX-Injected: 1"\n', 8, "url: has a line break"),
            ("    url: http://127.0.0.1:8080/x\n    headers:\n"
             '      Authorization: "Bearer t\\r\\nX-Injected: 1"\n', 10,
             "headers: Authorization: has a line break"),
            ("    url: http://999.1.1.1:8080/x\n", 8, "host '999.1.1.1' is not a valid IPv4"),
            ("    url: http://127.0.0.1:07380/x\n", 8, "port '07380' is not valid"),
            ("    url: http://127.0.0.1:99999/x\n", 8, "port '99999' is not valid"),
        ]
        for extra, line, words in cases:
            p, path = self.check(base + extra)
            self.assertEqual(p.code, 1, "accepted:\n%s\n%s" % (extra, p.out))
            self.assertTrue(p.err.startswith("%s:%d: " % (path, line)), p.err)
            self.assertIn(words, p.err)
            self.assertEqual(p.err.count("\n"), 1, "one line: %r" % p.err)
        p, _ = self.check(base + "    url: http://127.0.0.1:8080/x\n")
        self.assertEqual(p.code, 0, p.err)

    def test_job_fields_cannot_move_the_request(self):
        api = self.fx.add(PathRecorder())
        api.records["dots-q"] = ".."
        api.records["dot-q"] = "."
        api.records["slash-q"] = "a/../b?c#d"
        eng = self.engine(pipeline("outgoing"), api=api.url).start()
        bad = ["..", ".", "", "../admin", "a/../..", "..\\..", "x/./..", "nul\u0000x"]
        good = ["ok1", "a.b", "...", "..x", "a/b", "x?y#z@h", "a\\b", "line\r\nX-Injected: 1",
                "dots-q", "dot-q", "slash-q", ".hidden"]
        for i, rid in enumerate(bad + good):
            r = eng.put("retrieve", {"id": rid}, key="k%d" % i)
            self.assertEqual(r.status // 100, 2, r)
        total = len(bad) + len(good)

        def settled():
            fin = eng.peek("final")
            bur = eng.peek("retrieve", "buried") + eng.peek("staged", "buried")
            return (fin, bur) if len(fin) + len(bur) == total else None
        final, buried = wait_for(settled, 20, what="every job in final or buried")
        self.assertEqual(sorted(j["body"]["key"] for j in final), sorted(good))
        reasons = {j["body"].get("id", j["body"].get("key")): j["error"] for j in buried}
        self.assertEqual(set(reasons), set(bad), reasons)
        for rid, why in reasons.items():
            self.assertIn("url template field 'id'", why, why)
            self.assertIn("path", why, why)
        # Every request went to one record or to the lookup, never elsewhere.
        targets = api.seen()
        for t in targets:
            u = urllib.parse.urlsplit(t)
            segs = u.path.split("/")
            if u.path == "/api/v1/lookup":
                continue
            self.assertEqual(segs[:4], ["", "api", "v1", "records"], t)
            self.assertEqual(len(segs), 5, t)
            self.assertNotIn(urllib.parse.unquote(segs[4]), ("", ".", ".."), t)
            self.assertFalse(set(u.path) & set("\r\n\\ "), t)
        got = sorted(urllib.parse.unquote(urllib.parse.urlsplit(t).path.split("/")[4])
                     for t in targets if t.startswith("/api/v1/records/"))
        self.assertEqual(got, sorted(good))
        # "." and ".." are percent-encoded wherever they go (here: the query).
        lookups = [t for t in targets if t.startswith("/api/v1/lookup?")]
        self.assertIn("/api/v1/lookup?q=%2E%2E&id=dots-q", lookups)
        self.assertIn("/api/v1/lookup?q=%2E&id=dot-q", lookups)
        self.assertIn("/api/v1/lookup?q=a%2F..%2Fb%3Fc%23d&id=slash-q", lookups)
        # Only whole "." and ".." are dot segments: "..." and "..x" go as they are.
        self.assertIn("/api/v1/records/...", targets)
        self.assertIn("/api/v1/records/..x", targets)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())


if __name__ == "__main__":
    unittest.main()
