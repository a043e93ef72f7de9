#!/usr/bin/env node
// A tour of Micronode's HTTP API with Node 18+'s built-in fetch only (no npm packages).
//
//     MICRONODE_URL=http://127.0.0.1:5310 node examples/js/kv_tour.mjs
//
// Server from MICRONODE_URL (default http://127.0.0.1:5310, a path prefix is kept); token from
// MICRONODE_TOKEN, sent as `Authorization: Bearer …` when set and never printed. No arguments.
// Every step checks the answer against docs/API.md; any unexpected answer prints what was
// expected and what came, and exits 1. Each run uses a bucket of its own (ex-js-<pid>-<ms>).
//
// Steps: put, get, a compare-and-set loop with two concurrent incrementers, a paged listing,
// a watch (server-sent events parsed by hand from the body stream) that disconnects and
// resumes with Last-Event-ID, a transaction, a TTL.

const URL_ = (process.env.MICRONODE_URL || "http://127.0.0.1:5310").replace(/\/+$/, "");
const TOKEN = process.env.MICRONODE_TOKEN || null;
const TIMEOUT_MS = 10_000; // connecting plus a whole answer
const WATCH_READ_TIMEOUT_MS = 5_000; // without an event on a watch stream
const TOTAL_BOUND_MS = 90_000; // the whole tour
const BUCKET = `ex-js-${process.pid}-${Date.now()}`;

if (!/^https?:\/\/[^/]+/.test(URL_)) {
  console.error(`kv_tour: MICRONODE_URL must be an http:// or https:// URL, got ${JSON.stringify(URL_)}`);
  process.exit(1);
}

class TourError extends Error {}
const fail = (msg) => {
  throw new TourError(msg);
};

function headersFor(extra = {}) {
  const h = { ...extra };
  if (TOKEN) h.authorization = `Bearer ${TOKEN}`;
  return h;
}

// Status plus the error envelope's code and message, when there is one.
function describe(status, text) {
  try {
    const env = JSON.parse(text);
    if (env && typeof env === "object" && "code" in env) {
      return `${status} ${env.code}: ${env.message} (request ${env.request_id})`;
    }
  } catch {}
  return String(status);
}

// One request; the whole answer, whatever its status. fetch sends Content-Length for string
// and byte bodies (the server refuses chunked uploads with 411).
async function call(method, path, body, headers) {
  let res;
  try {
    res = await fetch(URL_ + path, {
      method,
      body,
      headers: headersFor(headers),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const buf = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, body: buf, text: buf.toString("utf8") };
  } catch (e) {
    fail(`${method} ${path}: no answer from ${URL_}: ${e.cause?.message || e.message}`);
  }
}

function expect(a, statuses, what) {
  if (!statuses.includes(a.status)) {
    fail(`${what}: expected ${statuses.join(" or ")}, got ${describe(a.status, a.text)}`);
  }
  return a;
}

function json(a, what) {
  try {
    return JSON.parse(a.text);
  } catch {
    fail(`${what}: expected a JSON body, got ${JSON.stringify(a.text.slice(0, 200))}`);
  }
}

// Segments are percent-encoded (space → %20, + → %2B, é → %C3%A9); `/` stays a separator.
const keyPath = (key) => `/v1/kv/${BUCKET}/` + key.split("/").map(encodeURIComponent).join("/");

// application/x-www-form-urlencoded: space → +, and a literal + → %2B.
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  return q.toString();
}

function etagOf(a, what) {
  const tag = a.headers.get("etag");
  if (!tag || !/^".*"$/.test(tag)) fail(`${what}: expected a quoted ETag, got ${JSON.stringify(tag)}`);
  return tag;
}

function revisionOf(a, what) {
  const rev = a.headers.get("micronode-revision");
  if (!rev || !/^\d+$/.test(rev)) fail(`${what}: expected a Micronode-Revision header, got ${JSON.stringify(rev)}`);
  return rev; // a decimal string: revisions can pass 2^53, so they are compared as strings/BigInt
}

