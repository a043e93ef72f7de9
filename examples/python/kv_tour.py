#!/usr/bin/env python3
"""A tour of Micronode's HTTP API with the Python 3 standard library only.

    MICRONODE_URL=http://127.0.0.1:5310 python3 examples/python/kv_tour.py

Server from MICRONODE_URL (default http://127.0.0.1:5310, a path prefix is kept); token from
MICRONODE_TOKEN, sent as `Authorization: Bearer …` when set and never printed. No arguments.
Every step checks the answer against docs/API.md; any unexpected answer prints what was
expected and what came, and exits 1. Each run uses a bucket of its own (ex-py-<pid>-<ms>).

Steps: put, get, a compare-and-set loop with two concurrent incrementers, a paged listing,
a watch that disconnects and resumes with Last-Event-ID, a transaction, a TTL.
"""

import base64
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse

URL = os.environ.get("MICRONODE_URL", "http://127.0.0.1:5310").rstrip("/")
TOKEN = os.environ.get("MICRONODE_TOKEN") or None
TIMEOUT = 10.0  # seconds, for connecting plus a whole answer
WATCH_READ_TIMEOUT = 5.0  # seconds without a byte on a watch stream
TOTAL_BOUND = 90  # seconds for the whole tour

_target = urllib.parse.urlsplit(URL)
if _target.scheme not in ("http", "https") or not _target.hostname:
    sys.exit(f"kv_tour: MICRONODE_URL must be an http:// or https:// URL, got {URL!r}")
PREFIX = _target.path.rstrip("/")
BUCKET = f"ex-py-{os.getpid()}-{int(time.time() * 1000)}"


class TourError(Exception):
    pass


def fail(msg):
    raise TourError(msg)


def connect(timeout=TIMEOUT):
    cls = http.client.HTTPSConnection if _target.scheme == "https" else http.client.HTTPConnection
    return cls(_target.hostname, _target.port, timeout=timeout)


def headers_for(extra=None):
    h = {}
    if TOKEN:
        h["Authorization"] = f"Bearer {TOKEN}"
    h.update(extra or {})
    return h


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # http.client.HTTPMessage: case-insensitive
        self.body = body

    def header(self, name):
        return self.headers.get(name)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            fail(f"expected a JSON body, got {self.body[:200]!r}")

    def describe(self):
        """Status plus the error envelope's code and message, when there is one."""
        text = str(self.status)
        try:
            env = json.loads(self.body)
            if isinstance(env, dict) and "code" in env:
                text += f" {env['code']}: {env.get('message')} (request {env.get('request_id')})"
        except ValueError:
            pass
        return text


def call(method, path, body=None, headers=None):
    """One request on a fresh connection; the whole answer, whatever its status."""
    conn = connect()
    try:
        h = headers_for(headers)
        if body is not None or method in ("PUT", "POST"):
            body = body if body is not None else b""
            h["Content-Length"] = str(len(body))  # the server refuses chunked uploads (411)
        conn.request(method, PREFIX + path, body=body, headers=h)
        resp = conn.getresponse()
        return Answer(resp.status, resp.headers, resp.read())
    except (OSError, http.client.HTTPException) as e:
        fail(f"{method} {path}: no answer from {URL}: {e}")
    finally:
        conn.close()


def expect(answer, statuses, what):
    if answer.status not in statuses:
        want = " or ".join(map(str, statuses))
        fail(f"{what}: expected {want}, got {answer.describe()}")
    return answer


def key_path(key):
    # Segments are percent-encoded (space → %20, + → %2B, é → %C3%A9); `/` stays a separator.
    return f"/v1/kv/{BUCKET}/" + urllib.parse.quote(key, safe="/")


def query(**params):
    # application/x-www-form-urlencoded: space → +, and a literal + → %2B.
    return urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


def etag_of(answer, what):
    tag = answer.header("ETag")
    if not tag or not (tag.startswith('"') and tag.endswith('"')):
        fail(f"{what}: expected a quoted ETag, got {tag!r}")
    return tag


def revision_of(answer, what):
    rev = answer.header("Micronode-Revision")
    if rev is None or not rev.isdigit():
        fail(f"{what}: expected a Micronode-Revision header, got {rev!r}")
    return int(rev)


def step(title):
    print(f"== {title}", flush=True)


# --- 1. put, get -------------------------------------------------------------------------------


