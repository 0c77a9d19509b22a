"""test_edgecopy: examples/edge-copy/run.py end to end with a small table:
two real PostgreSQL clusters, `pickline run` with pg_notify + pg_extract and
`qload --follow --mode merge`. run.py compares the two tables (md5 of every
row in key order) after each step and exits 1 on any difference (hard
deletes included: by their notices while the engine runs, by the
reconciliation for those made while it was stopped); this test checks that
it says so for every step, and that the second run staged only what changed
and the deletes."""
import os
import re
import subprocess
import sys
import unittest

import plhelp

RUN = os.path.join(plhelp.ROOT, "examples", "edge-copy", "run.py")


class EdgeCopyTest(unittest.TestCase):
    def test_edge_copy_example(self):
        rows = 3000 if plhelp.SLOW == 1.0 else 1500
        env = dict(os.environ, PICKLINE_BUILD=plhelp.BUILD)
        p = subprocess.run([sys.executable, RUN, "--rows", str(rows), "--timeout", str(60 * plhelp.SLOW)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=env, timeout=300 * plhelp.SLOW)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("edge-copy: ok", out)
        self.assertRegex(out, r"first copy: the edge equals the warehouse after [0-9.]+ s: %d rows" % rows)
        self.assertRegex(out, r"live changes: the edge equals the warehouse")
        m = re.search(r"warehouse \(engine stopped\): (\d+) rows changed or inserted, (\d+) deleted",
                      out)
        self.assertIsNotNone(m, out)
        changed, gone = int(m.group(1)), int(m.group(2))
        self.assertGreater(gone, 0, out)
        m2 = re.search(r"the second run staged (\d+) rows", out)
        self.assertIsNotNone(m2, out)
        self.assertEqual(int(m2.group(1)), changed + gone, out)


if __name__ == "__main__":
    unittest.main()
