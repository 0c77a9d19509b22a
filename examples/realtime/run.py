#!/usr/bin/env python3
"""run.py: the reference pipeline end to end, on one machine, for real.

Starts a throwaway PostgreSQL (the warehouse), the stand-ins of the
third-party services (fixtures.py), `pickline run examples/realtime/pipeline.yml`
and `qload --follow --create-tables --mode merge`; feeds N user records
(--records, default 2000) through the changes feed (A.1) and the internal
database's notices (A.2), a few of them deliberately invalid; waits until
the warehouse holds every valid record and every invalid one is a reject
(`qctl rejects`), checks what landed value by value, prints it, and stops
everything it started. Exit status 0 only when everything matched; 1 when
something did not or the run timed out (--timeout, default 300 s: it names
the queue or batch that is stuck and prints `qctl stats`); 2 for usage.

    python3 examples/realtime/run.py [--records N] [--timeout S] [--keep]

Binaries come from $PICKLINE_BUILD (default build/release). Standard
library only, plus tests/pgfix.py for the throwaway PostgreSQL and tests/plhelp.py
(the test kit: the build, processes and their logs, the services' base).
"""
import argparse
import collections
import csv
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import fixtures  # noqa: E402
import pgfix  # noqa: E402
import plhelp  # noqa: E402
from plhelp import RunError, say, tail  # noqa: E402

# pgfix.query_json reads the whole result as one CSV field: let it be big.
csv.field_size_limit(1 << 30)

# The loopback ports written in pipeline.yml, moved to free ones at run time.
PORTS = {"listen": 7381, "feed": 18081, "records": 18082, "geocoder": 18083, "identity": 18084}


def json_items(text):
    """The objects of a --json answer: a JSON array, an object holding one
    array, or one JSON object per line."""
    text = text.strip()
    if not text:
        return []
    try:
        v = json.loads(text)
    except ValueError:
        return [json.loads(l) for l in text.splitlines() if l.strip()]
    if isinstance(v, list):
        return v
    if isinstance(v, dict):
        for k in ("rejects", "batches", "items"):
            if isinstance(v.get(k), list):
                return v[k]
        return [v]
    return []