const step = (title) => console.log(`== ${title}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- 1. put, get -------------------------------------------------------------------------------

async function putAndGet() {
  step("put and get");
  const a = expect(await call("PUT", keyPath("hello"), "world", { "content-type": "text/plain" }), [201], "PUT hello");
  const tag = etagOf(a, "PUT hello");
  console.log(`PUT ${BUCKET}/hello -> 201, ETag ${tag}, revision ${revisionOf(a, "PUT hello")}`);
  const g = expect(await call("GET", keyPath("hello")), [200], "GET hello");
  if (g.text !== "world") fail(`GET hello: expected body "world", got ${JSON.stringify(g.text)}`);
  if (g.headers.get("content-type") !== "text/plain") {
    fail(`GET hello: expected Content-Type text/plain, got ${g.headers.get("content-type")}`);
  }
  if (etagOf(g, "GET hello") !== tag) fail(`GET hello: expected ETag ${tag}, got ${g.headers.get("etag")}`);
  console.log(`GET ${BUCKET}/hello -> 200 ${JSON.stringify(g.text)}, ETag ${tag}`);
}

// --- 2. compare-and-set ------------------------------------------------------------------------

const INCREMENTS = 10; // per incrementer
const MAX_TRIES = 50; // per increment

// Read the counter and its ETag, write value+1 with If-Match; on 412 read again and retry.
async function increment(key, stats, barrier) {
  for (let i = 0; i < MAX_TRIES; i++) {
    const g = expect(await call("GET", keyPath(key)), [200], `GET ${key}`);
    const tag = etagOf(g, `GET ${key}`);
    const value = Number.parseInt(g.text, 10);
    if (barrier) {
      // Both incrementers have read the same ETag before either writes: one must get 412.
      await barrier();
      barrier = null;
    }
    const p = await call("PUT", keyPath(key), String(value + 1), { "if-match": tag });
    if (p.status === 204) return;
    expect(p, [412], `PUT ${key} If-Match ${tag}`);
    stats.conflicts++;
  }
  fail(`increment ${key}: still conflicting after ${MAX_TRIES} tries`);
}

function makeBarrier(n) {
  let waiting = 0;
  let release;
  const all = new Promise((r) => (release = r));
  return () => {
    if (++waiting === n) release();
    return all;
  };
}

async function compareAndSet() {
  step("compare-and-set: two concurrent incrementers");
  const key = "counter";
  expect(await call("PUT", keyPath(key), "0", { "if-none-match": "*" }), [201], "PUT counter (create only)");
  const barrier = makeBarrier(2);
  const stats = [{ conflicts: 0 }, { conflicts: 0 }];
  const worker = async (s) => {
    await increment(key, s, barrier);
    for (let i = 1; i < INCREMENTS; i++) await increment(key, s);
  };
  await Promise.all(stats.map(worker));
  const conflicts = stats[0].conflicts + stats[1].conflicts;
  const final = expect(await call("GET", keyPath(key)), [200], "GET counter");
  console.log(`2 incrementers x ${INCREMENTS}: counter = ${final.text}, ${conflicts} x 412 retried`);
  if (final.text !== String(2 * INCREMENTS)) {
    fail(`compare-and-set: expected counter ${2 * INCREMENTS}, got ${JSON.stringify(final.text)} (lost update)`);
  }
  if (conflicts < 1) fail("compare-and-set: expected at least one 412 (both incrementers wrote with the same ETag)");
}

// --- 3. list with paging -----------------------------------------------------------------------

const LIST_KEYS = ["list/alpha one", "list/alpha+two", "list/beta three", "list/café", "list/delta/five"];

async function listPaging() {
  step("list: limit=2, following next");
  for (const k of LIST_KEYS) expect(await call("PUT", keyPath(k), k), [201], `PUT ${JSON.stringify(k)}`);
  const seen = [];
  let after = null;
  let pages = 0;
  for (;;) {
    pages++;
    if (pages > LIST_KEYS.length + 1) fail("list: too many pages (is `next` being followed correctly?)");
    const a = expect(
      await call("GET", `/v1/kv/${BUCKET}?` + query({ prefix: "list/", limit: 2, after })),
      [200],
      "list page",
    );
    const page = json(a, "list page");
    const { keys, next } = page;
    if (!Array.isArray(keys) || keys.length > 2 || next === undefined) {
      fail(`list: expected at most 2 keys and a next field, got ${a.text}`);
    }
    console.log(`page ${pages}: ${JSON.stringify(keys)} next=${JSON.stringify(next)}`);
    seen.push(...keys);
    if (next === null) break;
    if (keys.length === 0 || next !== keys[keys.length - 1]) {
      fail(`list: expected next to be the page's last key, got ${a.text}`);
    }
    after = next;
  }
  const want = [...LIST_KEYS].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
  if (JSON.stringify(seen) !== JSON.stringify(want)) {
    fail(`list: expected ${JSON.stringify(want)} (each once, in byte order), got ${JSON.stringify(seen)}`);
  }
  if (pages !== 3) fail(`list: expected 3 pages of at most 2 keys, got ${pages}`);
}

