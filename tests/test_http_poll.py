"""Polite polling (issue 13, item 5): `http_poll` honours a feed's
Retry-After (delay-seconds and HTTP-date) as the other HTTP kinds do, and
backs off on 5xx, doubling with each failure in a row, until a good answer.

The real `pickline run` polls a loopback feed that follows a script of
answers and notes when each request came. Only lower bounds on the gaps are
asserted (the engine must not ask again before it was told it may): a slow
machine can only make the gaps longer."""
import email.utils
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase
from plhelp import Fixture

PIPE = """\
listen:
  address: 127.0.0.1
  port: ${port}
drain: 2
queues:
  changes: {ttr: 60}
stages:
  - name: poll
    kind: http_poll
    output: changes
    url: ${feed}/changes
    interval: 0.5
    cursor_param: since
    cursor_field: cursor
    items_field: changes
    key_field: id
    priority_field: seq
"""

SLACK = 0.05  # timer and clock granularity


class ScriptedFeed(Fixture):
    """GET /changes: answers from .script in order (each a (status, headers,
    change ids) triple; headers may be a function of nothing, called when
    the answer goes out), then 200 with no change. .times holds when each
    request came (time.monotonic()), .answers what it got."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        self.times = []
        self.answers = []
        self.seq = 0
        self.done = threading.Event()

    def handle(self, req):
        with self.lock:
            self.times.append(time.monotonic())
            if self.script:
                status, headers, ids = self.script.pop(0)
            else:
                status, headers, ids = 200, {}, []
                self.done.set()
            if callable(headers):
                headers = headers()
            self.answers.append(status)
            if status != 200:
                return req.reply(status, {"error": "busy"}, headers=headers)
            changes = []
            for i in ids:
                self.seq += 1
                changes.append({"id": i, "seq": self.seq})
            req.reply(200, {"changes": changes, "cursor": str(self.seq)}, headers=headers)


class HttpPollTest(EngineTestCase):
    def test_retry_after_and_backoff_on_5xx(self):
        def date_in(seconds):
            return lambda: {"Retry-After": email.utils.formatdate(time.time() + seconds, usegmt=True)}

        feed = self.fx.add(ScriptedFeed([
            (200, {}, ["a"]),
            (503, {}, []),                       # 1st failure: 2 x interval, at least 1 s
            (503, {}, []),                       # 2nd in a row: twice that
            (200, {}, ["b"]),                    # a good answer ends the backoff
            (429, {"Retry-After": "2"}, []),     # 2 s, more than the backoff (1 s)
            (200, {}, ["c"]),
            (503, date_in(4), []),               # an HTTP-date 4 s ahead (1 s resolution)
            (200, {}, ["d"]),
        ]))
        eng = self.engine(PIPE, feed=feed.url)
        eng.start()
        self.wait(feed.done.is_set, 60, "the feed's script to be played", eng)
        self.wait_depth(eng, "changes", 4)
        t = feed.times
        gap = lambda i: t[i + 1] - t[i]
        self.assertEqual(feed.answers[:8], [200, 503, 503, 200, 429, 200, 503, 200])
        waits = {"after the 1st 503": (gap(1), 1.0), "after the 2nd 503": (gap(2), 2.0),
                 "after a 429 with Retry-After: 2": (gap(4), 2.0),
                 "after a 503 with Retry-After: an HTTP-date 4 s ahead": (gap(6), 3.0)}
        early = {what: "%.2f s, not %.1f" % (g, want) for what, (g, want) in waits.items()
                 if g < want - SLACK}
        self.assertEqual(early, {}, "polled again too soon: %s\n%s" % (early, eng.stderr_tail()))
        # Nothing lost or doubled on the way; each change at the priority
        # its record says (priority_field: seq).
        jobs = eng.peek("changes")
        self.assertEqual(sorted(j["body"]["id"] for j in jobs), ["a", "b", "c", "d"])
        self.assertEqual({j["body"]["id"]: j["priority"] for j in jobs},
                         {j["body"]["id"]: j["body"]["seq"] for j in jobs})
        log = eng.stderr()
        self.assertIn("HTTP 429", log)
        self.assertIn("(its Retry-After)", log)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())


NEXT_PIPE = """\
listen:
  address: 127.0.0.1
  port: ${port}