class Run(plhelp.RunBase):
    def __init__(self, args):
        super().__init__("pickline-realtime.", "data")
        self.args = args
        self.fx = []
        self.notices = None
        self.pg = None
        self.ok = False

    def stop(self):
        """Stops everything; returns the problems seen on the way (a
        program that did not exit 0 on SIGTERM, or needed a SIGKILL)."""
        problems = []
        # qload first (it may be mid-COPY: SIGTERM lets it finish the batch),
        # then the engine (SIGTERM drains), then the services and PostgreSQL.
        problems += self.procs.stop(("qload", "pickline"))
        if self.notices:
            self.notices.close()
        for f in self.fx:
            try:
                f.close()
            except Exception:
                pass
        if self.pg:
            try:
                self.pg.close()
            except Exception as e:
                problems.append("stopping PostgreSQL: %s" % e)
        return problems

    # ------------------------------------------------------------ warehouse

    def counts(self):
        """{table: rows} in the warehouse; a table qload has not created yet counts 0."""
        out = {}
        for t in ("tenants", "users"):
            try:
                out[t] = int(self.pg.scalar("SELECT count(*) FROM %s" % t, self.dsn))
            except pgfix.PgFixError:
                out[t] = 0
        return out

    def rejects(self):
        return json_items(self.qctl("rejects", "--json", "--limit", "0"))

    def batches(self):
        return json_items(self.qctl("batches", "--json", "--limit", "0"))

    # ------------------------------------------------------------ the run

    def setup(self):
        a = self.args
        say("== pickline: the reference pipeline end to end (examples/realtime)")
        say("work directory %s; binaries from %s" % (self.work, self.build))
        self.pg = pgfix.PgCluster()
        self.dsn = self.pg.create_db("warehouse")
        say("warehouse: a throwaway PostgreSQL in %s" % self.pg.dir)

        self.feed = fixtures.ChangesFeed(page_size=a.page_size)
        self.api = fixtures.RecordAPI()
        self.geo = fixtures.Geocoder()
        self.idn = fixtures.Identity(delay=1e9 if a.silent_identity else a.callback_delay)
        self.fx = [self.feed, self.api, self.geo, self.idn]
        ports = {"listen": plhelp.free_port(), "feed": self.feed.port, "records": self.api.port,
                 "geocoder": self.geo.port, "identity": self.idn.port}
        with open(os.path.join(HERE, "pipeline.yml"), encoding="utf-8") as f:
            text = f.read()
        for k, old in PORTS.items():
            text = text.replace(":%d/" % old, ":%d/" % ports[k])
        text = text.replace("port: %d" % PORTS["listen"], "port: %d" % ports["listen"])
        self.pipeline_text = text
        self.pipeline = os.path.join(self.work, "pipeline.yml")
        with open(self.pipeline, "w", encoding="utf-8") as f:
            f.write(text)
        self.base = "http://127.0.0.1:%d" % ports["listen"]

        p = subprocess.run([self.bins["pickline"], "check", self.pipeline], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        if p.returncode != 0:
            raise RunError("pickline check refused the pipeline:\n%s" % p.stdout)

        self.procs.start("pickline", [self.bins["pickline"], "run", self.pipeline, "--data", self.data,
                                 "--port", str(ports["listen"])])
        deadline = time.monotonic() + 30 * self.slow
        while True:
            self.procs.check_alive()
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RunError("pickline did not answer GET %s/health within %d s; its log ends:\n%s"
                               % (self.base, 30 * self.slow, tail(self.procs.log("pickline"), 25)))
            time.sleep(0.05)
        self.procs.start("qload", [self.bins["qload"], "--data", self.data, "--target", self.dsn,
                             "--follow", "--create-tables", "--mode", "merge"])
        self.notices = fixtures.NoticeSender(self.base)
        say("started: pickline run (listener %s), qload --follow --create-tables --mode merge, "
            "and the services (feed, records, geocoder, identity, internal-db notices)" % self.base)

    def feed_all(self):
        """Tenants first, through the internal database's notices (A.2), and
        wait for them to land: users refer to them (a foreign key). Then the
        users: most through the changes feed (A.1), every tenth as a notice."""
        d = self.d
        for t in d.tenants:
            self.api.add("tenants", t)
        for u in d.users:
            self.api.add("users", u)
        self.notices.notify("tenants", [t["id"] for t in d.tenants])
        self.wait(lambda c, r: c["tenants"] >= len(d.tenants), "the tenants in the warehouse",
                  progress=False)
        self.t0 = time.monotonic()
        notice = set(d.via_notice)
        chunk = []
        for u in d.users:
            if u["id"] in notice:
                self.notices.notify("users", [u["id"]])
            else:
                chunk.append(u["id"])
            if len(chunk) >= 100:
                self.feed.append("users", chunk)
                chunk = []
        if chunk:
            self.feed.append("users", chunk)

    def wait(self, done, what, progress=True):
        """Polls the warehouse and the rejects until done(counts, rejects) or
        the timeout; then raises RunError naming what is stuck."""
        last_print = 0.0
        while True:
            self.procs.check_alive()
            c = self.counts()
            r = self.rejects()
            if done(c, r):
                return c, r
            now = time.monotonic()
            if progress and now - last_print >= self.args.progress:
                last_print = now
                say("  %5.1fs  users %d/%d  tenants %d/%d  rejects %d/%d  in flight: %s" % (
                    now - self.t0, c["users"], len(self.d.valid_users), c["tenants"],
                    len(self.d.tenants), len(r), len(self.d.invalid), self.in_flight()))
            if now > self.deadline:
                self.stuck(what, c, r)
            time.sleep(0.25)

    def in_flight(self):
        """The queues holding jobs now, like "geocode 12, _w.identity 40"
        (_w.STAGE: rows waiting for their callback)."""
        stats = json.loads(self.qctl("stats", "--json"))
        held = []
        for q, st in sorted(stats.items()):
            n = sum(st.get(k, 0) for k in ("ready", "delayed", "reserved", "buried"))
            if n:
                held.append("%s %d" % (q, n))
        return ", ".join(held) or "nothing"

    def readers(self):
        """{queue: stage} from the pipeline file: which stage works each queue."""
        out, name = {}, None
        for line in self.pipeline_text.splitlines():
            m = re.match(r"\s*- name:\s*(\S+)", line)
            if m:
                name = m.group(1)
            m = re.match(r"\s+input:\s*(\S+)", line)
            if m and name:
                out[m.group(1)] = name
        return out

    def stuck(self, what, c, r):
        lines = ["timed out after %g s waiting for %s: the warehouse holds %d/%d users and "
                 "%d/%d tenants; %d/%d rejects" % (self.args.timeout, what, c["users"],
                                                    len(self.d.valid_users), c["tenants"],
                                                    len(self.d.tenants), len(r), len(self.d.invalid))]
        try:
            # Two looks a second apart: a queue that holds work and acked
            # nothing meanwhile is stuck; one that acked is merely slow.
            s1 = json.loads(self.qctl("stats", "--json"))
            time.sleep(1.0)
            s2 = json.loads(self.qctl("stats", "--json"))
            readers = self.readers()
            for q, st in sorted(s2.items()):
                held = {k: st.get(k, 0) for k in ("ready", "delayed", "reserved", "buried")}
                if not any(held.values()):
                    continue
                acked = st.get("acks", 0) - s1.get(q, {}).get("acks", 0)
                stage = readers.get(q) or (q[3:] if q.startswith("_w.") else None)
                lines.append("%s: queue '%s'%s holds %s; %s" % (
                    "stuck" if acked == 0 else "busy", q,
                    " (stage %s%s)" % (stage, ", waiting for callbacks" if q.startswith("_w.") else "")
                    if stage else "",
                    ", ".join("%d %s" % (v, k) for k, v in held.items() if v),
                    "%d acked in the last second" % acked if acked else "nothing acked in the last second"
                    + ("; `qctl peek %s --state buried` shows why" % q if held["buried"] else "")))
            for b in self.batches():
                if b.get("state") != "loaded" and (b.get("rows") or b.get("state") != "open"):
                    lines.append("%s: batch %s of %s is %s (%s rows)%s" % (
                        "stuck" if b.get("state") in ("held", "failed") else "waiting",
                        b.get("id"), b.get("model"), b.get("state"), b.get("rows"),
                        ": " + b["error"] if b.get("error") else ""))
            lines.append("services: feed %d changes, %d pages served; identity %d submitted, %d "
                         "called back, %d callbacks waiting; notices %d sent, %d not yet" % (
                             len(self.feed.changes), self.feed.pages, self.idn.submitted,
                             self.idn.delivered, self.idn.pending(), self.notices.sent,
                             len(self.notices.todo)))
            lines.append("qctl stats:\n" + self.qctl("stats"))
        except Exception as e:  # the report must not hide the timeout
            lines.append("(qctl could not say more: %s)" % e)
        for name, (p, log) in self.procs.procs.items():
            lines.append("%s log (%s) ends:\n%s" % (name, log, tail(log, 15)))
        raise RunError("\n".join(lines))

    def run(self):
        a = self.args
        self.d = fixtures.make_dataset(a.records)
        d = self.d
        self.deadline = time.monotonic() + a.timeout
        self.t0 = time.monotonic()
        self.setup()
        say("feeding %d users (%d valid, %d invalid; %d as internal-db notices, the rest through "
            "the changes feed) and %d tenants" % (len(d.users), len(d.valid_users), len(d.invalid),
                                                  len(d.via_notice), len(d.tenants)))
        self.feed_all()
        nvalid, ninvalid = len(d.valid_users), len(d.invalid)
        c, r = self.wait(lambda c, r: c["users"] >= nvalid and len(r) >= ninvalid,
                         "every valid user in the warehouse and every invalid one a reject")
        elapsed = time.monotonic() - self.t0
        self.report(c, r, elapsed)

    # ------------------------------------------------------------ checking

    def report(self, c, rejects, elapsed):
        d = self.d
        problems = []
        q = self.pg.query_json
        users = {u["id"]: u for u in q(
            "SELECT id, tenant, first_name, last_name, title, email, passhash, salt, permission, "
            "phone, mobile, manager, address, city, country, "
            "extract(epoch FROM created_at)::text AS created_at, "
            "extract(epoch FROM updated_at)::text AS updated_at, "
            "lat::text AS lat, lon::text AS lon, person_id, match_score::text AS match_score, "
            "to_char(deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS deleted_at FROM users",
            self.dsn)}
        tenants = {t["id"]: t for t in q("SELECT id, name FROM tenants", self.dsn)}

        # every valid user, value by value; no invalid one
        src = {u["id"]: u for u in d.users}
        want = set(d.valid_users)
        if set(users) != want:
            problems.append("users in the warehouse differ: %d missing (%s), %d unexpected (%s)" % (
                len(want - set(users)), sorted(want - set(users))[:10],
                len(set(users) - want), sorted(set(users) - want)[:10]))
        geo_ok = id_ok = 0
        for i in sorted(want & set(users)):
            u, s = users[i], src[i]
            for f in ("tenant", "first_name", "last_name", "email", "passhash", "salt", "phone",
                      "mobile", "manager", "address", "city", "country"):
                if u[f] != s.get(f):
                    problems.append("user %d: %s is %r, the record API sent %r" % (i, f, u[f], s.get(f)))
            for f in ("created_at", "updated_at"):
                sent = s.get(f)
                want_t = (datetime.datetime.fromisoformat(sent.replace("Z", "+00:00")).timestamp()
                          if sent else None)
                got = float(u[f]) if u[f] is not None else None
                if (got is None) != (want_t is None) or (got is not None and abs(got - want_t) > 1e-6):
                    problems.append("user %d: %s is %s (epoch), the record API sent %r" % (i, f, u[f], sent))
            if u["match_score"] != fixtures.match_score(s["email"]):
                problems.append("user %d: match_score %r, the identity service called back %r"
                                % (i, u["match_score"], fixtures.match_score(s["email"])))
            if u["title"] != s.get("title"):
                problems.append("user %d: title is %r, expected %r" % (i, u["title"], s.get("title")))
            if u["permission"] != s.get("permission", 1):
                problems.append("user %d: permission is %r, expected %r (the default is 1)"
                                % (i, u["permission"], s.get("permission", 1)))
            if u["deleted_at"] != "2999-12-31":
                problems.append("user %d: deleted_at is %r, expected the default 2999-12-31"
                                % (i, u["deleted_at"]))
            if s.get("city") is not None:
                lat, lon = fixtures.CITIES[(s["city"], s["country"])]
                if (u["lat"], u["lon"]) == (lat, lon):
                    geo_ok += 1
                else:
                    problems.append("user %d: lat/lon %s/%s, the geocoder answered %s/%s"
                                    % (i, u["lat"], u["lon"], lat, lon))
            elif u["lat"] is not None:
                problems.append("user %d has no city but lat %s" % (i, u["lat"]))
            if u["person_id"] == fixtures.person_id(s["email"]):
                id_ok += 1
            else:
                problems.append("user %d: person_id %r, the identity service called back %r"
                                % (i, u["person_id"], fixtures.person_id(s["email"])))
            if len(problems) > 20:
                break
        if len(tenants) != len(d.tenants) or any(tenants.get(t["id"], {}).get("name") != t["name"]
                                                 for t in d.tenants):
            problems.append("tenants differ: %r" % tenants)

        # every invalid user is a reject naming the broken rule
        by_key = {}
        for rj in rejects:
            by_key[str(rj.get("key"))] = rj
        groups = collections.Counter()
        for i, (field, rule, what) in sorted(d.invalid.items()):
            rj = next((v for k, v in by_key.items() if k == str(i) or k.split("/")[0] == str(i)), None)
            if rj is None:
                problems.append("user %d (%s) is not among the rejects" % (i, what))
                continue
            errs = rj.get("errors")
            if isinstance(errs, str):
                errs = json.loads(errs)
            hit = [e for e in errs or [] if e.get("field") == field and e.get("rule") == rule]
            if not hit:
                problems.append("the reject of user %d (%s) does not name %s/%s: %r"
                                % (i, what, field, rule, errs))
        for rj in rejects:
            errs = rj.get("errors")
            if isinstance(errs, str):
                errs = json.loads(errs)
            for e in errs or []:
                groups[(rj.get("model"), e.get("field"), e.get("rule"), e.get("message"))] += 1
        if len(rejects) != len(d.invalid):
            problems.append("%d rejects, expected %d" % (len(rejects), len(d.invalid)))

        batches = self.batches()
        bstate = collections.Counter((b.get("model"), b.get("state")) for b in batches)
        brows = collections.Counter()
        for b in batches:
            brows[b.get("model")] += int(b.get("rows") or 0)

        say("")
        say("== landed in the warehouse")
        say("  %-8s %8s %9s" % ("table", "rows", "expected"))
        say("  %-8s %8d %9d" % ("tenants", len(tenants), len(d.tenants)))
        say("  %-8s %8d %9d" % ("users", len(users), len(d.valid_users)))
        say("  users geocoded (C.1): %d with lat/lon as the geocoder answered (of %d with a city)"
            % (geo_ok, len(d.geocoded)))
        say("  users matched (C.2): %d with the person_id of the identity callback" % id_ok)
        say("")
        say("== rejects: %d, by reason (qctl rejects)" % len(rejects))
        w = max([len("%s.%s" % (k[0], k[1])) for k in groups] + [0])
        for (model, field, rule, msg), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])):
            say("  %4d  %-*s  %-8s  %s" % (n, w, "%s.%s" % (model, field), rule, msg))
        say("")
        say("== batches (qctl batches)")
        for (model, state), n in sorted(bstate.items()):
            say("  %-8s %-8s %4d batches, %d rows" % (model, state, n, brows[model]))
        say("")
        rate = len(d.users) / elapsed if elapsed > 0 else 0.0
        say("== time: %.2f s from the first change in the feed to the last row in the warehouse:"
            " %.0f records/s (%d users)" % (elapsed, rate, len(d.users)))
        if any(s != "loaded" for (_, s) in bstate):
            problems.append("not every batch is loaded: %r" % dict(bstate))
        if problems:
            raise RunError("what landed does not match what was fed:\n  " + "\n  ".join(problems[:25]))
        say("OK: every valid record landed as it was sent, enriched by C.1 and C.2; every invalid "
            "one is a reject with its reason")
        self.ok = True


