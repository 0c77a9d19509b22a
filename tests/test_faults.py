"""Faults the engine must survive without breaking a promise (issue 9): a
hand-off whose commit fails, a client that retries after the ack, a full disk,
a damaged data directory. Real binaries, real files, real SIGKILLs.

Set PICKLINE_KEEP_TEST_DIRS=1 to keep the temp dirs for a look afterwards."""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import (SLOW, Fixtures, binary, make_workdir, qctl, qctl_peek, remove_workdir,
                             wait_for)


class FaultTest(unittest.TestCase):
    maxDiff = 4000

    def setUp(self):
        self.dir = make_workdir()
        self.fx = Fixtures()
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        self.fx.close()
        remove_workdir(self.dir)

    def engine(self, pipeline, **subst):
        e = self.fx.engine(self.dir, pipeline, subst=subst)
        e.check()
        return e

    def qctl_ok(self, *args, data=None):
        p = qctl(data or os.path.join(self.dir, "data"), *args)
        self.assertEqual(p.returncode, 0, "qctl %s: %s%s" % (" ".join(map(str, args)), p.stdout, p.stderr))
        return p.stdout


class HandOffTest(FaultTest):
    """Issue 9.1: a failed hand-off never stops the engine."""

    PIPE = """
listen:
  address: 127.0.0.1
  port: ${port}
drain: 2
queues:
  notices: {ttr: 10, max_attempts: 3, backoff: 0.1}
  final: {max_body: 20}
stages:
  - name: pass
    kind: noop
    input: notices
    output: final
"""

    def test_output_too_big_for_next_queue_is_buried_and_engine_runs_on(self):
        e = self.engine(self.PIPE).start()
        r = e.put("notices", json.dumps({"id": 1, "name": "far more than twenty bytes"}))
        self.assertIn(r.status, (200, 202), r)
        jid = r.json()["id"]
        peek = {}

        def buried():
            if not e.running():
                raise AssertionError("pickline died on a failed hand-off\n" + e.stderr_tail())
            peek["j"] = qctl_peek(e.data, "notices", "buried")
            return len(peek["j"]) == 1
        wait_for(buried, 15 * SLOW, 0.1, "the job to be buried")
        j = peek["j"][0]
        self.assertEqual(j["id"], jid)
        self.assertIn("final", j["error"])
        self.assertIn("max_body", j["error"])
        # the engine is still up and answers
        self.assertEqual(e.request("GET", "/health").status, 200)
        # qctl show says why
        show = self.qctl_ok("show", jid)
        self.assertIn("max_body", show)
        # a job that fits still flows
        r = e.put("notices", json.dumps({"id": 2}))
        self.assertIn(r.status, (200, 202), r)
        wait_for(lambda: len(qctl_peek(e.data, "final", "ready")) == 1, 15 * SLOW, 0.1, "the small job")
        # the buried job kicked: buried again, the engine still runs (no crash loop)
        self.qctl_ok("kick", "notices")
        wait_for(lambda: len(qctl_peek(e.data, "notices", "buried")) == 1 and e.running(),
                 15 * SLOW, 0.1, "the kicked job to be buried again")
        rc, _ = e.terminate()
        self.assertEqual(rc, 0, e.stderr_tail())
        e.start()
        time.sleep(0.5)
        self.assertTrue(e.running(), e.stderr_tail())
        rc, _ = e.terminate()
        self.assertEqual(rc, 0, e.stderr_tail())


if __name__ == "__main__":
    unittest.main()
