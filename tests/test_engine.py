"""End-to-end tests of `pickline run`: the real binary against fixture
services (tests/engine_fixtures.py), checked through its HTTP listener, the
fixtures' counters and `qctl`.

Each test has a fresh temp dir (data directory, pipeline file, stderr logs)
and fresh fixtures. Waits are bounded polls (scaled for sanitizer builds).
Set PICKLINE_KEEP_TEST_DIRS=1 to keep the temp dirs for a look afterwards."""
import collections
import json
import os
import random
import re
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import (ChangesFeed, EngineTestCase, Flaky, Geocoder, Identity, RecordAPI, Sink,
                             depth, exact, hostile_record, qctl)
from plhelp import (SLOW, Fixture, free_port, http_request, listen_block, pipeline, self_signed_cert,
                    wait_for)

# The fields of a users record the inspect stage sends back (the staged row).
ROW_FIELDS = ["id", "tenant", "first_name", "last_name", "title", "middle_name", "email", "note", "big",
              "u64", "neg", "price", "exp", "active", "created_at", "address", "lat", "lon"]


def ids(prefix, a, b):
    return ["%s%04d" % (prefix, i) for i in range(a, b)]


class EngineTest(EngineTestCase):
    def keys_of(self, jobs):
        return collections.Counter(j["body"]["key"] for j in jobs)

    def assert_no_reserved(self, stats):
        held = {q: s["reserved"] for q, s in stats.items() if s["reserved"]}
        self.assertEqual(held, {}, "jobs left reserved: %s" % held)

    # ------------------------------------------------------------ 1. stage kinds

    PIPE_FLOW = pipeline("flow", send=", ".join(ROW_FIELDS))

    def test_1_every_stage_kind_end_to_end(self):
        feed = self.fx.add(ChangesFeed(page_size=7))
        api = self.fx.add(RecordAPI())
        geo = self.fx.add(Geocoder())
        sink = self.fx.add(Sink())
        first = ids("u", 1, 41)
        later = ids("u", 41, 51)
        for n, rid in enumerate(first + later):
            api.add(rid, hostile_record(rid, n, with_address=(n % 3 != 0)))
        feed.append(first)
        eng = self.engine(self.PIPE_FLOW, feed=feed.url, records=api.url, geo=geo.url, sink=sink.url)
        eng.start()

        self.wait_depth(eng, "final", len(first), timeout=30)
        # Drained: the feed answers 304 to the stored ETag.
        self.wait(lambda: feed.not_modified >= 1, 10, "a 304 from the feed (If-None-Match sent)", eng)
        polls_before = len(feed.log)
        feed.append(later)
        stats = self.wait_depth(eng, "final", len(first) + len(later), timeout=30)

        # Every change exactly once in the final queue, nothing anywhere else.
        jobs = eng.peek("final")
        keys = self.keys_of(jobs)
        self.assertEqual(dict(keys), {k: 1 for k in first + later})
        for j in jobs:
            # A reference to the job's own staged row instance.
            self.assertEqual(j["body"], {"model": "users", "key": j["body"]["key"],
                                         "row_id": j["body"].get("row_id")})
            self.assertIsInstance(j["body"]["row_id"], int)
        self.assertEqual(len({j["body"]["row_id"] for j in jobs}), len(jobs))
        for q in ("retrieve", "staged", "to_geocode", "checked", "inspected"):
            self.assertEqual(depth(stats, q), 0, "queue %s not empty: %s" % (q, stats[q]))

        # The cursor moved: each change served once; after the append the
        # feed was asked from the cursor of the first round.
        self.assertEqual(dict(feed.served), {k: 1 for k in first + later})
        after = feed.log[polls_before:]
        self.assertIn("40", [e["since"] for e in after if e.get("status") == 200],
                      "no poll from cursor 40 after the append: %s" % after[:10])
        self.assertTrue(any(e.get("inm") for e in feed.log), "If-None-Match never sent")

        # Each record fetched once, each address geocoded once.
        self.assertEqual(dict(api.hits), {k: 1 for k in first + later})
        addrs = {api.records[k]["address"] for k in first + later if "address" in api.records[k]}
        self.assertEqual(dict(geo.addresses), {a: 1 for a in addrs})

        # The staged rows as the engine holds them (sent by the inspect
        # stage): every value exact, lat/lon merged where there is an address.
        self.assertEqual(set(sink.bodies), set(first + later))
        for rid in first + later:
            self.assertEqual(len(sink.bodies[rid]), 1, rid)
            got = exact(sink.bodies[rid][0])
            rec = exact(api.text_of(rid))
            want = {f: rec.get(f) for f in ROW_FIELDS}
            if "address" in rec:
                loc = exact(json.dumps(Geocoder.locate(api.records[rid]["address"])))
                want["lat"], want["lon"] = loc["lat"], loc["lon"]
            self.assertEqual(got, want, "staged row of %s" % rid)

        # GET /queues agrees with qctl.
        q = eng.request("GET", "/queues").json()
        self.assertEqual(q["final"]["ready"], len(first) + len(later))
        self.assertEqual(q["retrieve"]["ready"] + q["retrieve"]["reserved"], 0)

        rc, secs = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())

    # ------------------------------------------------------------ 2. listener

    PIPE_LISTEN = pipeline("hop", listen=listen_block(address="127.0.0.1", port="${port}",
                                                  token="${token}", max_body=4096))

    def test_2_listener(self):
        eng = self.engine(self.PIPE_LISTEN, token="s3cret-token-0123456789")
        eng.start()
        # Hold the input queue so that the jobs put stay visible.
        p = qctl(eng.data, "pause", "retrieve")
        self.assertEqual(p.returncode, 0, p.stderr)

        # /health is public.
        r = eng.request("GET", "/health", auth=False)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "ok")

        # The bearer token: missing or wrong -> 401 with a JSON error, nothing put.
        body = {"id": "u1", "note": "quote \" comma , newline \n backslash \\ unicode \u00e9\u2603"}
        for h in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token-0123456789"}):
            r = eng.request("POST", "/queues/retrieve/jobs", body, headers=h, auth=False)
            self.assertEqual(r.status, 401, "%s with %s" % (r, h))
            self.assertIn("error", r.json())
        r = eng.request("GET", "/queues", auth=False)
        self.assertEqual(r.status, 401, r)
        r = eng.request("GET", "/metrics", headers={"Authorization": "Bearer nope"}, auth=False)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(eng.stats()["retrieve"]["puts"], 0)

        # A put: 202 {"id":N,"existed":false}, visible in qctl with its body.
        r = eng.put("retrieve", body)
        self.assertEqual(r.status, 202, r)
        a = r.json()
        self.assertEqual(a["existed"], False)
        jobs = {j["id"]: j for j in eng.peek("retrieve")}
        self.assertIn(a["id"], jobs)
        self.assertEqual(jobs[a["id"]]["body"], body)

        # Idempotency-Key: the second put returns the first job (200: nothing added).
        r1 = eng.put("retrieve", {"id": "u2"}, key="change-42")
        r2 = eng.put("retrieve", {"id": "u2", "again": True}, key="change-42")
        self.assertEqual((r1.status, r2.status), (202, 200), (r1, r2))
        self.assertEqual(r1.json()["existed"], False)
        self.assertEqual(r2.json(), {"id": r1.json()["id"], "existed": True, "done": False})
        jobs = {j["id"]: j for j in eng.peek("retrieve")}
        self.assertEqual(len(jobs), 2)
        self.assertEqual(jobs[r1.json()["id"]]["body"], {"id": "u2"})
        self.assertEqual(jobs[r1.json()["id"]]["key"], "change-42")

        # ?pri=&delay=
        r = eng.put("retrieve", {"id": "u3"}, query="?pri=5&delay=60")
        self.assertEqual(r.status, 202, r)
        j = [x for x in eng.peek("retrieve") if x["id"] == r.json()["id"]][0]
        self.assertEqual((j["state"], j["priority"]), ("delayed", 5))
        for bad in ("?pri=-1", "?pri=x", "?delay=1.5", "?pri=99999999999"):
            r = eng.put("retrieve", {"id": "u4"}, query=bad)
            self.assertEqual(r.status, 400, "%s: %s" % (bad, r))

        # Malformed JSON, unknown queue, body over the limit: errors, nothing added.
        before = eng.stats()["retrieve"]["puts"]
        for raw in (b'{"id": 1,', b"", b"not json", b'{"a":"\xff"}', b'{"a":1} {"b":2}'):
            r = eng.put("retrieve", raw)
            self.assertEqual(r.status, 400, "%r: %s" % (raw, r))
            self.assertIn("JSON", r.json()["error"])
        r = eng.put("nosuchqueue", {"id": "u5"})
        self.assertEqual(r.status, 404, r)
        self.assertIn("nosuchqueue", r.json()["error"])
        r = eng.request("POST", "/queues/retrieve/nothing", {"id": "u5"})
        self.assertEqual(r.status, 404, r)
        r = eng.put("retrieve", {"id": "u6", "pad": "x" * 8000})
        self.assertEqual(r.status, 413, r)
        stats = eng.stats()
        self.assertEqual(stats["retrieve"]["puts"], before)
        self.assertNotIn("nosuchqueue", stats)
        self.assertEqual(depth(stats, "retrieve"), 3)

        # GET /queues and /metrics.
        q = eng.request("GET", "/queues").json()
        self.assertEqual((q["retrieve"]["ready"], q["retrieve"]["delayed"]), (2, 1))
        self.assertEqual(q["retrieve"]["paused"], True)
        m = eng.request("GET", "/metrics")
        self.assertEqual(m.status, 200, m)
        self.assertIn('pickline_queue_jobs{queue="retrieve",state="ready"} 2', m.text)
        self.assertIn('pickline_queue_jobs{queue="retrieve",state="delayed"} 1', m.text)
        self.assertIn('pickline_stage_jobs_total{stage="hop",outcome="done"} 0', m.text)

        # Resumed: the ready jobs flow on; the metrics count them.
        p = qctl(eng.data, "resume", "retrieve")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.wait_depth(eng, "final", 2, timeout=10)
        self.assertEqual(sorted(j["body"]["id"] for j in eng.peek("final")), ["u1", "u2"])
        m = eng.request("GET", "/metrics")
        self.assertIn('pickline_stage_jobs_total{stage="hop",outcome="done"} 2', m.text)
        # The latency histogram: cumulative buckets, the bounds in order, +Inf all of them.
        les = re.findall(r'pickline_stage_latency_seconds_bucket\{stage="hop",le="([^"]+)"\} (\d+)',
                         m.text)
        self.assertEqual([le for le, _ in les], ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                                 "0.1", "0.25", "0.5", "1", "2.5", "+Inf"])
        self.assertEqual([int(n) for _, n in les], sorted(int(n) for _, n in les))
        self.assertEqual(les[-1][1], "2")
        self.assertIn('pickline_stage_latency_seconds_count{stage="hop"} 2', m.text)

        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())

    # ------------------------------------------------------------ 3. isolation

    PIPE_BRANCHES = pipeline("branches")

    def test_3_flaky_and_dead_dependencies_only_grow_their_own_queue(self):
        api = self.fx.add(RecordAPI())
        flaky = self.fx.add(Flaky(default="500"))
        flaky.hang = 4.0
        for rid in ("f1", "f2"):
            api.add(rid, hostile_record(rid, 1))
        flaky.set_plan("f2", ["badjson"])
        eng = self.engine(self.PIPE_BRANCHES, records=api.url, flaky=flaky.url, deadport=free_port())
        eng.start()
        for rid in ("f1", "f2", "nope"):
            self.assertEqual(eng.put("b_in", {"id": rid}).status, 202)
        for rid in ids("d", 0, 5):
            self.assertEqual(eng.put("d_in", {"id": rid}).status, 202)
        for i in range(60):
            self.assertEqual(eng.put("a_in", {"n": i}).status, 202)

        # The healthy branch flows while the others fail.
        self.wait_depth(eng, "a_out", 60, timeout=15)
        self.assertEqual(depth(eng.stats(), "b_out"), 0)

        # A 404 of the record API buries the job with the reason.
        def buried(queue, n):
            return lambda: (lambda b: b if len(b) >= n else None)(eng.peek(queue, "buried"))
        b = self.wait(buried("b_in", 1), 10, "the 404 job buried in b_in", eng)
        self.assertEqual(len(b), 1, b)
        self.assertEqual(b[0]["body"], {"id": "nope"})
        self.assertIn("HTTP 404", b[0]["error"])
        self.assertEqual(api.hits["nope"], 1, "a permanent 404 must not be retried")

        # Malformed JSON from the service buries with a reason naming JSON.
        b = self.wait(buried("b_rows", 1), 10, "the malformed-JSON job buried in b_rows", eng)
        self.assertEqual(len(b), 1, b)
        self.assertEqual({k: v for k, v in b[0]["body"].items() if k != "row_id"},
                         {"model": "users", "key": "f2"})
        self.assertIsInstance(b[0]["body"]["row_id"], int)
        self.assertIn("JSON", b[0]["error"])
        self.assertEqual(flaky.modes_of("f2"), ["badjson"])

        # The failing service: the job is retried, attempts grow, last error kept.
        self.wait(lambda: len(flaky.modes_of("f1")) >= 4, 15, "4 attempts at the flaky service", eng)

        def f1_job():
            js = [j for j in eng.peek("b_rows") if j["body"].get("key") == "f1"]
            return js[0] if js and js[0]["attempts"] >= 3 and js[0]["error"] else None
        j = self.wait(f1_job, 10, "the f1 job with attempts >= 3 and its error", eng)
        self.assertIn(j["state"], ("ready", "delayed", "reserved"))
        self.assertIn("500", j["error"])

        # The dead service: every job still in its queue, retried, none lost or buried.
        def dead_retried():
            js = eng.peek("d_in")
            return js if len(js) == 5 and all(x["attempts"] >= 2 and x["error"] for x in js) else None
        js = self.wait(dead_retried, 20, "the 5 jobs of the dead branch retried", eng)
        self.assertEqual(sorted(x["body"]["id"] for x in js), ids("d", 0, 5))
        self.assertTrue(all(x["state"] != "buried" for x in js), js)
        self.assertEqual(depth(eng.stats(), "d_out"), 0)

        # Now: 429 with Retry-After: 1, a hang past the stage timeout, a
        # reset, and then the answer.
        n0 = len(flaky.modes_of("f1"))
        flaky.set_plan("f1", ["429", "hang", "reset"])
        flaky.default = "ok"
        self.wait_depth(eng, "b_out", 1, timeout=30)
        seq = flaky.by_key["f1"][n0:]
        modes = [m for _, m in seq]
        # (a 500 in flight when the plan changed may come first)
        while modes and modes[0] == "500":
            seq, modes = seq[1:], modes[1:]
        self.assertEqual(modes, ["429", "hang", "reset", "ok"])
        gap_429 = seq[1][0] - seq[0][0]
        self.assertGreaterEqual(gap_429, 0.95, "Retry-After: 1 not honoured (next try %.2fs later)" % gap_429)
        self.assertLess(gap_429, 5 * SLOW, "next try %.2fs after a 429 with Retry-After: 1" % gap_429)
        gap_hang = seq[2][0] - seq[1][0]
        self.assertGreaterEqual(gap_hang, 0.95, "hang: next try %.2fs later (timeout is 1s)" % gap_hang)
        self.assertLess(gap_hang, 3.9, "the hang was waited out (%.2fs) instead of the 1 s timeout" % gap_hang)

        stats = eng.stats()
        self.assertEqual(depth(stats, "b_rows", ("ready", "delayed", "reserved")), 0)
        self.assertEqual(depth(stats, "a_in") + depth(stats, "a_mid"), 0)
        self.assertEqual(depth(stats, "d_in"), 5)
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())

    # ------------------------------------------------------------ 4. async

    PIPE_ASYNC = pipeline("async", address="127.0.0.1")

    def counts(self, eng):
        s = eng.stats()
        return {q: (v["ready"], v["delayed"], v["reserved"], v["buried"], v["puts"], v["acks"])
                for q, v in s.items()}

    def test_4_async_callbacks(self):
        api = self.fx.add(RecordAPI())
        ident = self.fx.add(Identity(delay=0.2, retry=0.25, give_up=60))
        sink = self.fx.add(Sink())
        for n, rid in enumerate(("u1", "u2")):
            api.add(rid, hostile_record(rid, n))
        eng = self.engine(self.PIPE_ASYNC, token="tok-4-0123456789abcdef", records=api.url, identity=ident.url, sink=sink.url)
        eng.start()

        # Submit, callback (public: the service has no token), merge, on.
        self.assertEqual(eng.put("retrieve", {"id": "u1"}).status, 202)
        self.wait_depth(eng, "final", 1, timeout=15)
        self.assertEqual(len(ident.submissions), 1)
        sub = ident.submissions[0]
        self.assertTrue(sub["callback_url"].startswith(eng.base + "/callbacks/verify/"), sub["callback_url"])
        rec = api.records["u1"]
        self.assertEqual((sub["id"], sub["first_name"], sub["note"]), (rec["id"], rec["first_name"], rec["note"]))
        self.assertEqual(len(ident.delivered), 1)
        got = json.loads(sink.bodies["u1"][0])
        self.assertEqual(got["identity_ok"], True)
        self.assertEqual(got["identity_score"], 0.875)
        self.assertEqual(got["identity_ref"], "idv-u1")
        self.assertEqual(got["note"], rec["note"])
        self.assertEqual(depth(eng.stats(), "_w.verify"), 0)

        # A forged token, and a replay of the real callback: 404, nothing changes.
        before = self.counts(eng)
        url, body = ident.delivered[0]
        forged = url[: url.rindex("/") + 1] + "%032x" % random.getrandbits(128)
        for u in (forged, url[: url.rindex("/") + 1] + "short", url + "0", url):
            r = http_request("POST", u, body, {"Content-Type": "application/json"})
            self.assertEqual(r.status, 404, "%s: %s" % (u, r))
        r = http_request("POST", eng.base + "/callbacks/nosuchstage/" + "0" * 32, body)
        self.assertIn(r.status, (401, 404), r)
        self.assertEqual(self.counts(eng), before)
        self.assertEqual(len(sink.bodies["u1"]), 1)

        # A callback sent while the engine is down lands after the restart.
        ident.delay = 1.5
        self.assertEqual(eng.put("retrieve", {"id": "u2"}).status, 202)
        self.wait(lambda: depth(eng.stats(), "_w.verify", ("delayed",)) == 1, 10,
                  "the waiting job of u2 committed", eng)
        eng.kill()
        t_kill = time.monotonic()
        self.assertEqual(len(ident.delivered), 1, "u2's callback came before the kill; raise ident.delay")
        self.wait(lambda: len(ident.failed_attempts()) >= 3, 10, "3 failed callback attempts while down")
        eng.start()
        self.wait_depth(eng, "final", 2, timeout=15)
        self.assertEqual(len(ident.delivered), 2)
        fails = ident.failed_attempts()
        self.assertTrue(all(a["status"] is None and a["t"] > t_kill for a in fails), fails)
        got = json.loads(sink.bodies["u2"][0])
        self.assertEqual((got["identity_ok"], got["identity_ref"]), (True, "idv-u2"))
        self.assertEqual(sorted(j["body"]["key"] for j in eng.peek("final")), ["u1", "u2"])
        self.assertEqual(depth(eng.stats(), "_w.verify"), 0)
        self.assertEqual(len(ident.submissions), 2, "u2 was submitted again")
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())

    # ------------------------------------------------------------ 5. crash

    PIPE_CRASH = pipeline("crash")

    def test_5_sigkill_at_random_moments_loses_and_duplicates_nothing(self):
        seed = int(os.environ.get("PICKLINE_TEST_SEED") or time.time())
        rnd = random.Random(seed)
        feed = self.fx.add(ChangesFeed(page_size=25))
        api = self.fx.add(RecordAPI())
        api.delay = 0.1
        all_ids = ids("c", 0, 300)
        for n, rid in enumerate(all_ids):
            api.add(rid, hostile_record(rid, n))
        # 100 changes at first, 50 more at each restart: every run has work.
        feed.append(all_ids[:100])
        eng = self.engine(self.PIPE_CRASH, feed=feed.url, records=api.url)
        kills = []
        for k in range(4):
            eng.start()
            if k:
                feed.append(all_ids[50 + 50 * k:100 + 50 * k])
            time.sleep(rnd.uniform(0.15, 0.8))  # the fixture's delay paces the run, not the CPU
            eng.kill()
            kills.append(depth(eng.stats(), "final"))
        feed.append(all_ids[250:])
        eng.start()
        msg = "seed %d, final depth at the kills: %s" % (seed, kills)
        # At kill k, 100 + 50k changes were in the feed: most kills hit a busy run.
        mid = sum(1 for k, d in enumerate(kills) if d < 100 + 50 * k)
        self.assertGreaterEqual(mid, 2, "the kills came after the work was done; " + msg)

        # Settled: every change in final or buried, nothing moving upstream.
        def settled():
            st = eng.stats()
            busy = sum(depth(st, q, ("ready", "delayed", "reserved")) for q in ("retrieve", "staged"))
            done = depth(st, "final") + sum(v["buried"] for v in st.values())
            return busy == 0 and done >= len(all_ids) and st
        try:
            wait_for(settled, 60, 0.1, "every change in final (or buried)")
        except AssertionError:
            pass  # the assertions below say what is missing
        time.sleep(0.5)  # a late duplicate would show now
        jobs = eng.peek("final")
        keys = self.keys_of(jobs)
        dups = {k: n for k, n in keys.items() if n > 1}
        missing = sorted(set(all_ids) - set(keys))
        buried = [(q, j["body"], j["error"]) for q in ("retrieve", "staged", "final")
                  for j in eng.peek(q, "buried")]
        self.assertEqual((dups, missing, buried), ({}, [], []), msg)
        self.assertEqual(len(jobs), len(all_ids), msg)
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())
        self.assert_no_reserved(eng.stats())

    # ------------------------------------------------------------ 6. drain

    PIPE_DRAIN = pipeline("drain")

    def _drain_setup(self, drain, delay, n):
        api = self.fx.add(RecordAPI())
        api.delay = delay
        for i, rid in enumerate(ids("s", 0, n)):
            api.add(rid, hostile_record(rid, i))
        eng = self.engine(self.PIPE_DRAIN, records=api.url, drain=drain)
        eng.start()
        for rid in ids("s", 0, n):
            self.assertEqual(eng.put("retrieve", {"id": rid}).status, 202)
        self.wait(lambda: api.in_flight == 4, 10, "4 requests in flight at the slow service", eng)
        return api, eng

    def test_6a_sigterm_finishes_in_flight_jobs(self):
        api, eng = self._drain_setup(drain=5, delay=1.0, n=12)
        rc, secs = eng.terminate(timeout=5 + 4)
        self.assertEqual(rc, 0, eng.stderr_tail())
        stats = eng.stats()
        self.assert_no_reserved(stats)
        answered = sum(api.answered.values())
        self.assertGreaterEqual(answered, 4)
        # Every answered request was committed; the rest wait in the queue.
        self.assertEqual(depth(stats, "final"), answered, eng.stderr_tail())
        self.assertEqual(depth(stats, "retrieve", ("ready", "delayed")), 12 - answered)
        self.assertEqual(depth(stats, "retrieve", ("buried",)), 0)
        self.assertLess(secs, 4.5, "drain took %.1fs though the jobs finished in 1s" % secs)

    def test_6b_sigterm_releases_jobs_past_the_drain_time(self):
        api, eng = self._drain_setup(drain=1, delay=30, n=6)
        rc, secs = eng.terminate(timeout=1 + 4)
        self.assertEqual(rc, 0, eng.stderr_tail())
        self.assertGreaterEqual(secs, 0.9, "exited before the drain time though jobs were in flight")
        stats = eng.stats()
        self.assert_no_reserved(stats)
        self.assertEqual(depth(stats, "final"), 0)
        jobs = eng.peek("retrieve")
        self.assertEqual(sorted(j["body"]["id"] for j in jobs), ids("s", 0, 6))
        self.assertTrue(all(j["state"] in ("ready", "delayed") for j in jobs), jobs)
        self.assertEqual(sum(1 for j in jobs if j["attempts"] >= 1 and j["error"]), 4, jobs)
        # Nothing lost: a restart against a fast service finishes them all.
        api.delay = 0
        eng.start()
        self.wait_depth(eng, "final", 6, timeout=15)
        self.assertEqual(sorted(j["body"]["key"] for j in eng.peek("final")), ids("s", 0, 6))
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())

    # ------------------------------------------------------------ 7. batch reserve

    PIPE_BATCH = pipeline("batch_reserve")

    def test_7_batched_reserve_hands_every_body_over_intact(self):
        # A backlog reserved 8 at a time: each job's body must reach the next
        # queue byte for byte (the noop stage copies the body it was given).
        n = 3000
        bodies = [{"n": i, "pad": "x" * (i * 7 % 90), "note": "q\"c,\n\\ \u00e9"} for i in range(n)]
        eng = self.engine(self.PIPE_BATCH)
        nd = "".join(json.dumps({"body": b}) + "\n" for b in bodies)
        p = qctl(eng.data, "import", "a_in", input=nd)
        self.assertEqual(p.returncode, 0, p.stderr)
        eng.start()
        self.wait_depth(eng, "a_out", n, timeout=30)
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())
        want = collections.Counter(json.dumps(b, sort_keys=True) for b in bodies)
        got = collections.Counter(json.dumps(j["body"], sort_keys=True) for j in eng.peek("a_out"))
        wrong, missing = got - want, want - got
        self.assertEqual((dict(wrong), dict(missing)), ({}, {}),
                         "%d of %d bodies arrived changed (and the originals are gone)"
                         % (sum(wrong.values()), n))


    # ------------------------------------------------------------ 8. TLS

    def test_8_tls_verified_by_default(self):
        # An HTTPS service with a self-signed certificate: with verification
        # on (the default) no record is taken from it and the job keeps the
        # TLS error; `insecure: true` (the operator's explicit choice) takes it.
        class Records(Fixture):
            def handle(self, req):
                req.reply(200, {"id": req.url_path.rsplit("/", 1)[-1], "name": "Zo\u00eb"})

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self_signed_cert(self.dir))
        api = self.fx.add(Records(ssl_context=ctx)).url
        eng = self.engine(pipeline("tls", extra=""), api=api)
        eng.start()
        self.assertEqual(eng.put("retrieve", {"id": "t1"}).status, 202)

        # A certificate the system does not trust is a setting to fix,
        # not a blip: the job is buried with the reason, kept.
        def buried_on_tls():
            jobs = eng.peek("retrieve")
            return jobs and jobs[0]["state"] == "buried" and jobs[0].get("error") and \
                ("SSL" in jobs[0]["error"] or "certificate" in jobs[0]["error"]) and jobs
        jobs = self.wait(buried_on_tls, 20, "the job buried for the self-signed certificate", eng)
        self.assertEqual(depth(eng.stats(), "final"), 0, jobs)
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())

        # The same data directory, verification turned off on purpose
        # and the buried job kicked: it lands, and a new one too.
        eng2 = self.engine(pipeline("tls", extra="    insecure: true"), api=api)
        p = qctl(eng2.data, "kick", "retrieve")
        self.assertEqual(p.returncode, 0, p.stderr)
        eng2.start()
        self.assertEqual(eng2.put("retrieve", {"id": "t2"}).status, 202)
        self.wait_depth(eng2, "final", 2, timeout=20)
        rc, _ = eng2.terminate(timeout=10)
        self.assertEqual(rc, 0, eng2.stderr_tail())
        self.assertEqual(sorted(j["body"]["key"] for j in eng2.peek("final")), ["t1", "t2"])
        self.assertEqual(depth(eng2.stats(), "retrieve"), 0)


if __name__ == "__main__":
    unittest.main()