drain: 2
queues:
  changes: {ttr: 60}
stages:
  - name: poll
    kind: http_poll
    output: changes
    url: ${feed}/changes
    interval: 0.3
    items_field: changes
    next_field: next
    key_field: id
    headers:
      Authorization: "Bearer feed-secret-0123456789"
"""


class PagedFeed(Fixture):
    """GET /changes (the first page) and /changes?page=N: .pages maps a page
    number to (change ids, next link or None); the first page is 1. Notes
    every request's path, query and Authorization header."""

    def __init__(self, pages):
        super().__init__()
        self.pages = pages
        self.seen = []

    def handle(self, req):
        with self.lock:
            self.seen.append((req.url_path, dict(req.query), req.headers.get("Authorization")))
        page = int(req.query.get("page", "1"))
        ids, nxt = self.pages.get(page, ([], None))
        body = {"changes": [{"id": i} for i in ids]}
        if nxt:
            body["next"] = nxt(self) if callable(nxt) else nxt
        req.reply(200, body)


class Elsewhere(Fixture):
    """Another origin: it must never be asked (it would get the feed's token)."""

    def handle(self, req):
        with self.lock:
            self.seen = getattr(self, "seen", []) + [(req.url_path, req.headers.get("Authorization"))]
        req.reply(200, {"changes": [{"id": "stolen"}]})


class NextPageTest(EngineTestCase):
    """The next page's link comes from the feed's answer: a relative one
    (/changes?page=2) is read against url:'s origin, and one on another
    origin is refused, because the stage's headers (its token) go with every
    request it sends: the page is not taken, and the error says why."""

    def test_relative_next_page_is_followed(self):
        feed = self.fx.add(PagedFeed({1: (["a", "b"], "/changes?page=2"),
                                      2: (["c"], lambda f: f.url + "/changes?page=3"),
                                      3: (["d"], None)}))
        eng = self.engine(NEXT_PIPE, feed=feed.url)
        eng.start()
        self.wait_depth(eng, "changes", 4)
        self.assertEqual(sorted(j["body"]["id"] for j in eng.peek("changes")), ["a", "b", "c", "d"])
        pages = [q.get("page") for path, q, auth in feed.seen[:3]]
        self.assertEqual(pages, [None, "2", "3"], feed.seen)
        self.assertTrue(all(auth == "Bearer feed-secret-0123456789" for _, _, auth in feed.seen))
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_next_page_on_another_origin_is_refused(self):
        other = self.fx.add(Elsewhere())
        evil = [other.url + "/steal", other.url.replace("127.0.0.1", "localhost") + "/steal",
                "//127.0.0.1:%d/steal" % other.port]
        for i, link in enumerate(evil):
            with self.subTest(link=link):
                feed = self.fx.add(PagedFeed({1: (["a"], link)}))
                work = os.path.join(self.dir, "run%d" % i)
                os.makedirs(work)
                eng = self.engine(NEXT_PIPE, workdir=work, feed=feed.url)
                eng.start()
                self.wait(lambda: "not on url:'s origin" in eng.stderr() and len(feed.seen) >= 2,
                          30, "the refusal logged twice", eng)
                self.assertFalse(getattr(other, "seen", []),
                                 "another origin was asked (with the feed's token)")
                # The page is not taken: nothing of it is put, the feed is asked again.
                self.assertEqual(eng.peek("changes"), [])
                self.assertTrue(all(path == "/changes" and not q for path, q, _ in feed.seen),
                                feed.seen)
                self.assertIn("next_field 'next'", eng.stderr())
                self.assertNotIn("feed-secret", eng.stderr())
                rc, _ = eng.terminate()
                self.assertEqual(rc, 0, eng.stderr_tail())


if __name__ == "__main__":
    unittest.main()
