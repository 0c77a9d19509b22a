#!/usr/bin/env python3
"""run.py: the edge copy end to end, on one machine, for real.

Starts two throwaway PostgreSQL clusters, the "warehouse" and the "edge";
creates a users table in the warehouse, runs setup.sql there (watermark
index, NOTIFY trigger, a read-only role) and seeds it (--rows, default
20,000, with hostile text: quotes, commas, newlines, backslashes, unicode,
NULL versus ''). Then:

  1. the first run: `pickline run pipeline.yml` with
     `qload --follow --mode merge --create-tables` copies everything;
  2. changes while the engine runs (updates, soft deletes, hard deletes,
     inserts) arrive in the edge within a second or so;
  3. the engine and qload stop; more changes are made; the next run copies
     only those (the extract goes on from its cursor), and its
     reconciliation finds the rows deleted meanwhile;

and after each step the edge's table is compared with the warehouse's, row
for row and value for value (an md5 of all the rows' text, in key order;
on a difference the first differing rows are printed). Everything started
is stopped at the end, also on an error or Ctrl-C. Exit status 0 only when
every comparison matched; 1 otherwise; 2 for usage.

    python3 examples/edge-copy/run.py [--rows N] [--timeout S] [--keep]

Binaries come from $PICKLINE_BUILD (default build/release). Standard
library only, plus tests/pgfix.py for the throwaway clusters and tests/plhelp.py
(the test kit: the build, processes and their logs).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import pgfix  # noqa: E402
import plhelp  # noqa: E402
from plhelp import RunError, say, tail  # noqa: E402

# The warehouse's table (the edge's comes from the model: qload --create-tables).
TABLE = """
CREATE TABLE users (
    tenant integer NOT NULL,
    id bigint NOT NULL,
    first_name varchar(50) NOT NULL,
    last_name varchar(50) NOT NULL,
    title varchar(50),
    email varchar(99),
    passhash varchar(50),
    salt varchar(50),
    permission integer DEFAULT 1,
    phone varchar(50),
    mobile varchar(50),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at timestamptz NOT NULL DEFAULT '2999-12-31T00:00:00Z',
    PRIMARY KEY (tenant, id));
