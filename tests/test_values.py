"""Values are never coerced (issue 13, item 6): what the warehouse would
round, move or collapse is refused with the reason, and what is taken lands
exactly. The real `pickline run` (listener, validate, batch), `qload` into a
real PostgreSQL, read back with psql in UTC.

- a datetime with more than 6 fractional digits (PostgreSQL keeps
  microseconds and rounds the rest: ...59.9999999Z would land on the next
  day) is refused unless the extra digits are zeros;
- a datetime whose UTC instant falls outside the years 1 to 9999
  (0001-01-01T00:00:00+05:00 is 1 BC in UTC) is refused;
- a body with a lone UTF-16 surrogate escape ("\\ud800") gets 400 at the
  listener, like other invalid JSON (and qctl put refuses it);
- a json value with a key twice in one object is refused (jsonb would keep
  the last value alone)."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgfix  # noqa: E402
from engine_fixtures import EngineTestCase, qctl  # noqa: E402
from plhelp import binary, pipeline, run  # noqa: E402


class ValuesTest(pgfix.ClusterTest, EngineTestCase):
    def through(self, good, bad):
        """Starts the engine, posts the rows of good {id: (row JSON text,
        ...)} and bad {id: (row JSON text, reason)}, waits until the good are
        sealed and the bad are rejects whose errors hold their reason, loads
        with qload --create-tables; returns the engine."""
        eng = self.engine(pipeline("values"))
        eng.start()
        for rid, (text, *_rest) in list(good.items()) + list(bad.items()):
            r = eng.put("rows", '{"model":"stamps","row":%s}' % text)
            self.assertEqual(r.status, 202, (rid, r))
        self.wait_empty(eng, ["rows", "valid"])
        self.wait(lambda: sum(b["rows"] for b in self.batches(eng) if b["state"] == "sealed")
                  == len(good), 20, "the good rows sealed", eng)
        rejects = {int(r["key"]): r for r in self.rejects(eng)}
        self.assertEqual(sorted(rejects), sorted(bad))
        for rid, (_, why) in bad.items():
            self.assertIn(why, json.dumps(rejects[rid]["errors"]), rid)
        r = run([binary("qload"), "--data", eng.data, "--target", self.dsn, "--create-tables",
                 "--json"], timeout=120)
        self.assertEqual(r.code, 0, r)
        return eng

    def stop(self, eng):
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_datetimes_land_exactly_or_are_refused(self):
        good = {
            1: ('{"id":1,"at":"2024-12-31T23:59:59.999999Z"}', "2024-12-31 23:59:59.999999+00"),
            2: ('{"id":2,"at":"2024-12-31T23:59:59.9999990000Z"}', "2024-12-31 23:59:59.999999+00"),
            3: ('{"id":3,"at":"0001-01-01T05:00:00+05:00"}', "0001-01-01 00:00:00+00"),
            4: ('{"id":4,"at":"9999-12-31T23:59:59.999999Z"}', "9999-12-31 23:59:59.999999+00"),
            5: ('{"id":5,"at":"2020-02-29T12:00:00.5+14:00"}', "2020-02-28 22:00:00.5+00"),
            6: ('{"id":6,"at":"9999-12-31T18:59:59-05:00"}', "9999-12-31 23:59:59+00"),
            7: ('{"id":7,"at":"0001-01-01T00:00:00"}', "0001-01-01 00:00:00+00"),
        }
        bad = {
            20: ('{"id":20,"at":"2024-12-31T23:59:59.9999999Z"}', "more than 6 fractional digits"),
            21: ('{"id":21,"at":"2024-06-01T12:00:00.1234561Z"}', "more than 6 fractional digits"),
            22: ('{"id":22,"at":"0001-01-01T00:00:00+05:00"}', "outside the years 1 to 9999 in UTC"),
            23: ('{"id":23,"at":"9999-12-31T23:00:00-05:00"}', "outside the years 1 to 9999 in UTC"),
        }
        eng = self.through(good, bad)
        got = dict(self.pg.psql("SELECT id, at::text FROM stamps ORDER BY id", dsn=self.dsn))
        self.assertEqual(got, {str(rid): at for rid, (_, at) in good.items()})
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM stamps WHERE at < '0001-01-01 "
                                        "00:00:00+00' OR at >= '10000-01-01 00:00:00+00'",
                                        dsn=self.dsn), "0")
        self.stop(eng)

    def test_json_with_a_key_twice_is_refused(self):
        good = {
            1: ('{"id":1,"doc":{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}}',
                '{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}'),
            2: ('{"id":2,"doc":{"s":"\\ud83d\\ude00","":0}}', '{"": 0, "s": "\U0001F600"}'),
        }
        bad = {
            20: ('{"id":20,"doc":{"a":1,"a":2}}', 'holds an object with the key \\"a\\" twice'),
            21: ('{"id":21,"doc":[{"k":{"x":1,"y":2,"x":1}}]}', 'the key \\"x\\" twice'),
        }
        eng = self.through(good, bad)
        got = dict(self.pg.psql("SELECT id, doc::text FROM stamps ORDER BY id", dsn=self.dsn))
        self.assertEqual(got, {str(rid): doc for rid, (_, doc) in good.items()})
        self.stop(eng)

    def test_a_lone_surrogate_escape_is_refused_at_the_door(self):
        eng = self.engine(pipeline("values"))
        eng.start()
        for text in ('{"id":30,"note":"\\ud800"}', '{"id":31,"note":"x\\udc00"}',
                     '{"id":32,"doc":{"\\ud83d\\u0041":1}}'):
            r = eng.put("rows", '{"model":"stamps","row":%s}' % text)
            self.assertEqual(r.status, 400, (text, r))
            self.assertIn("lone UTF-16 surrogate escape", r.json()["error"])
        p = qctl(eng.data, "put", "rows", '{"model":"stamps","row":{"id":33,"note":"\\ud800"}}')
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("lone UTF-16 surrogate escape", p.stderr)
        # A pair is a character: taken, and it lands as that character.
        r = eng.put("rows", '{"model":"stamps","row":{"id":34,"note":"\\ud83d\\ude00"}}')
        self.assertEqual(r.status, 202, r)
        self.wait_empty(eng, ["rows", "valid"])
        self.wait(lambda: any(b["state"] == "sealed" for b in self.batches(eng)), 20,
                  "a sealed batch", eng)
        self.assertEqual(self.rejects(eng), [])
        r = run([binary("qload"), "--data", eng.data, "--target", self.dsn, "--create-tables",
                 "--json"], timeout=120)
        self.assertEqual(r.code, 0, r)
        self.assertEqual(self.pg.psql("SELECT id, note FROM stamps", dsn=self.dsn),
                         [["34", "\U0001F600"]])
        self.stop(eng)


if __name__ == "__main__":
    unittest.main()
