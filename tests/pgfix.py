"""pgfix: a throwaway PostgreSQL cluster for the python end-to-end tests.

    pg = PgCluster()            # initdb + start; raises PgFixError when it cannot
    pg.dsn                      # libpq conninfo of the 'postgres' database
    db = pg.create_db()         # a fresh database; returns its DSN
    pg.psql("SELECT 1", dsn=db) # rows as lists of strings (None for NULL)
    pg.query_json(sql, dsn=db)  # rows as dicts, values typed by JSON (exact)
    pg.stop(); pg.start()       # a restart while a client runs (same socket)
    pg.crash(); pg.start()      # a crash (pg_ctl stop -m immediate), then recovery
    pg.close()                  # stop (pg_ctl stop -m fast) and remove everything

The cluster lives in a fresh directory (tempfile.mkdtemp, short so the socket
path fits) that holds the data directory, the log and the unix socket; nothing
listens on TCP (listen_addresses=''). The server binaries come from
$PGTMP_BINDIR, else the highest /usr/lib/postgresql/*/bin (Debian layout),
else $PATH. Authentication is trust, the superuser 'postgres', locale C,
UTF8. When the tests run as root, initdb, postgres and pg_ctl run as the
'postgres' user (runuser) and the directory is chowned to it, as in
bench/pgtmp.c. The cluster trades durability for speed (fsync=off,
synchronous_commit=off): a crash of the server process (crash(): pg_ctl stop
-m immediate, every backend killed, shared memory gone) loses the commits
whose WAL was still in its buffers, but not what reached the kernel, so a
client that commits durably (synchronous_commit=on in its own session) loses
nothing; a crash of the machine would. Standard library only.

Share one cluster per test class (setUpClass) and give each test a fresh
database (create_db) to keep the suite fast: ClusterTest does that.
"""
import csv
import glob
import io
import json
import os
import random
import shutil
import subprocess
import tempfile
import time

START_TIMEOUT = 60.0


class PgFixError(RuntimeError):
    pass


def find_bindir():
    """The directory with initdb, postgres and pg_ctl, or None."""
    def ok(d):
        return all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres", "pg_ctl"))

    env = os.environ.get("PGTMP_BINDIR")
    if env:
        return env if ok(env) else None
    best = None
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        try:
            v = float(d.split("/")[4])
        except ValueError:
            continue
        if ok(d) and (best is None or v > best[0]):
            best = (v, d)
    if best:
        return best[1]
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and ok(d):
            return d
    return None


def find_client(name, bindir=None):
    """A client program (psql): the server's bindir first, then $PATH."""
    if bindir and os.access(os.path.join(bindir, name), os.X_OK):
        return os.path.join(bindir, name)
    p = shutil.which(name)
    if not p:
        raise PgFixError("%s not found; install postgresql-client" % name)
    return p


