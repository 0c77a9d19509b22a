"""Real field names (issue 13, item 9) on real public data: npm's
`vega-datasets` package, fetched with npm in the test's setup (never kept in
the repository): movies.json, whose fields are named "US Gross", "Rotten
Tomatoes Rating" ..., and earthquakes.json, GeoJSON whose values sit in
nested objects ("properties.mag", "geometry.type"). A model names each
column and reads it `from:` its source field or path. The records go
through the real line: qctl import -> validate -> batch -> qload into a
real PostgreSQL, and every record is accounted for: landed, or rejected
with its reason (by validate: a title that is a number or missing; by the
warehouse: a title that is already there, the movies' key).

The expectations are computed here from the data itself, with plain Python
that knows nothing of pickline. When npm's registry cannot be reached the
test is skipped, saying so."""
import collections
import decimal
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgfix  # noqa: E402
from engine_fixtures import EngineTestCase, qctl  # noqa: E402
from plhelp import binary, pipeline, run  # noqa: E402

PACKAGE = "vega-datasets@3.2.1"
FILES = ("movies.json", "earthquakes.json")


def fetch(dest):
    """npm pack PACKAGE into dest and extracts FILES; returns {name: path},
    or raises unittest.SkipTest when npm or its registry is out of reach."""
    if not shutil.which("npm"):
        raise unittest.SkipTest("npm is not installed (scripts/install-deps.sh installs it); "
                                "cannot fetch %s" % PACKAGE)
    try:
        p = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=dest, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=300,
                           env=dict(os.environ, npm_config_cache=os.path.join(dest, "npm-cache"),
                                    npm_config_update_notifier="false"))
    except subprocess.TimeoutExpired:
        raise unittest.SkipTest("npm pack %s did not finish in 300 s: npm's registry is out of "
                                "reach" % PACKAGE)
    if p.returncode != 0:
        raise unittest.SkipTest("npm pack %s failed, npm's registry is out of reach?\n%s"
                                % (PACKAGE, p.stderr[-2000:]))
    tgz = os.path.join(dest, p.stdout.strip().splitlines()[-1])
    out = {}
    with tarfile.open(tgz) as t:
        for name in FILES:
            m = t.getmember("package/data/" + name)
            with t.extractfile(m) as src, open(os.path.join(dest, name), "wb") as f:
                shutil.copyfileobj(src, f)
            out[name] = os.path.join(dest, name)
    return out


MOVIE_COLUMNS = {
    "title": "Title", "us_gross": "US Gross", "worldwide_gross": "Worldwide Gross",
    "us_dvd_sales": "US DVD Sales", "production_budget": "Production Budget",
    "release_date": "Release Date", "mpaa_rating": "MPAA Rating",
    "running_time_min": "Running Time min", "distributor": "Distributor", "source": "Source",
    "major_genre": "Major Genre", "creative_type": "Creative Type", "director": "Director",
    "rotten_tomatoes_rating": "Rotten Tomatoes Rating", "imdb_rating": "IMDB Rating",
    "imdb_votes": "IMDB Votes",
}