def put_and_get():
    step("put and get")
    a = expect(
        call("PUT", key_path("hello"), b"world", {"Content-Type": "text/plain"}), [201], "PUT hello"
    )
    tag = etag_of(a, "PUT hello")
    print(f"PUT {BUCKET}/hello -> 201, ETag {tag}, revision {revision_of(a, 'PUT hello')}")
    g = expect(call("GET", key_path("hello")), [200], "GET hello")
    if g.body != b"world":
        fail(f"GET hello: expected body b'world', got {g.body!r}")
    if g.header("Content-Type") != "text/plain":
        fail(f"GET hello: expected Content-Type text/plain, got {g.header('Content-Type')!r}")
    if etag_of(g, "GET hello") != tag:
        fail(f"GET hello: expected ETag {tag}, got {g.header('ETag')}")
    print(f"GET {BUCKET}/hello -> 200 {g.body.decode()!r}, ETag {tag}")


# --- 2. compare-and-set ------------------------------------------------------------------------

INCREMENTS = 10  # per incrementer
MAX_TRIES = 50  # per increment


def increment(key, stats, barrier=None):
    """Read the counter and its ETag, write value+1 with If-Match; on 412 read again and retry."""
    for _ in range(MAX_TRIES):
        g = expect(call("GET", key_path(key)), [200], f"GET {key}")
        tag = etag_of(g, f"GET {key}")
        value = int(g.body)
        if barrier is not None:
            # Both incrementers have read the same ETag before either writes: one must get 412.
            barrier.wait(timeout=TIMEOUT)
            barrier = None
        p = call("PUT", key_path(key), str(value + 1).encode(), {"If-Match": tag})
        if p.status == 204:
            return
        expect(p, [412], f"PUT {key} If-Match {tag}")
        stats["conflicts"] += 1
    fail(f"increment {key}: still conflicting after {MAX_TRIES} tries")


def compare_and_set():
    step("compare-and-set: two concurrent incrementers")
    key = "counter"
    expect(call("PUT", key_path(key), b"0", {"If-None-Match": "*"}), [201], "PUT counter (create only)")
    barrier = threading.Barrier(2)
    errors, threads = [], []
    stats = [{"conflicts": 0}, {"conflicts": 0}]

    def worker(i):
        try:
            increment(key, stats[i], barrier)
            for _ in range(INCREMENTS - 1):
                increment(key, stats[i])
        except Exception as e:  # reported by the main thread
            errors.append(e)
            barrier.abort()

    for i in range(2):
        threads.append(threading.Thread(target=worker, args=(i,), daemon=True))
        threads[-1].start()
    for t in threads:
        t.join(timeout=60)
        if t.is_alive():
            fail("compare-and-set: an incrementer did not finish within 60 s")
    if errors:
        raise errors[0] if isinstance(errors[0], TourError) else TourError(repr(errors[0]))
    conflicts = stats[0]["conflicts"] + stats[1]["conflicts"]
    final = expect(call("GET", key_path(key)), [200], "GET counter")
    print(f"2 incrementers x {INCREMENTS}: counter = {final.body.decode()}, {conflicts} x 412 retried")
    if final.body != str(2 * INCREMENTS).encode():
        fail(f"compare-and-set: expected counter {2 * INCREMENTS}, got {final.body!r} (lost update)")
    if conflicts < 1:
        fail("compare-and-set: expected at least one 412 (both incrementers wrote with the same ETag)")


# --- 3. list with paging -----------------------------------------------------------------------

LIST_KEYS = ["list/alpha one", "list/alpha+two", "list/beta three", "list/café", "list/delta/five"]


def list_paging():
    step("list: limit=2, following next")
    for k in LIST_KEYS:
        expect(call("PUT", key_path(k), k.encode()), [201], f"PUT {k!r}")
    seen, after, pages = [], None, 0
    while True:
        pages += 1
        if pages > len(LIST_KEYS) + 1:
            fail("list: too many pages (is `next` being followed correctly?)")
        a = expect(
            call("GET", f"/v1/kv/{BUCKET}?" + query(prefix="list/", limit=2, after=after)),
            [200],
            "list page",
        )
        page = a.json()
        keys, nxt = page.get("keys"), page.get("next", "missing")
        if not isinstance(keys, list) or len(keys) > 2 or nxt == "missing":
            fail(f"list: expected at most 2 keys and a next field, got {page}")
        print(f"page {pages}: {keys} next={nxt!r}")
        seen += keys
        if nxt is None:
            break
        if not keys or nxt != keys[-1]:
            fail(f"list: expected next to be the page's last key, got {page}")
        after = nxt
    want = sorted(LIST_KEYS, key=lambda k: k.encode())
    if seen != want:
        fail(f"list: expected {want} (each once, in byte order), got {seen}")
    if pages != 3:
        fail(f"list: expected 3 pages of at most 2 keys, got {pages}")


