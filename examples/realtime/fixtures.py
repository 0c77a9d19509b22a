"""fixtures: the third-party services of the reference pipeline, played on
loopback by in-process HTTP servers (standard library only).

    ChangesFeed   A.1's web service: GET /changes?since=CURSOR -> one page of
                  {"changes":[{"seq","id","table"}],"cursor","next"}, an ETag
                  on every answer and 304 for If-None-Match of the current one
    RecordAPI     B's web service: GET /users/ID and /tenants/ID -> the record
                  (a few users deliberately invalid), 404 for unknown ids
    Geocoder      C.1: GET /geocode?city=C&country=K -> {"lat","lon"}
    Identity      C.2: POST /match -> 202 at once; a little later it POSTs
                  {"person_id","score"} to the request's callback_url,
                  retrying until the listener answers 2xx
    NoticeSender  A.2's internal database: POSTs each change notice to the
                  engine's listener (POST /queues/notices/jobs) with an
                  Idempotency-Key, retrying until it is acknowledged

and make_dataset(), the records the run feeds (valid and invalid users,
tenants) with what the warehouse should hold afterwards.

The servers are tests/plhelp.py's Fixture (ThreadingHTTPServer, one thread
per connection) speaking HTTP/1.1 with keep-alive, so the engine's connection
pool is used as it would be against a real service.
"""
import collections
import hashlib
import heapq
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tests"))
import plhelp  # noqa: E402


# ---------------------------------------------------------------- base

class Fixture(plhelp.Fixture):
    """plhelp's loopback HTTP service, speaking HTTP/1.1 with keep-alive as
    a real service would."""
    http_version = "HTTP/1.1"


# ---------------------------------------------------------------- A.1 changes feed

class ChangesFeed(Fixture):
    """GET /changes?since=CURSOR. The cursor is the seq of the last change
    handed out; a page holds at most page_size changes and, while more wait,
    "next" is the URL of the following page. The ETag names the feed's
    length, so a poll with If-None-Match of the current one gets 304."""

    def __init__(self, page_size=100, port=0):
        super().__init__(port)
        self.page_size = page_size
        self.changes = []
        self.pages = 0
        self.not_modified = 0
        self.first_append = None

    def append(self, table, ids):
        with self.lock:
            if self.first_append is None:
                self.first_append = time.monotonic()
            for i in ids:
                self.changes.append({"seq": len(self.changes) + 1, "table": table, "id": i})

    def handle(self, req):
        if req.url_path != "/changes":
            return req.reply(404, {"error": "use GET /changes?since=CURSOR"})
        with self.lock:
            etag = '"feed-%d"' % len(self.changes)
            if req.headers.get("If-None-Match") == etag:
                self.not_modified += 1
                return req.reply(304, headers={"ETag": etag})
            since = req.query.get("since", "") or "0"
            if not since.isdigit():
                return req.reply(400, {"error": "bad cursor %r: since takes the cursor of the last "
                                                "answer" % since})
            c0 = int(since)
            # seq n sits at index n-1: no scan
            page = self.changes[c0:c0 + self.page_size]
            cursor = str(page[-1]["seq"]) if page else str(c0)
            nxt = None
            if c0 + len(page) < len(self.changes):
                nxt = "%s/changes?since=%s" % (self.url, cursor)
            self.pages += 1
            body = {"changes": page, "cursor": cursor, "next": nxt}
        req.reply(200, body, headers={"ETag": etag})


# ---------------------------------------------------------------- B record API

class RecordAPI(Fixture):
    """GET /TABLE/ID -> the record as JSON; 404 for an unknown table or id."""

    def __init__(self, port=0):
        super().__init__(port)
        self.tables = collections.defaultdict(dict)
        self.served = collections.Counter()

    def add(self, table, rec):
        with self.lock:
            self.tables[table][str(rec["id"])] = json.dumps(rec, ensure_ascii=False)

    def handle(self, req):
        parts = req.url_path.strip("/").split("/")
        if len(parts) != 2:
            return req.reply(404, {"error": "use GET /TABLE/ID"})
        table, rid = parts[0], urllib.parse.unquote(parts[1])
        with self.lock:
            text = self.tables.get(table, {}).get(rid)
            if text is not None:
                self.served[table] += 1
        if text is None:
            return req.reply(404, {"error": "no %s record %s" % (table, rid)})
        req.reply(200, text)


# ---------------------------------------------------------------- C.1 geocoder

CITIES = {
    ("Amsterdam", "NL"): ("52.370216", "4.895168"),
    ("Rotterdam", "NL"): ("51.924420", "4.477733"),
    ("Antwerpen", "BE"): ("51.219448", "4.402464"),
    ("Zürich", "CH"): ("47.376887", "8.541694"),
    ("São Paulo", "BR"): ("-23.550520", "-46.633308"),
    ("Kraków", "PL"): ("50.064650", "19.944980"),
    ("Montréal", "CA"): ("45.501689", "-73.567256"),
    ("Reykjavík", "IS"): ("64.146582", "-21.942635"),
}