// --- 4. watch, disconnect, resume --------------------------------------------------------------

const TIMED_OUT = Symbol("timed out");

// One event stream; its server-sent events parsed by hand from the fetch body stream.
class Watch {
  static async open(path, headers) {
    const w = new Watch();
    w.abort = new AbortController();
    const timer = setTimeout(() => w.abort.abort(), TIMEOUT_MS);
    let res;
    try {
      res = await fetch(URL_ + path, { headers: headersFor(headers), signal: w.abort.signal });
    } catch (e) {
      fail(`GET ${path}: no answer from ${URL_}: ${e.cause?.message || e.message}`);
    } finally {
      clearTimeout(timer);
    }
    if (res.status !== 200) {
      const text = await res.text();
      fail(`GET ${path}: expected 200, got ${describe(res.status, text)}`);
    }
    const ctype = res.headers.get("content-type") || "";
    if (!ctype.startsWith("text/event-stream")) {
      w.close();
      fail(`GET ${path}: expected text/event-stream, got ${ctype}`);
    }
    w.reader = res.body.getReader();
    w.decoder = new TextDecoder();
    w.buf = "";
    return w;
  }

  // The next line, without its line ending; null when the server ended the stream.
  async line(timeoutMs) {
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (m && !(m[0] === "\r" && m.index === this.buf.length - 1)) {
        const line = this.buf.slice(0, m.index);
        this.buf = this.buf.slice(m.index + m[0].length);
        return line;
      }
      let timer;
      const timeout = new Promise((_, rej) => {
        timer = setTimeout(() => rej(TIMED_OUT), timeoutMs);
      });
      try {
        const { value, done } = await Promise.race([this.reader.read(), timeout]);
        if (done) return null;
        this.buf += this.decoder.decode(value, { stream: true });
      } finally {
        clearTimeout(timer);
      }
    }
  }

  // The next event as {id, event, data}; comments (`: watching`, keep-alives) skipped.
  async next(timeoutMs = WATCH_READ_TIMEOUT_MS) {
    let ev = { id: null, event: "message", data: [] };
    for (;;) {
      let line;
      try {
        line = await this.line(timeoutMs);
      } catch (e) {
        if (e === TIMED_OUT) return undefined; // no event within timeoutMs
        fail(`watch: reading the stream failed: ${e.cause?.message || e.message}`);
      }
      if (line === null) fail("watch: the server ended the stream");
      if (line === "") {
        if (ev.data.length) return { ...ev, data: JSON.parse(ev.data.join("\n")) };
        continue;
      }
      if (line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") ev.data.push(value);
      else if (field === "id") ev.id = value;
      else if (field === "event") ev.event = value;
    }
  }

  async mustNext() {
    const ev = await this.next();
    if (ev === undefined) fail(`watch: no event within ${WATCH_READ_TIMEOUT_MS} ms`);
    return ev;
  }

  // Reads up to the `: watching` comment the stream opens with.
  async waitOpen() {
    let line;
    try {
      line = await this.line(WATCH_READ_TIMEOUT_MS);
    } catch {
      fail(`watch: stream did not open within ${WATCH_READ_TIMEOUT_MS} ms`);
    }
    if (line === null || !line.startsWith(":")) {
      fail(`watch: expected the stream to open with a comment, got ${JSON.stringify(line)}`);
    }
  }

  close() {
    this.abort.abort();
  }
}