# --- 4. watch, disconnect, resume --------------------------------------------------------------


class Watch:
    """One event stream, its server-sent events parsed by hand."""

    def __init__(self, path, headers=None):
        self.conn = connect(timeout=TIMEOUT)
        try:
            self.conn.request("GET", PREFIX + path, headers=headers_for(headers))
            self.resp = self.conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            fail(f"GET {path}: no answer from {URL}: {e}")
        if self.resp.status != 200:
            a = Answer(self.resp.status, self.resp.headers, self.resp.read())
            self.close()
            fail(f"GET {path}: expected 200, got {a.describe()}")
        ctype = self.resp.headers.get("Content-Type", "")
        if not ctype.startswith("text/event-stream"):
            self.close()
            fail(f"GET {path}: expected text/event-stream, got {ctype!r}")
        self.conn.sock.settimeout(WATCH_READ_TIMEOUT)

    def next_event(self):
        """The next event as {id, event, data}; comments (`: watching`, keep-alives) skipped."""
        ev = {"id": None, "event": "message", "data": []}
        while True:
            try:
                raw = self.resp.readline()
            except (OSError, http.client.HTTPException) as e:
                fail(f"watch: no event within {WATCH_READ_TIMEOUT} s ({e})")
            if not raw:
                fail("watch: the server ended the stream")
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == "":
                if ev["data"]:
                    ev["data"] = json.loads("\n".join(ev["data"]))
                    return ev
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                ev["data"].append(value)
            elif field == "id":
                ev["id"] = value
            elif field == "event":
                ev["event"] = value

    def wait_open(self):
        """Reads up to the `: watching` comment the stream opens with."""
        try:
            line = self.resp.readline()
        except (OSError, http.client.HTTPException) as e:
            fail(f"watch: stream did not open within {WATCH_READ_TIMEOUT} s ({e})")
        if not line.startswith(b":"):
            fail(f"watch: expected the stream to open with a comment, got {line!r}")

    def close(self):
        self.conn.close()


def watch_resume():
    step("watch: start at a revision, disconnect after 2 events, resume with Last-Event-ID")
    # The revision to start from: any KV answer's Micronode-Revision (here an empty listing).
    a = expect(call("GET", f"/v1/kv/{BUCKET}?" + query(prefix="watch/")), [200], "list watch/")
    since = revision_of(a, "list watch/")
    path = f"/v1/watch/{BUCKET}?" + query(prefix="watch/", since=since)
    w = Watch(path)
    w.wait_open()
    written = {}
    for k in ["watch/one", "watch/two", "watch/three"]:
        p = expect(call("PUT", key_path(k), b"v"), [201], f"PUT {k}")
        written[k] = revision_of(p, f"PUT {k}")
    got = []
    try:
        for _ in range(2):
            got.append(w.next_event())
    finally:
        w.close()
    last_id = got[-1]["id"]
    print(f"watch since={since}: {[(e['event'], e['data']['key']) for e in got]}, last id {last_id}")
    if last_id is None:
        fail(f"watch: expected an id on the event, got {got[-1]}")
    w = Watch(f"/v1/watch/{BUCKET}?" + query(prefix="watch/"), {"Last-Event-ID": last_id})
    try:
        got.append(w.next_event())
        # Nothing else may follow: a duplicate would arrive right away.
        w.conn.sock.settimeout(0.5)
        try:
            extra = w.resp.readline()
            while extra.startswith(b":") or extra in (b"\n", b"\r\n"):
                extra = w.resp.readline()
            fail(f"watch: expected no further event after resuming, got {extra!r}")
        except (OSError, http.client.HTTPException):
            pass  # timed out: no more events, as expected
    finally:
        w.close()
    print(f"resumed with Last-Event-ID {last_id}: {got[-1]['event']} {got[-1]['data']['key']}")
    keys = [e["data"]["key"] for e in got]
    revs = [e["data"]["revision"] for e in got]
    if keys != list(written) or revs != list(written.values()):
        fail(f"watch: expected {list(written.items())} once each, in order; got {list(zip(keys, revs))}")
    if any(e["event"] != "put" or e["id"] != str(e["data"]["revision"]) for e in got):
        fail(f"watch: expected put events with id = revision, got {got}")