def main():
    ap = argparse.ArgumentParser(description="Run the reference pipeline end to end: a throwaway "
                                 "PostgreSQL, loopback services, pickline run and qload --follow.")
    ap.add_argument("--records", type=int, default=2000, help="users to feed (default 2000)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds before a stuck run is ended (default 300)")
    ap.add_argument("--page-size", type=int, default=100, help="changes per feed page (default 100)")
    ap.add_argument("--callback-delay", type=float, default=0.3,
                    help="seconds the identity service takes to call back (default 0.3)")
    ap.add_argument("--silent-identity", action="store_true",
                    help="the identity service accepts but never calls back: shows how --timeout "
                    "reports a stuck stage")
    ap.add_argument("--progress", type=float, default=2.0, help="seconds between progress lines")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = ap.parse_args()
    if args.records < 1 or args.timeout <= 0 or args.page_size < 1:
        ap.error("--records and --page-size take a positive count, --timeout positive seconds")

    # SIGTERM (a test's timeout, a CI cancel) stops everything like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    run = None
    code = 1
    try:
        run = Run(args)
        run.run()
        code = 0
    except RunError as e:
        say("FAILED: %s" % e)
    except pgfix.PgFixError as e:
        say("FAILED: the throwaway PostgreSQL: %s" % e)
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        code = 130
    except Exception:
        import traceback
        say("FAILED: run.py itself broke:\n%s" % traceback.format_exc())
    finally:
        if run:
            problems = run.stop()
            for p in problems:
                say("FAILED: %s" % p)
            if problems and code == 0:
                code = 1
            if code == 0 and not args.keep:
                import shutil
                shutil.rmtree(run.work, ignore_errors=True)
            else:
                say("logs and data kept in %s" % run.work)
    return code


if __name__ == "__main__":
    sys.exit(main())
