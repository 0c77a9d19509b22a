"""End-to-end tests of the engine's listener as configured in the pipeline
file (`listen:`): the token rules of `pickline check`, TLS, an IPv6 address
in the callback URL, half-closed clients, the connection limits, strict
framing. The real `pickline` against real sockets; the C tests of
engine/runtime/listen.c are in tests/test_listen.c and
tests/test_listen_strict.c.

Each test has a fresh temp dir and fresh fixtures; set
PICKLINE_KEEP_TEST_DIRS=1 to keep the dirs of failed tests for a look."""
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase, Identity, RecordAPI, Sink, depth, hostile_record
from plhelp import SLOW, http_request, listen_block, pipeline, self_signed_cert, wait_for

TOKEN = "tk-5c1e0f3a9b7d42e8a61f"  # 22 characters

def exchange(port, request=b"", half_close=False, timeout=5):
    """Sends request on a new connection to 127.0.0.1:port (then, with
    half_close, shuts the connection for writing: "that was all") and reads
    the answer until the server closes; returns every byte it sent."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        s.sendall(request)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class ListenerTest(EngineTestCase):
    """The pipeline is hop.yml, one noop stage behind the listener whose
    listen: section each test writes (listen_block: its lines, from line 2
    of the file on)."""

    def check(self, listen, env=None, name="pipeline.yml"):
        """`pickline check` of hop.yml with the listen: section `listen`;
        returns (exit code, stdout + stderr)."""
        e = {k: v for k, v in os.environ.items() if k != "PL_TEST_TOKEN"}
        e.update(env or {})
        r, _ = self.check_pipeline(pipeline("hop", listen=listen), name=name, env=e)
        return r.code, r.out + r.err

    def engine(self, listen, **kw):
        """An Engine (checked, not started) of hop.yml with the listen:
        section `listen` (${port} is the engine's port)."""
        return super().engine(pipeline("hop", listen=listen), **kw)

    # ------------------------------------------------------------ tokens

    def test_token_rules_at_check(self):
        short = "Zq7xK"
        # A short literal token: refused with file:line, never shown.
        rc, out = self.check(listen_block(port=7390, token=short))
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:3: listen: token is shorter than 16 characters", out)
        self.assertNotIn(short, out)
        # One with a space (it would break the header).
        rc, out = self.check(listen_block(port=7390, token='"%s %s"' % (TOKEN, TOKEN)))
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:3: listen: token holds a space", out)
        self.assertNotIn(TOKEN, out)
        # From the environment: a short value is refused, naming the variable only.
        rc, out = self.check(listen_block(port=7390, token="env:PL_TEST_TOKEN"), env={"PL_TEST_TOKEN": short})
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:3: listen: token: the token in env:PL_TEST_TOKEN is shorter than 16", out)
        self.assertNotIn(short, out)
        rc, out = self.check(listen_block(port=7390, token="env:PL_TEST_TOKEN"), env={})
        self.assertEqual(rc, 1, out)
        self.assertIn("PL_TEST_TOKEN is not set", out)
        rc, out = self.check(listen_block(port=7390, token="env:PL_TEST_TOKEN"), env={"PL_TEST_TOKEN": TOKEN})
        self.assertEqual(rc, 0, out)
        self.assertNotIn(TOKEN, out)
        # From a file: the newline an editor leaves is not part of it.
        tf = self.write("token", TOKEN + "\n")
        rc, out = self.check(listen_block(port=7390, token="file:" + tf))
        self.assertEqual(rc, 0, out)
        self.assertNotIn(TOKEN, out)
        self.write("short", short + "\n")
        rc, out = self.check(listen_block(port=7390, token="file:" + os.path.join(self.dir, "short")))
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:3: listen: token: the token in file:", out)
        self.assertNotIn(short, out)
        rc, out = self.check(listen_block(port=7390, token="file:" + os.path.join(self.dir, "nothing")))
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:3: listen: token: cannot read", out)
        fifo = os.path.join(self.dir, "fifo")
        os.mkfifo(fifo)  # would block a reader forever
        rc, out = self.check(listen_block(port=7390, token="file:" + fifo))
        self.assertEqual(rc, 1, out)
        self.assertIn("cannot read %s: not a regular file" % fifo, out)

    def test_beyond_loopback_needs_a_token(self):
        rc, out = self.check(listen_block(address="0.0.0.0", port=7390))
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:2: listen: address 0.0.0.0 is reachable from other machines", out)
        rc, out = self.check(listen_block(address="0.0.0.0", port=7390, token="env:PL_TEST_TOKEN"),
                             env={"PL_TEST_TOKEN": TOKEN})
        self.assertEqual(rc, 0, out)
        rc, out = self.check(listen_block(address="0.0.0.0", port=7390, insecure="true"))
        self.assertEqual(rc, 0, out)
        for a in ("127.0.0.1", "127.9.9.9", "::1", "localhost"):
            rc, out = self.check(listen_block(address="'%s'" % a, port=7390))
            self.assertEqual(rc, 0, "%s: %s" % (a, out))
        rc, out = self.check(listen_block(address="999.1.1.1", port=7390))
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:2: listen: address: '999.1.1.1' is not an IPv4 address", out)
        rc, out = self.check(listen_block(address="'[::1]'", port=7390))
        self.assertEqual(rc, 1, out)
        self.assertIn("is not an IPv6 address (write it without brackets", out)

        # insecure: true serves it, and says so at start.
        eng = self.engine(listen_block(address="0.0.0.0", port="${port}", insecure="true"))
        eng.start()
        r = eng.request("GET", "/queues")
        self.assertEqual(r.status, 200, r)
        self.assertIn("listen: 0.0.0.0 is reachable from other machines and no token is set", eng.stderr())

    def test_token_from_a_file_is_required_and_never_logged(self):
        tf = self.write("token", TOKEN + "\n")
        eng = self.engine(listen_block(address="0.0.0.0", port="${port}", token="file:" + tf), token=TOKEN)
        eng.start()
        self.assertEqual(eng.put("retrieve", {"id": 1}).status, 202)
        for h in ({}, {"Authorization": "Bearer " + TOKEN[:-1]}, {"Authorization": "Bearer " + TOKEN + "x"}):
            r = eng.request("POST", "/queues/retrieve/jobs", {"id": 2}, headers=h, auth=False)
            self.assertEqual(r.status, 401, r)
        wait_for(lambda: depth(eng.stats(), "final") == 1, 10, what="the job through the hop")
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())
        self.assertNotIn(TOKEN, eng.stderr())
        self.assertNotIn(TOKEN[:16], eng.stderr())

    # ------------------------------------------------------------ TLS

    def https(self, port, cafile, method, path, body=None, headers=None):
        ctx = ssl.create_default_context(cafile=cafile)
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10 * SLOW)
        try:
            h = dict(headers or {})
            if body is not None:
                body = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def test_tls(self):
        cert, key = self_signed_cert(self.dir)
        tf = self.write("token", TOKEN)
        listen = "  port: ${port}\n  token: file:%s\n  tls: {cert: %s, key: %s}" % (tf, cert, key)
        eng = self.engine(listen, token=TOKEN)
        eng.check()
        eng.start(wait=False)

        def up():
            if not eng.running():
                raise AssertionError("pickline exited\n" + eng.stderr_tail())
            try:
                return self.https(eng.port, cert, "GET", "/health")[0] == 200
            except OSError:
                return False
        wait_for(up, 15, what="GET /health over TLS")
        st, body = self.https(eng.port, cert, "POST", "/queues/retrieve/jobs", {"id": "t1"},
                              {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(st, 202, body)
        st, body = self.https(eng.port, cert, "POST", "/queues/retrieve/jobs", {"id": "t2"})
        self.assertEqual(st, 401, body)
        self.assertEqual(list(json.loads(body)), ["error"])
        # Verification is real: a client that trusts another certificate refuses it.
        other, _ = self_signed_cert(os.path.join(self.dir, "other"))
        with self.assertRaises(ssl.SSLError):
            self.https(eng.port, other, "GET", "/health")
        # Plain HTTP to the TLS port gets no HTTP answer.
        with self.assertRaises((http.client.HTTPException, OSError)):
            r = http_request("GET", "http://127.0.0.1:%d/health" % eng.port, timeout=3)
            raise AssertionError("plain HTTP answered on the TLS port: %r" % r)
        wait_for(lambda: depth(eng.stats(), "final") == 1, 10, what="the job through the hop")
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_tls_files_checked(self):
        cert, key = self_signed_cert(self.dir)
        rc, out = self.check("  port: 7390\n  tls: {cert: %s}" % cert)
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:3: listen: tls: needs both cert and key", out)
        rc, out = self.check("  port: 7390\n  tls: {cert: %s, key: %s}" % (key, key))
        self.assertEqual(rc, 1, out)
        self.assertIn("pipeline.yml:3: listen: tls: cert: %s is not a PEM certificate" % key, out)
        rc, out = self.check("  port: 7390\n  tls: {cert: %s, key: %s/none.pem}" % (cert, self.dir))
        self.assertEqual(rc, 1, out)
        self.assertIn("listen: tls: key: cannot read", out)
        rc, out = self.check("  port: 7390\n  tls: {cert: %s, key: %s}" % (cert, key))
        self.assertEqual(rc, 0, out)
        with open(key) as f:
            self.assertNotIn(f.read().splitlines()[1], out)

    # ------------------------------------------------------------ IPv6

    def test_ipv6_callback_url_is_bracketed(self):
        if not ipv6_loopback():
            self.skipTest("no IPv6 loopback (::1) on this machine")
        api = self.fx.add(RecordAPI())
        ident = self.fx.add(Identity(delay=0.1, retry=0.25, give_up=30))
        sink = self.fx.add(Sink())
        api.add("u1", hostile_record("u1", 0))
        eng = super().engine(pipeline("async", address="'::1'"), token=TOKEN, records=api.url,
                             identity=ident.url, sink=sink.url)
        eng.base = "http://[::1]:%d" % eng.port
        eng.start()
        self.assertEqual(eng.put("retrieve", {"id": "u1"}).status, 202)
        wait_for(lambda: ident.submissions, 15, what="the identity submission")
        url = ident.submissions[0]["callback_url"]
        self.assertTrue(url.startswith("http://[::1]:%d/callbacks/verify/" % eng.port), url)
        wait_for(lambda: depth(eng.stats(), "final") == 1, 20, what="the callback to land")
        self.assertTrue(ident.delivered)

    # ------------------------------------------------------------ half-closed clients

    def test_half_closed_clients_get_their_202(self):
        eng = self.engine(listen_block(port="${port}", token=TOKEN), token=TOKEN)
        eng.start()
        threads, each = 20, 10
        got = []
        lock = threading.Lock()

        def client(t):
            for k in range(each):
                body = json.dumps({"id": "%d-%d" % (t, k)}).encode()
                req = ("POST /queues/retrieve/jobs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                       "Content-Type: application/json\r\nIdempotency-Key: hc-%d-%d\r\n"
                       "Content-Length: %d\r\n\r\n" % (TOKEN, t, k, len(body))).encode() + body
                try:
                    data = exchange(eng.port, req, half_close=True, timeout=10)
                except OSError as e:
                    data = ("error: %s" % e).encode()
                with lock:
                    got.append(data.split(b"\r\n", 1)[0])

        ts = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        answered = sum(1 for g in got if g.startswith(b"HTTP/1.1 202"))
        self.assertEqual(answered, threads * each, "status lines: %r" % sorted(set(got)))
        self.assertEqual(eng.stats()["retrieve"]["puts"], threads * each)

    # ------------------------------------------------------------ limits and framing

    def test_limits_from_the_file(self):
        eng = self.engine(listen_block(port="${port}", max_conns_per_ip=2, request_timeout=1, idle_timeout=30))
        eng.start()
        a = socket.create_connection(("127.0.0.1", eng.port))
        b = socket.create_connection(("127.0.0.1", eng.port))
        a.sendall(b"GET /queues HTTP/1.1\r\nHost: t\r\n")  # never finished
        b.sendall(b"POST /queues/retrieve/jobs HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{")
        time.sleep(0.2)
        # A third connection from this address: 429 in JSON, closed.
        data = exchange(eng.port)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 429 "), data)
        self.assertIn("too many connections from your address", json.loads(body)["error"])
        # The two trickle on, yet are closed at the request deadline (1 s).
        t0 = time.monotonic()
        closed = set()
        while len(closed) < 2 and time.monotonic() - t0 < 10 * SLOW:
            for name, s in (("a", a), ("b", b)):
                if name in closed:
                    continue
                try:
                    s.send(b"x")
                    s.setblocking(False)
                    if s.recv(1) == b"":
                        closed.add(name)
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(name)
                finally:
                    s.setblocking(True)
            time.sleep(0.1)
        a.close()
        b.close()
        self.assertEqual(closed, {"a", "b"})
        self.assertEqual(eng.stats()["retrieve"]["puts"], 0)
        self.assertIn("closed with a request unfinished after 1 s", self.wait_log(eng, "unfinished"))

    def wait_log(self, eng, what):
        wait_for(lambda: what in eng.stderr(), 15, what="%r in the log" % what)
        return eng.stderr()

    def test_ambiguous_framing_is_refused(self):
        eng = self.engine(listen_block(port="${port}"))
        eng.start()
        for req in (b"POST /queues/retrieve/jobs HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                    b"Content-Length: 12\r\n\r\n{}\"id\":1}   ",
                    b"POST /queues/retrieve/jobs HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                    b"POST /queues/retrieve/jobs HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"):
            data = exchange(eng.port, req)
            head, _, body = data.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 400 "), data)
            self.assertIn(b"Content-Type: application/json", head)
            self.assertEqual(list(json.loads(body)), ["error"])
        self.assertEqual(eng.stats()["retrieve"]["puts"], 0)


if __name__ == "__main__":
    unittest.main()