class Geocoder(Fixture):
    """GET /geocode?city=C&country=K -> {"lat": .., "lon": ..} (numbers with
    six decimals), 404 for a place it does not know."""

    def __init__(self, port=0):
        super().__init__(port)
        self.lookups = 0

    def handle(self, req):
        if req.url_path != "/geocode":
            return req.reply(404, {"error": "use GET /geocode?city=C&country=K"})
        hit = CITIES.get((req.query.get("city"), req.query.get("country")))
        if not hit:
            return req.reply(404, {"error": "unknown place %r, %r" % (req.query.get("city"),
                                                                     req.query.get("country"))})
        with self.lock:
            self.lookups += 1
        # the numbers as written: "52.370216", not a float's rounding of it
        req.reply(200, '{"lat": %s, "lon": %s}' % hit)


# ---------------------------------------------------------------- C.2 identity

def person_id(email):
    return "P-" + hashlib.sha1(email.lower().encode("utf-8")).hexdigest()[:12]


def match_score(email):
    """The score the identity service answers for email, as written: "0.NNN"."""
    return "0.%03d" % (int(person_id(email)[2:5], 16) % 1000)


class Identity(Fixture):
    """POST /match {..., "callback_url": U} -> 202 {"status":"queued"} at
    once. After `delay` seconds one of `senders` threads POSTs
    {"person_id": .., "score": ..} to U, and retries every `retry` seconds
    until a 2xx (a 404 for a token the engine no longer waits on ends it)."""

    def __init__(self, delay=0.3, retry=0.5, senders=8, port=0):
        super().__init__(port)
        self.delay = delay
        self.retry = retry
        self.submitted = 0
        self.delivered = 0
        self.failed_posts = 0
        self._due = []             # heap of (time, n, url, body)
        self._n = 0
        self._cv = threading.Condition(self.lock)
        self._threads = [threading.Thread(target=self._sender, name="identity-cb-%d" % i, daemon=True)
                         for i in range(senders)]
        for t in self._threads:
            t.start()

    def handle(self, req):
        if req.url_path != "/match" or req.command != "POST":
            return req.reply(404, {"error": "use POST /match"})
        try:
            body = json.loads(req.req_body)
            cb = body["callback_url"]
            email = body.get("email") or ""
        except (ValueError, KeyError, TypeError):
            return req.reply(400, {"error": "need a JSON body with callback_url"})
        pid = person_id(email)
        score = match_score(email)
        res = ('{"person_id": %s, "score": %s}' % (json.dumps(pid), score)).encode("utf-8")
        with self._cv:
            self.submitted += 1
            self._n += 1
            heapq.heappush(self._due, (time.monotonic() + self.delay, self._n, cb, res))
            self._cv.notify()
        req.reply(202, {"status": "queued"})

    def _sender(self):
        conns = {}
        while not self.stopping.is_set():
            with self._cv:
                while not self._due or self._due[0][0] > time.monotonic():
                    if self.stopping.is_set():
                        return
                    wait = self._due[0][0] - time.monotonic() if self._due else 0.2
                    self._cv.wait(min(max(wait, 0.001), 0.2))
                _, n, url, body = heapq.heappop(self._due)
            status = _post(conns, url, body, {"Content-Type": "application/json"})
            with self._cv:
                if status is not None and (status // 100 == 2 or status == 404):
                    self.delivered += status // 100 == 2
                else:
                    self.failed_posts += 1
                    heapq.heappush(self._due, (time.monotonic() + self.retry, n, url, body))

    def pending(self):
        with self.lock:
            return len(self._due)


def _post(conns, url, body, headers, timeout=10):
    """POSTs body to url over a kept-alive connection from conns (one per
    host:port); returns the status, or None when no answer came."""
    u = urllib.parse.urlsplit(url)
    hp = (u.hostname, u.port)
    for attempt in (0, 1):
        c = conns.get(hp)
        if c is None:
            c = conns[hp] = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        try:
            c.request("POST", u.path + ("?" + u.query if u.query else ""), body=body, headers=headers)
            r = c.getresponse()
            r.read()
            if r.getheader("Connection", "").lower() == "close":
                c.close()
                del conns[hp]
            return r.status
        except (OSError, http.client.HTTPException):
            c.close()
            conns.pop(hp, None)
            # a kept-alive connection the server closed: one fresh try
    return None


# ---------------------------------------------------------------- A.2 notices

class NoticeSender:
    """The internal database's change notices: a thread POSTs each notice
    ({"table","id","source":"internal-db"}) to BASE/queues/notices/jobs with
    "Idempotency-Key: db-N", retrying every second until a 2xx. Nothing is
    lost when the engine is slow or restarting: the notice waits here."""

    def __init__(self, base, token=None):
        self.base = base
        self.token = token
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.todo = collections.deque()
        self.n = 0
        self.sent = 0
        self.retries = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="notices", daemon=True)
        self.thread.start()

    def notify(self, table, ids):
        with self.cv:
            for i in ids:
                self.n += 1
                self.todo.append((self.n, {"table": table, "id": i, "source": "internal-db"}))
            self.cv.notify()

    def idle(self):
        with self.lock:
            return not self.todo and not self.busy

    busy = False

    def _run(self):
        conns = {}
        url = self.base + "/queues/notices/jobs"
        while not self.stopping.is_set():
            with self.cv:
                while not self.todo:
                    self.busy = False
                    if self.stopping.is_set():
                        return
                    self.cv.wait(0.2)
                n, notice = self.todo[0]
                self.busy = True
            h = {"Content-Type": "application/json", "Idempotency-Key": "db-%d" % n}
            if self.token:
                h["Authorization"] = "Bearer " + self.token
            status = _post(conns, url, json.dumps(notice).encode("utf-8"), h)
            with self.cv:
                if status is not None and status // 100 == 2:
                    self.todo.popleft()
                    self.sent += 1
                    continue
                self.retries += 1
            if self.stopping.wait(1.0):
                return

    def close(self):
        self.stopping.set()
        with self.cv:
            self.cv.notify_all()
        self.thread.join(5)