async function watchResume() {
  step("watch: start at a revision, disconnect after 2 events, resume with Last-Event-ID");
  // The revision to start from: any KV answer's Micronode-Revision (here an empty listing).
  const a = expect(await call("GET", `/v1/kv/${BUCKET}?` + query({ prefix: "watch/" })), [200], "list watch/");
  const since = revisionOf(a, "list watch/");
  let w = await Watch.open(`/v1/watch/${BUCKET}?` + query({ prefix: "watch/", since }));
  const written = [];
  const got = [];
  try {
    await w.waitOpen();
    for (const k of ["watch/one", "watch/two", "watch/three"]) {
      const p = expect(await call("PUT", keyPath(k), "v"), [201], `PUT ${k}`);
      written.push([k, revisionOf(p, `PUT ${k}`)]);
    }
    got.push(await w.mustNext(), await w.mustNext());
  } finally {
    w.close();
  }
  const lastId = got[1].id;
  console.log(`watch since=${since}: ${JSON.stringify(got.map((e) => [e.event, e.data.key]))}, last id ${lastId}`);
  if (lastId === null) fail(`watch: expected an id on the event, got ${JSON.stringify(got[1])}`);
  w = await Watch.open(`/v1/watch/${BUCKET}?` + query({ prefix: "watch/" }), { "last-event-id": lastId });
  try {
    got.push(await w.mustNext());
    // Nothing else may follow: a duplicate would arrive right away.
    const extra = await w.next(500);
    if (extra !== undefined) fail(`watch: expected no further event after resuming, got ${JSON.stringify(extra)}`);
  } finally {
    w.close();
  }
  console.log(`resumed with Last-Event-ID ${lastId}: ${got[2].event} ${got[2].data.key}`);
  // Revisions are compared as decimal strings: the raw JSON number may pass 2^53.
  const seen = got.map((e) => [e.data.key, e.id]);
  if (JSON.stringify(seen) !== JSON.stringify(written)) {
    fail(`watch: expected ${JSON.stringify(written)} once each, in order; got ${JSON.stringify(seen)}`);
  }
  if (got.some((e) => e.event !== "put")) fail(`watch: expected put events, got ${JSON.stringify(got)}`);
}

// --- 5. transaction ----------------------------------------------------------------------------

const b64 = (s) => Buffer.from(s).toString("base64");