"""

COLS = ("tenant, id, first_name, last_name, title, email, passhash, salt, permission, phone, "
        "mobile, created_at, updated_at, deleted_at")


def insert_sql(lo, hi):
    """Users lo..hi-1, spread over 8 tenants, with hostile text."""
    return ("INSERT INTO users (tenant, id, first_name, last_name, title, email, passhash, salt, "
            "permission, phone, mobile, created_at) SELECT g %% 8, g, "
            "(ARRAY['Zoë', 'D''Arcy', 'Jean-Luc', 'Иван', '明美', 'Søren'])[1 + g %% 6] || ' ' || g, "
            "(ARRAY['O''Brien', 'Smith, Jr.', '\"The Rock\"', E'two\\nlines', E'back\\\\slash'])"
            "[1 + g %% 5], CASE g %% 4 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'Engineer' END, "
            "'user' || g || '@example.com', md5(g::text), substr(md5((g * 7)::text), 1, 16), "
            "1 + g %% 3, CASE WHEN g %% 3 = 0 THEN NULL ELSE '+1 555 ' || g END, NULL, "
            "timestamptz '2020-01-01' + g * interval '1 minute' "
            "FROM generate_series(%d, %d) g;" % (lo, hi - 1))


class Run(plhelp.RunBase):
    def __init__(self, args):
        super().__init__("pickline-edge.", "edge-data")
        self.args = args
        self.wh = self.edge = None
        self.t0 = time.monotonic()

    def close(self):
        problems = self.procs.stop(("qload", "pickline"))
        for pg in (self.wh, self.edge):
            if pg:
                try:
                    pg.close()
                except Exception as e:  # noqa: BLE001 -- report, keep stopping
                    problems.append("stopping PostgreSQL: %s" % e)
        return problems

    def batches(self):
        out = json.loads(self.qctl("batches", "--json", "--limit", "0") or "[]")
        return out.get("batches", []) if isinstance(out, dict) else out

    # ------------------------------------------------------------ the two databases

    def digest(self, pg, dsn):
        """(rows, md5 of every row's text in key order) of users."""
        try:
            r = pg.psql("SELECT count(*), coalesce(md5(string_agg(row(%s)::text, E'\\n' "
                        "ORDER BY tenant, id)), '') FROM users" % COLS, dsn)
        except pgfix.PgFixError:
            return (0, "no table yet")
        return (int(r[0][0]), r[0][1])

    def same(self):
        return self.digest(self.wh, self.wdsn) == self.digest(self.edge, self.edsn)

    def wait_same(self, what):
        """Waits until the edge equals the warehouse; returns the seconds."""
        t = time.monotonic()
        end = t + self.args.timeout * self.slow
        while not self.same():
            self.procs.check_alive()
            if time.monotonic() > end:
                raise RunError("%s: the edge does not equal the warehouse after %d s\n%s"
                               % (what, self.args.timeout * self.slow, self.differences()))
            time.sleep(0.05)
        return time.monotonic() - t

    def differences(self):
        w = {tuple(r[:2]): r for r in self.wh.psql("SELECT %s FROM users" % COLS, self.wdsn)}
        try:
            e = {tuple(r[:2]): r for r in self.edge.psql("SELECT %s FROM users" % COLS, self.edsn)}
        except pgfix.PgFixError:
            e = {}
        lines = ["  warehouse %d rows, edge %d rows" % (len(w), len(e))]
        missing = sorted(set(w) - set(e))
        if missing:
            lines.append("  missing in the edge (tenant, id): %s" % missing[:10])
        extra = sorted(set(e) - set(w))
        if extra:
            lines.append("  still in the edge, gone from the warehouse (tenant, id): %s" % extra[:10])
        diff = [k for k in sorted(set(w) & set(e)) if w[k] != e[k]]
        for k in diff[:3]:
            lines.append("  differs %s:\n    warehouse %s\n    edge      %s" % (k, w[k], e[k]))
        for name, (_, log) in self.procs.procs.items():
            lines.append("  %s log ends:\n%s" % (name, tail(log, 10)))
        return "\n".join(lines)

    def show_same(self, what, secs):
        n, md5 = self.digest(self.edge, self.edsn)
        say("  %s: the edge equals the warehouse after %.2f s: %d rows, md5 %s" % (what, secs, n, md5))

    # ------------------------------------------------------------ the engine

    def start_engine(self):
        env = dict(os.environ, WAREHOUSE_DSN=self.reader_dsn, EDGE_DSN=self.edsn)
        self.procs.start("pickline", [self.bins["pickline"], "run", os.path.join(HERE, "pipeline.yml"),
                                "--data", self.data], env=env)
        # qload reads the models from the data directory: wait for the engine
        # to write it, then follow.
        end = time.monotonic() + 15 * self.slow
        while not os.path.exists(os.path.join(self.data, "data.mdb")):
            self.procs.check_alive()
            if time.monotonic() > end:
                raise RunError("pickline made no data directory in %s within 15 s" % self.data)
            time.sleep(0.05)
        self.procs.start("qload", [self.bins["qload"], "--data", self.data, "--target", self.edsn,
                             "--pipeline", os.path.join(HERE, "pipeline.yml"), "--follow", "--mode", "merge",
                             "--create-tables", "--poll", "0.2"])

    def wh_sql(self, sql):
        self.wh.psql(sql, self.wdsn)

    # ------------------------------------------------------------ the run

    def run(self):
        a = self.args
        say("== pickline: an edge copy of the warehouse's users table (examples/edge-copy)")
        say("work directory %s; binaries from %s" % (self.work, self.build))
        self.wh = pgfix.PgCluster()
        self.edge = pgfix.PgCluster()
        self.wdsn = self.wh.create_db("warehouse")
        self.edsn = self.edge.create_db("edge")
        self.reader_dsn = self.wdsn.replace("user=postgres", "user=edge_reader")
        say("warehouse: %s\nedge:      %s" % (self.wdsn, self.edsn))
        with open(os.path.join(HERE, "setup.sql")) as f:
            setup = f.read()
        self.wh_sql(TABLE + setup + insert_sql(1, a.rows + 1))
        say("warehouse: users created, setup.sql run, %d users seeded" % a.rows)

        say("\n== 1. the first run copies everything")
        say("  $ WAREHOUSE_DSN=... pickline run pipeline.yml --data edge-data &")
        say("  $ qload --data edge-data --target EDGE_DSN --follow --mode merge --create-tables &")
        self.start_engine()
        self.show_same("first copy", self.wait_same("the first copy"))
        first = self.batches()
        say("  %d batches, %d rows staged and loaded" % (len(first), sum(b["rows"] for b in first)))

        say("\n== 2. changes while the engine runs arrive in the edge")
        n = a.rows
        hard = self.wh.scalar("SELECT count(*) FROM users WHERE id % 700 = 5", self.wdsn)
        self.wh_sql("UPDATE users SET title = 'Director of \"Growth\", EMEA' WHERE id % 100 = 7;"
                    "UPDATE users SET deleted_at = now() WHERE id % 500 = 3;"
                    "DELETE FROM users WHERE id % 700 = 5;" +
                    insert_sql(n + 1, n + 101))
        upd = self.wh.scalar("SELECT count(*) FROM users WHERE id % 100 = 7", self.wdsn)
        dele = self.wh.scalar("SELECT count(*) FROM users WHERE deleted_at < '2999-01-01'", self.wdsn)
        say("  warehouse: %s titles updated, %s users soft-deleted (deleted_at = now()), %s "
            "deleted (DELETE), 100 inserted" % (upd, dele, hard))
        self.show_same("live changes", self.wait_same("the live changes"))
        gone = self.edge.scalar("SELECT count(*) FROM users WHERE deleted_at < '2999-01-01'", self.edsn)
        say("  the edge holds %s soft-deleted users (deleted_at set), as the warehouse does" % gone)
        if gone != dele:
            raise RunError("the edge holds %s soft-deleted users, the warehouse %s" % (gone, dele))

        say("\n== 3. the engine stops; the next run copies only what changed meanwhile")
        problems = self.procs.stop(("qload", "pickline"))
        if problems:
            raise RunError("\n".join(problems))
        before = {b["id"] for b in self.batches()}
        gone = int(self.wh.scalar("SELECT count(*) FROM users WHERE id % 1000 = 13", self.wdsn))
        self.wh_sql("UPDATE users SET phone = '+44 20 7946 0000' WHERE id % 1000 = 11;"
                    "UPDATE users SET deleted_at = now() WHERE id % 1000 = 12;"
                    "DELETE FROM users WHERE id % 1000 = 13;" +
                    insert_sql(n + 101, n + 121))
        changed = int(self.wh.scalar("SELECT count(*) FROM users WHERE id %% 1000 IN (11, 12) "
                                     "OR id > %d" % (n + 100), self.wdsn))
        say("  warehouse (engine stopped): %d rows changed or inserted, %d deleted" % (changed, gone))
        self.start_engine()
        self.show_same("second run", self.wait_same("the second run"))
        new = [b for b in self.batches() if b["id"] not in before]
        staged = sum(b["rows"] for b in new)
        say("  the second run staged %d rows in %d batch(es), not %d: only what changed, and the "
            "deletes its reconciliation found" % (staged, len(new), n + 120))
        if staged != changed + gone:
            raise RunError("the second run staged %d rows; %d changed and %d were deleted"
                           % (staged, changed, gone))
        say("\n== stopping (SIGTERM: qload finishes its batch, the engine drains)")


def main():
    ap = argparse.ArgumentParser(description="The edge copy end to end with two throwaway "
                                 "PostgreSQL clusters.")
    ap.add_argument("--rows", type=int, default=20000, help="users seeded in the warehouse")
    ap.add_argument("--timeout", type=float, default=120, help="seconds each step may take")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    if a.rows < 1000:
        ap.error("--rows must be at least 1000")
    try:
        r = Run(a)
    except (RunError, pgfix.PgFixError) as e:
        say("edge-copy: %s" % e)
        return 1
    ok = False
    try:
        r.run()
        ok = True
    except (RunError, pgfix.PgFixError) as e:
        say("\nFAILED: %s" % e)
    except KeyboardInterrupt:
        say("\ninterrupted")
    finally:
        problems = r.close()
        for p in problems:
            say("problem: %s" % p)
        ok = ok and not problems
        if ok and not a.keep:
            import shutil
            shutil.rmtree(r.work, ignore_errors=True)
        else:
            say("kept %s (the data directory and the logs)" % r.work)
    say("edge-copy: %s (%.1f s)" % ("ok: the edge equals the warehouse after every step" if ok
                                     else "FAILED", time.monotonic() - r.t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
