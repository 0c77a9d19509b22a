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


if __name__ == "__main__":
    unittest.main()