async function transaction() {
  step("transaction: move 30 from alice to bob if neither changed");
  const tags = {};
  for (const [k, v] of [["bank/alice", "100"], ["bank/bob", "50"]]) {
    tags[k] = etagOf(expect(await call("PUT", keyPath(k), v), [201], `PUT ${k}`), `PUT ${k}`);
  }
  const txn = {
    if: Object.entries(tags).map(([key, etag]) => ({ bucket: BUCKET, key, etag })),
    then: [
      { op: "put", bucket: BUCKET, key: "bank/alice", value: b64("70"), content_type: "text/plain" },
      { op: "put", bucket: BUCKET, key: "bank/bob", value: b64("80"), content_type: "text/plain" },
    ],
    else: Object.keys(tags).map((key) => ({ op: "get", bucket: BUCKET, key })),
  };
  const body = JSON.stringify(txn);
  const ct = { "content-type": "application/json" };
  let a = expect(await call("POST", "/v1/txn", body, ct), [200], "POST /v1/txn");
  let res = json(a, "POST /v1/txn");
  console.log(`txn: ${a.text}`);
  if (res.succeeded !== true || JSON.stringify((res.results || []).map((r) => r.op)) !== '["put","put"]') {
    fail(`txn: expected succeeded:true with two put results, got ${a.text}`);
  }
  if (!a.text.includes(`"revision":${revisionOf(a, "POST /v1/txn")}`)) {
    fail(`txn: expected Micronode-Revision to equal the result's revision, got ${a.text}`);
  }
  for (const [k, v] of [["bank/alice", "70"], ["bank/bob", "80"]]) {
    const g = expect(await call("GET", keyPath(k)), [200], `GET ${k}`);
    if (g.text !== v) fail(`txn: expected ${k} = ${v}, got ${JSON.stringify(g.text)}`);
  }
  // The same transaction again: its ETags are now stale, so the else branch runs.
  a = expect(await call("POST", "/v1/txn", body, ct), [200], "POST /v1/txn (stale)");
  res = json(a, "POST /v1/txn (stale)");
  console.log(`txn again (stale ETags): ${a.text}`);
  const values = (res.results || []).map((r) => Buffer.from(r.value || "", "base64").toString());
  if (res.succeeded !== false || JSON.stringify(values) !== '["70","80"]') {
    fail(`txn: expected succeeded:false with the current values 70 and 80, got ${a.text}`);
  }
}

// --- 6. TTL ------------------------------------------------------------------------------------

async function ttl() {
  step("TTL: a key that lives 1 second");
  const before = Date.now() / 1000;
  const a = expect(await call("PUT", keyPath("ttl/short") + "?" + query({ ttl: 1 }), "soon gone"), [201], "PUT ttl=1");
  const exp = a.headers.get("micronode-expires-at");
  if (!exp || !/^\d+$/.test(exp) || Number(exp) < before + 1 || Number(exp) > Date.now() / 1000 + 3) {
    fail(`PUT ttl=1: expected Micronode-Expires-At about now + 1 s, got ${JSON.stringify(exp)}`);
  }
  console.log(`PUT ttl=1 -> 201, Micronode-Expires-At ${exp}`);
  const g = expect(await call("GET", keyPath("ttl/short")), [200], "GET ttl/short");
  if (g.headers.get("micronode-expires-at") !== exp) {
    fail(`GET ttl/short: expected Micronode-Expires-At ${exp}, got ${g.headers.get("micronode-expires-at")}`);
  }
  const deadline = Number(exp) + 3;
  for (;;) {
    const g = expect(await call("GET", keyPath("ttl/short")), [200, 404], "GET ttl/short");
    const now = Date.now() / 1000;
    if (g.status === 404) {
      console.log(`GET after expiry -> 404 (at ${now.toFixed(1)}, expiry ${exp})`);
      return;
    }
    if (now > deadline) fail(`TTL: expected 404 from ${exp} on, still 200 at ${now.toFixed(1)}`);
    await sleep(200);
  }
}

async function main() {
  const bound = setTimeout(() => {
    console.error(`kv_tour: FAILED: not done within ${TOTAL_BOUND_MS / 1000} s`);
    process.exit(1);
  }, TOTAL_BOUND_MS);
  console.log(`server ${URL_}, bucket ${BUCKET}, token ${TOKEN ? "set" : "not set"}`);
  try {
    await putAndGet();
    await compareAndSet();
    await listPaging();
    await watchResume();
    await transaction();
    await ttl();
  } catch (e) {
    console.error(`kv_tour: FAILED: ${e instanceof TourError ? e.message : e.stack || e}`);
    process.exit(1);
  }
  clearTimeout(bound);
  console.log("kv_tour: OK");
  process.exit(0);
}

if (typeof fetch !== "function") {
  console.error("kv_tour: this Node has no built-in fetch (Node 18 or later is needed)");
  process.exit(1);
}
main();