# --- 5. transaction ----------------------------------------------------------------------------


def b64(s):
    return base64.b64encode(s.encode()).decode()


def transaction():
    step("transaction: move 30 from alice to bob if neither changed")
    tags = {}
    for k, v in [("bank/alice", "100"), ("bank/bob", "50")]:
        tags[k] = etag_of(expect(call("PUT", key_path(k), v.encode()), [201], f"PUT {k}"), f"PUT {k}")
    txn = {
        "if": [{"bucket": BUCKET, "key": k, "etag": tags[k]} for k in tags],
        "then": [
            {"op": "put", "bucket": BUCKET, "key": "bank/alice", "value": b64("70"), "content_type": "text/plain"},
            {"op": "put", "bucket": BUCKET, "key": "bank/bob", "value": b64("80"), "content_type": "text/plain"},
        ],
        "else": [{"op": "get", "bucket": BUCKET, "key": k} for k in tags],
    }
    body = json.dumps(txn).encode()
    a = expect(call("POST", "/v1/txn", body, {"Content-Type": "application/json"}), [200], "POST /v1/txn")
    res = a.json()
    print(f"txn: {json.dumps(res)}")
    if res.get("succeeded") is not True or [r.get("op") for r in res.get("results", [])] != ["put", "put"]:
        fail(f"txn: expected succeeded:true with two put results, got {res}")
    if revision_of(a, "POST /v1/txn") != res.get("revision"):
        fail(f"txn: expected Micronode-Revision = revision {res.get('revision')}")
    for k, v in [("bank/alice", b"70"), ("bank/bob", b"80")]:
        g = expect(call("GET", key_path(k)), [200], f"GET {k}")
        if g.body != v:
            fail(f"txn: expected {k} = {v!r}, got {g.body!r}")
    # The same transaction again: its ETags are now stale, so the else branch runs.
    a = expect(call("POST", "/v1/txn", body, {"Content-Type": "application/json"}), [200], "POST /v1/txn (stale)")
    res = a.json()
    print(f"txn again (stale ETags): {json.dumps(res)}")
    values = [base64.b64decode(r.get("value", "")) for r in res.get("results", [])]
    if res.get("succeeded") is not False or values != [b"70", b"80"]:
        fail(f"txn: expected succeeded:false with the current values 70 and 80, got {res}")


# --- 6. TTL ------------------------------------------------------------------------------------


def ttl():
    step("TTL: a key that lives 1 second")
    before = time.time()
    a = expect(call("PUT", key_path("ttl/short") + "?" + query(ttl=1), b"soon gone"), [201], "PUT ttl=1")
    exp = a.header("Micronode-Expires-At")
    if exp is None or not exp.isdigit() or not (before + 1 <= int(exp) <= time.time() + 3):
        fail(f"PUT ttl=1: expected Micronode-Expires-At about now + 1 s, got {exp!r}")
    print(f"PUT ttl=1 -> 201, Micronode-Expires-At {exp}")
    g = expect(call("GET", key_path("ttl/short")), [200], "GET ttl/short")
    if g.header("Micronode-Expires-At") != exp:
        fail(f"GET ttl/short: expected Micronode-Expires-At {exp}, got {g.header('Micronode-Expires-At')!r}")
    deadline = int(exp) + 3
    while True:
        g = expect(call("GET", key_path("ttl/short")), [200, 404], "GET ttl/short")
        if g.status == 404:
            print(f"GET after expiry -> 404 (at {time.time():.1f}, expiry {exp})")
            return
        if time.time() > deadline:
            fail(f"TTL: expected 404 from {exp} on, still 200 at {time.time():.1f}")
        time.sleep(0.2)


def main():
    signal.signal(signal.SIGALRM, lambda *_: (print(f"kv_tour: FAILED: not done within {TOTAL_BOUND} s",
                                                    file=sys.stderr, flush=True), os._exit(1)))
    signal.alarm(TOTAL_BOUND)
    print(f"server {URL}, bucket {BUCKET}, token {'set' if TOKEN else 'not set'}")
    try:
        put_and_get()
        compare_and_set()
        list_paging()
        watch_resume()
        transaction()
        ttl()
    except TourError as e:
        print(f"kv_tour: FAILED: {e}", file=sys.stderr)
        return 1
    print("kv_tour: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