class PgCluster:
    """One running PostgreSQL cluster in a private temporary directory."""

    def __init__(self, extra_conf=None):
        self.bindir = find_bindir()
        if not self.bindir:
            raise PgFixError("no PostgreSQL server binaries (initdb, postgres, pg_ctl) in "
                             "$PGTMP_BINDIR, /usr/lib/postgresql/*/bin or $PATH; "
                             "install postgresql")
        self.psql_bin = find_client("psql", self.bindir)
        self.as_user = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="pgfix.", dir="/tmp")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        # The port only names the socket file in our own directory.
        self.port = random.randint(20000, 60000)
        self.extra_conf = extra_conf or {}
        self.running = False
        self._ndb = 0
        try:
            if self.as_user:
                import pwd
                pw = pwd.getpwnam("postgres")
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._server(["initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                          "-E", "UTF8", "--locale=C", "--no-sync"], "initdb")
            self.start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ server
    def _server(self, argv, what, timeout=START_TIMEOUT + 30):
        argv = [os.path.join(self.bindir, argv[0])] + argv[1:]
        if self.as_user:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, cwd=self.dir, timeout=timeout)
        if p.returncode != 0:
            raise PgFixError("%s failed (exit %d): %s\n%s" % (
                what, p.returncode, p.stdout.decode("utf-8", "replace")[-2000:], self.log_tail()))
        return p

    def log_tail(self, n=20):
        try:
            with open(self.log, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def start(self):
        """Starts the server (pg_ctl start -w) on the same socket as before."""
        if self.running:
            return
        conf = {"listen_addresses": "''", "unix_socket_directories": "'%s'" % self.dir,
                "port": str(self.port), "fsync": "off", "full_page_writes": "off",
                "synchronous_commit": "off", "logging_collector": "off",
                "max_connections": "50"}
        conf.update(self.extra_conf)
        opts = " ".join("-c %s=%s" % kv for kv in conf.items())
        self._server(["pg_ctl", "start", "-D", self.data, "-l", self.log, "-w",
                      "-t", str(int(START_TIMEOUT)), "-o", opts], "pg_ctl start")
        self.running = True

    def stop(self):
        """Stops the server (fast shutdown: open connections are ended)."""
        if not self.running:
            return
        self.running = False
        try:
            self._server(["pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w", "-t", "30"],
                         "pg_ctl stop")
        except (PgFixError, subprocess.TimeoutExpired):
            self._server(["pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w"],
                         "pg_ctl stop -m immediate")

    def crash(self):
        """Crashes the server: pg_ctl stop -m immediate (the postmaster
        SIGQUITs every backend; no shutdown checkpoint, WAL buffers lost). The
        next start() runs crash recovery."""
        if not self.running:
            return
        self.running = False
        self._server(["pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w", "-t", "30"],
                     "pg_ctl stop -m immediate")

    def close(self):
        """Stops the server and removes the directory; safe to call twice."""
        if self.dir is None:
            return
        try:
            if self.running or os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self.running = True
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # ------------------------------------------------------------ clients
    def dsn_for(self, dbname):
        return "host=%s port=%d dbname=%s user=postgres" % (self.dir, self.port, dbname)

    @property
    def dsn(self):
        return self.dsn_for("postgres")

    def create_db(self, prefix="t"):
        """Creates a fresh empty database and returns its DSN."""
        self._ndb += 1
        name = "%s_%d_%d" % (prefix, os.getpid(), self._ndb)
        self.psql("CREATE DATABASE %s" % name)
        return self.dsn_for(name)

    def psql_raw(self, sql, dsn=None, check=True, timeout=120):
        """Runs sql with psql (ON_ERROR_STOP, UTC) and returns the CompletedProcess."""
        env = dict(os.environ, PGTZ="UTC", PGCLIENTENCODING="UTF8")
        p = subprocess.run([self.psql_bin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv",
                            "-d", dsn or self.dsn],
                           input=sql.encode("utf-8"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise PgFixError("psql failed (exit %d) on %r:\n%s" % (
                p.returncode, sql[:500], p.stderr.decode("utf-8", "replace")))
        return p

    def psql(self, sql, dsn=None):
        """Runs sql; returns the rows of the last statement's result as lists
        of strings (header dropped), NULL as None. Use query_json when ''
        versus NULL matters inside text."""
        # A NULL marker no value of ours can hold.
        sql = "\\pset null '\\x01NULL\\x01'\n" + sql
        p = self.psql_raw(sql, dsn)
        text = p.stdout.decode("utf-8")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        out = []
        for r in rows[1:] if rows else []:
            out.append([None if v == "\x01NULL\x01" else v for v in r])
        return out

    def scalar(self, sql, dsn=None):
        rows = self.psql(sql, dsn)
        return rows[0][0] if rows else None

    def query_json(self, sql, dsn=None):
        """Runs one SELECT and returns its rows as dicts, exactly: numbers as
        int or decimal.Decimal, NULL as None, text as str."""
        import decimal
        wrapped = "SELECT coalesce(json_agg(q), '[]')::text FROM (%s) q" % sql
        p = self.psql_raw("\\pset tuples_only on\n" + wrapped, dsn)
        text = p.stdout.decode("utf-8")
        # --csv quotes the one field: read it back with csv (a big result is
        # one big field: csv's default limit is 128 KiB).
        if len(text) >= csv.field_size_limit():
            csv.field_size_limit(len(text) + 1)
        rows = list(csv.reader(io.StringIO(text, newline="")))
        return json.loads(rows[0][0], parse_float=decimal.Decimal)


def wait_until(fn, timeout, interval=0.05):
    """Polls fn until it returns a true value (returned) or timeout passes (None)."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


class ClusterTest:
    """A mixin for a unittest.TestCase class: one cluster for the class
    (cls.pg, started with cluster_conf), and a fresh database on it for each
    test (self.dsn), the cluster started again first if a test stopped it."""

    cluster_conf = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pg = PgCluster(extra_conf=cls.cluster_conf)

    @classmethod
    def tearDownClass(cls):
        cls.pg.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if not self.pg.running:
            self.pg.start()
        self.dsn = self.pg.create_db()