class VegaTest(pgfix.ClusterTest, EngineTestCase):
    @classmethod
    def setUpClass(cls):
        cls.fetched = tempfile.mkdtemp(prefix="pickline-vega-")
        try:
            cls.files = fetch(cls.fetched)
        except BaseException:
            shutil.rmtree(cls.fetched, ignore_errors=True)
            raise
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.fetched, ignore_errors=True)

    def load(self, name):
        with open(self.files[name], encoding="utf-8") as f:
            return json.load(f, parse_float=decimal.Decimal)

    def import_jobs(self, eng, queue, model, rows):
        lines = "".join(json.dumps({"body": {"model": model, "row": r}}, default=str) + "\n"
                        for r in rows)
        p = qctl(eng.data, "import", queue, "--json", input=lines, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["imported"], len(rows))

    def test_public_data_with_real_field_names_lands_or_is_rejected_with_its_reason(self):
        movies = self.load("movies.json")
        quakes = self.load("earthquakes.json")["features"]
        # What must happen, from the data alone: a title that is not text
        # (a number: "1776", or null) breaks the model; of the valid movies,
        # each title lands once and its repeats are refused by the table's
        # primary key.
        no_title = [m for m in movies if m["Title"] is None]
        num_title = [m for m in movies if m["Title"] is not None and not isinstance(m["Title"], str)]
        valid = [m for m in movies if isinstance(m["Title"], str)]
        seen = collections.Counter(m["Title"] for m in valid)
        repeats = sum(n - 1 for n in seen.values())
        self.assertGreater(len(num_title), 0)
        self.assertGreater(repeats, 0)

        eng = self.engine(pipeline("vega"))
        eng.start()
        # qctl schema shows the mapping.
        p = qctl(eng.data, "schema")
        self.assertEqual(p.returncode, 0, p.stderr)
        line = [l for l in p.stdout.splitlines() if l.strip().startswith("us_gross")][0]
        self.assertIn('from "US Gross"', line)
        line = [l for l in p.stdout.splitlines() if l.strip().startswith("mag ")][0]
        self.assertIn('from "properties.mag"', line)
        sch = json.loads(qctl(eng.data, "schema", "--json").stdout)
        fields = {f["name"]: f for m in sch["models"] for f in m["fields"] if m["name"] == "movies"}
        self.assertEqual({n: f["from"] for n, f in fields.items()}, MOVIE_COLUMNS)

        self.import_jobs(eng, "movies_in", "movies", movies)
        self.import_jobs(eng, "quakes_in", "quakes", quakes)
        self.wait_empty(eng, ["movies_in", "quakes_in", "valid"], timeout=120)
        self.wait(lambda: all(b["state"] == "sealed" for b in self.batches(eng)), 20,
                  "every batch sealed", eng)

        # validate's rejects: each names the record (its key when it has
        # one) and the rule.
        rej = self.rejects(eng, "movies")
        self.assertEqual(len(rej), len(no_title) + len(num_title))
        why = collections.Counter((e["field"], e["rule"]) for r in rej for e in r["errors"])
        self.assertEqual(why, {("title", "required"): len(no_title),
                               ("title", "type"): len(num_title)})
        self.assertEqual(sorted(str(r["row"]["Title"]) for r in rej if r["row"]["Title"] is not None),
                         sorted(str(m["Title"]) for m in num_title))
        self.assertEqual(self.rejects(eng, "quakes"), [])

        r = run([binary("qload"), "--data", eng.data, "--target", self.dsn, "--create-tables",
                 "--json"], timeout=300)
        self.assertEqual(r.code, 1, r)   # exit 1: rows were rejected
        res = r.json()
        self.assertEqual((res["rows"], res["rejected"], res["failed"]),
                         (len(valid) - repeats + len(quakes), repeats, 0), r)
        # The warehouse's rejects: the repeats, keyed by their title, with
        # PostgreSQL's reason.
        wrej = [x for x in self.rejects(eng, "movies") if x["stage"] == "qload"]
        self.assertEqual(len(wrej), repeats)
        self.assertEqual(collections.Counter(x["key"] for x in wrej),
                         {t: n - 1 for t, n in seen.items() if n > 1})
        for x in wrej:
            self.assertIn("duplicate key value", x["errors"][0]["message"])
        # Every record: landed, or rejected with its reason.
        landed = int(self.pg.scalar("SELECT count(*) FROM movies", dsn=self.dsn))
        self.assertEqual(landed + len(rej) + len(wrej), len(movies))
        self.assertEqual(int(self.pg.scalar("SELECT count(DISTINCT title) FROM movies",
                                            dsn=self.dsn)), landed)

        # A few records, every column exactly as the source has it.
        got = {row["title"]: row for row in self.pg.query_json("SELECT * FROM movies", dsn=self.dsn)}
        once = [m for m in valid if seen[m["Title"]] == 1]
        for m in once[::max(1, len(once) // 7)]:
            self.assertEqual(got[m["Title"]], {col: m[src] for col, src in MOVIE_COLUMNS.items()},
                             m["Title"])
        gq = {row["id"]: row for row in self.pg.query_json("SELECT * FROM quakes", dsn=self.dsn)}
        self.assertEqual(len(gq), len(quakes))
        for q in quakes[::max(1, len(quakes) // 7)]:
            self.assertEqual(gq[q["id"]], {
                "id": q["id"], "feature": q["type"], "mag": q["properties"]["mag"],
                "place": q["properties"]["place"], "at_ms": q["properties"]["time"],
                "tsunami": q["properties"]["tsunami"], "shape": q["geometry"]["type"]}, q["id"])
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())


if __name__ == "__main__":
    unittest.main()