# ---------------------------------------------------------------- the data

FIRST = ["Zoë", "Ana", "Bjørn", "Chloé", "Dmitri", "Émile", "Fatima", "Günther", "Hana", "Iñigo",
         "Jürgen", "Kasia", "Léa", "Mateo", "Noor", "Olúwasẹ́un", "Pål", "Quinn", "Renée", "Søren"]
LAST = ["O'Brien", "van der Berg", "Nguyễn", "Müller", "García", "Kowalski", "D'Angelo", "Smith",
        "Øvergaard", "Dupont \"Le Grand\"", "Costa, Jr.", "Ishikawa", "Łukasiewicz", "Brown"]
TITLES = ["", "Engineer", "Manager", "Director", "Analyst, Data", None]
INVALID = [
    # (what is wrong, how to break the record, the field and rule the reject must name)
    ("bad email", lambda r: r.update(email="not-an-email"), "email", "format"),
    ("missing last_name", lambda r: r.pop("last_name"), "last_name", "required"),
    ("string tenant", lambda r: r.update(tenant="12abc"), "tenant", "type"),
]
INVALID_EVERY = 40   # one user in 40 is invalid, cycling through INVALID


class Dataset:
    """What a run feeds and what must come out of it.

    tenants: list of tenant records; users: list of user records (in feed
    order); via_notice: user ids announced by the internal database (A.2)
    instead of the feed; valid_users / invalid: ids, and for each invalid id
    the (field, rule) its reject must name; geocoded: ids with a city."""


def make_dataset(n_users, n_tenants=8):
    d = Dataset()
    d.tenants = [{"id": t, "name": "Tenant %d — \"%s\"" % (t, ["Acme", "Globex", "Initech", "Umbrella",
                                                                "Hooli", "Vandelay", "Stark", "Wayne"][t % 8])}
                 for t in range(1, n_tenants + 1)]
    d.users = []
    d.valid_users, d.invalid, d.geocoded, d.via_notice = [], {}, [], []
    cities = list(CITIES)
    for i in range(1, n_users + 1):
        first = FIRST[i % len(FIRST)]
        last = LAST[(i * 7) % len(LAST)]
        r = collections.OrderedDict()
        r["id"] = i
        r["tenant"] = 1 + i % n_tenants
        r["first_name"] = first
        r["last_name"] = last
        title = TITLES[i % len(TITLES)]
        if title is not None:
            r["title"] = title
        r["email"] = "%s.%d@example.org" % ("".join(c for c in first.lower() if c.isascii() and c.isalpha())
                                             or "user", i)
        r["passhash"] = hashlib.sha1(b"pw%d" % i).hexdigest()[:40]
        r["salt"] = "s%08x" % (i * 2654435761 % 2 ** 32)
        if i % 3:
            r["permission"] = i % 5          # else the model's default (1)
        r["phone"] = "+31 20 %03d %04d" % (i % 1000, i % 10000)
        r["mobile"] = None if i % 4 == 0 else "+31 6 %08d" % i
        r["created_at"] = "2024-%02d-%02dT%02d:%02d:%02dZ" % (1 + i % 12, 1 + i % 28, i % 24, i % 60, (i * 7) % 60)
        if i % 5 == 0:
            r["updated_at"] = "2025-03-01T12:00:00.5+01:00"
        r["manager"] = None
        if i % 2 == 0:
            city, country = cities[i % len(cities)]
            r["address"] = "%d Main St, Apt \"%d\"" % (i, i % 10)
            r["city"] = city
            r["country"] = country
        else:
            # present and null: the record API says "no address"
            r["address"] = None
            r["city"] = None
            r["country"] = None
        if i % INVALID_EVERY == 7:
            what, breaks, field, rule = INVALID[(i // INVALID_EVERY) % len(INVALID)]
            breaks(r)
            d.invalid[i] = (field, rule, what)
        else:
            d.valid_users.append(i)
            if r["city"] is not None:
                d.geocoded.append(i)
        d.users.append(r)
        if i % 10 == 3:
            d.via_notice.append(i)
    return d
