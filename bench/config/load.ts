/**
 * A load process of the config benchmark (bench/config.ts), driven over Node's IPC channel;
 * see `LoadRequest` in shared.ts. One process either holds watchers (`watch`, then
 * `reset`/`count`/`collect` around each phase), or is the putter (`putter-connect`, then
 * `put-paced` or `put-burst`).
 *
 * Orchestra's watchers are `GET /v1/config/watch` Server-Sent Events over node:http with a
 * keep-alive agent that has a socket for each of them; etcd's are watches of the `etcd3`
 * package, all on one client (one gRPC stream), as Orchestra's server holds its own. Every
 * delivery's latency is its arrival time minus the value's `t` (the putter's clock just
 * before it issued the put), both `clock()` (CLOCK_MONOTONIC, the same in every process).
 */
import http from 'node:http';
import { Etcd3, type IKeyValue, type Watcher } from 'etcd3';
import { serveLoadRequests } from '../common.ts';
import { newHistogram, record, sleep } from '../realtime/shared.ts';
import {
  clock,
  type LoadRequest,
  type PutReport,
  type Target,
  VALUE_PREFIX,
  valueText,
  type WatchCollect,
  type WatchCount,
  type WatchReport,
} from './shared.ts';

// ---------------------------------------------------------------------------------------
// Counters of the current phase

let phase = -1;
let planned = 0;
let latency = newHistogram();
let delivered = 0;
let repeats = 0;
let stale = 0;
let other = 0;
let errors = 0;
let lastError: string | null = null;
let firstAt: number | null = null;
let lastAt: number | null = null;
let closed = 0;

interface WatcherConn {
  /** Puts of the current phase this watcher has seen (index `s`). */
  seen: Uint8Array;
  open: boolean;
  close(): void;
}

const watchers: WatcherConn[] = [];
let openCount = 0;
/** Set while this process closes its watchers: those ends are not counted. */
let closing = false;

function resetCounters(nextPhase: number, nextPlanned: number): void {
  phase = nextPhase;
  planned = nextPlanned;
  latency = newHistogram();
  delivered = 0;
  repeats = 0;
  stale = 0;
  other = 0;
  errors = 0;
  lastError = null;
  firstAt = null;
  lastAt = null;
  closed = 0;
  for (const w of watchers) w.seen = new Uint8Array(nextPlanned);
}

function noteError(message: string): void {
  errors += 1;
  lastError = message.slice(0, 500);
}

function onEnd(w: WatcherConn, why: string): void {
  if (!w.open) return;
  w.open = false;
  openCount -= 1;
  if (!closing) {
    closed += 1;
    noteError(`watcher ended: ${why}`);
  }
}

// ---------------------------------------------------------------------------------------
// Reading k, s and t out of the text of a value: VALUE_PREFIX, then JSON numbers.

let pos = 0;

function number(text: string): number {
  let v = 0;
  let c = text.charCodeAt(pos);
  while (c >= 48 && c <= 57) {
    v = v * 10 + (c - 48);
    c = text.charCodeAt(++pos);
  }
  if (c === 46) {
    let f = 0.1;
    c = text.charCodeAt(++pos);
    while (c >= 48 && c <= 57) {
      v += (c - 48) * f;
      f /= 10;
      c = text.charCodeAt(++pos);
    }
  }
  return v;
}

function literal(text: string, lit: string): boolean {
  if (!text.startsWith(lit, pos)) return false;
  pos += lit.length;
  return true;
}

/** Records the delivery of the value that starts at `at` in `text`; false if it is none. */
function delivery(w: WatcherConn, text: string, at: number): boolean {
  const now = clock();
  pos = at + VALUE_PREFIX.length;
  const k = number(text);
  if (!literal(text, ',"s":')) return false;
  const s = number(text);
  if (!literal(text, ',"t":')) return false;
  const t = number(text);
  if (k !== phase || s >= planned) {
    stale += 1;
    return true;
  }
  if (w.seen[s] === 1) {
    repeats += 1;
    return true;
  }
  w.seen[s] = 1;
  delivered += 1;
  firstAt ??= now;
  lastAt = now;
  record(latency, now - t);
  return true;
}

// ---------------------------------------------------------------------------------------
// Orchestra: Server-Sent Events

const SSE_VALUE = `"value":${VALUE_PREFIX}`;

/** One event block of an SSE stream (the text between blank lines). */
function sseBlock(w: WatcherConn, text: string, start: number, end: number): void {
  const at = text.indexOf(SSE_VALUE, start);
  if (at !== -1 && at < end) {
    if (!delivery(w, text, at + SSE_VALUE.length - VALUE_PREFIX.length)) other += 1;
    return;
  }
  const block = text.slice(start, end);
  // The stream's preamble (`retry:`) and keep-alive comments are no events.
  if (block.startsWith('retry:') || block.startsWith(':')) return;
  if (block.includes('event: stream.error')) noteError(block.slice(0, 300));
  else other += 1;
}

let agent: http.Agent | null = null;

function watchOrchestra(
  target: Extract<Target, { kind: 'orchestra' }>,
  timeoutMs: number,
): Promise<WatcherConn> {
  const url = new URL('/v1/config/watch', target.baseUrl);
  url.searchParams.set('env', target.env);
  url.searchParams.set('prefix', target.prefix);
  return new Promise<WatcherConn>((resolve, reject) => {
    const w: WatcherConn = {
      seen: new Uint8Array(planned),
      open: false,
      close: () => req.destroy(),
    };
    const timer = setTimeout(() => {
      req.destroy(new Error(`no answer to the watch within ${timeoutMs} ms`));
    }, timeoutMs);
    const req = http.get(
      url,
      {
        agent: agent ?? undefined,
        headers: { authorization: `Bearer ${target.apiKey}`, accept: 'text/event-stream' },
      },
      (res) => {
        clearTimeout(timer);
        if (res.statusCode !== 200) {
          res.resume();
          req.destroy();
          reject(new Error(`the watch was answered ${res.statusCode}`));
          return;
        }
        res.setEncoding('utf8');
        let pending = '';
        res.on('data', (chunk: string) => {
          const text = pending === '' ? chunk : pending + chunk;
          let start = 0;
          let end = text.indexOf('\n\n', start);
          while (end !== -1) {
            sseBlock(w, text, start, end);
            start = end + 2;
            end = text.indexOf('\n\n', start);
          }
          pending = start === text.length ? '' : text.slice(start);
        });
        res.on('close', () => onEnd(w, 'the server ended the stream'));
        res.on('error', (err) => onEnd(w, err.message));
        w.open = true;
        openCount += 1;
        resolve(w);
      },
    );
    req.on('error', (err) => {
      clearTimeout(timer);
      if (w.open) onEnd(w, err.message);
      else reject(err);
    });
  });
}

// ---------------------------------------------------------------------------------------
// etcd: watches of the etcd3 package

let watchClient: Etcd3 | null = null;

async function watchEtcd(target: Extract<Target, { kind: 'etcd' }>): Promise<WatcherConn> {
  watchClient ??= new Etcd3({ hosts: target.endpoint });
  let watcher: Watcher | null = null;
  const w: WatcherConn = {
    seen: new Uint8Array(planned),
    open: false,
    close: () => {
      void watcher?.cancel().catch(() => undefined);
    },
  };
  watcher = await watchClient.watch().prefix(target.prefix).create();
  watcher.on('put', (kv: IKeyValue) => {
    const text = kv.value.toString();
    if (!text.startsWith(VALUE_PREFIX) || !delivery(w, text, 0)) other += 1;
  });
  watcher.on('error', (err: Error) => noteError(err.message));
  watcher.on('disconnected', (err: Error) => noteError(`disconnected: ${err.message}`));
  w.open = true;
  openCount += 1;
  return w;
}

// ---------------------------------------------------------------------------------------

async function watchAll(request: Extract<LoadRequest, { type: 'watch' }>): Promise<WatchReport> {
  const started = clock();
  closing = false;
  const { target, count } = request;
  if (target.kind === 'orchestra') {
    // A socket for every watcher, kept for as long as its stream lasts.
    agent = new http.Agent({ keepAlive: true, maxSockets: count + 16 });
  }
  const deadline = started + request.timeoutMs;
  let next = 0;
  let opened = 0;
  let failed = 0;
  let firstError: string | null = null;
  const worker = async () => {
    while (next < count && clock() < deadline) {
      next += 1;
      try {
        const remaining = Math.max(1000, deadline - clock());
        watchers.push(
          target.kind === 'orchestra'
            ? await watchOrchestra(target, remaining)
            : await watchEtcd(target),
        );
        opened += 1;
      } catch (err) {
        failed += 1;
        firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(request.parallel, count) }, worker));
  return {
    opened,
    failed: failed + (count - next),
    firstError,
    ms: Math.round(clock() - started),
  };
}

async function unwatchAll(timeoutMs: number): Promise<{ closed: number; left: number }> {
  closing = true;
  const total = watchers.length;
  for (const w of watchers) w.close();
  if (watchClient !== null) {
    // Closing the client ends its gRPC stream, with every watch on it.
    watchClient.close();
    watchClient = null;
    for (const w of watchers) onEnd(w, 'closed');
  }
  const deadline = clock() + timeoutMs;
  while (openCount > 0 && clock() < deadline) await sleep(50);
  const left = openCount;
  watchers.length = 0;
  openCount = 0;
  agent?.destroy();
  agent = null;
  return { closed: total - left, left };
}

function collect(): WatchCollect {
  return {
    phase,
    delivered,
    repeats,
    stale,
    other,
    errors,
    lastError,
    latency,
    firstAt,
    lastAt,
    open: openCount,
    closed,
  };
}

// ---------------------------------------------------------------------------------------
// The putter

interface Putter {
  /** Resolves to null when the put succeeded, else to what went wrong; never rejects. */
  put(key: string, value: string): Promise<string | null>;
  close(): void;
}

let putter: Putter | null = null;

function orchestraPutter(
  target: Extract<Target, { kind: 'orchestra' }>,
  maxInFlight: number,
): Putter {
  const putAgent = new http.Agent({ keepAlive: true, maxSockets: maxInFlight });
  const base = new URL(target.baseUrl);
  const env = encodeURIComponent(target.env);
  return {
    put: (key, value) =>
      new Promise<string | null>((resolve) => {
        const body = `{"value":${value}}`;
        const req = http.request(
          {
            host: base.hostname,
            port: base.port,
            method: 'PUT',
            path: `/v1/config/${key}?env=${env}`,
            agent: putAgent,
            headers: {
              authorization: `Bearer ${target.apiKey}`,
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            const status = res.statusCode ?? 0;
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              if (status >= 300 && text.length < 500) text += chunk;
            });
            res.on('end', () =>
              resolve(status === 200 || status === 201 ? null : `${status}: ${text.slice(0, 300)}`),
            );
            res.on('error', (err) => resolve(err.message));
          },
        );
        req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
        req.on('error', (err) => resolve(err.message));
        req.end(body);
      }),
    close: () => putAgent.destroy(),
  };
}

function etcdPutter(target: Extract<Target, { kind: 'etcd' }>): Putter {
  const client = new Etcd3({ hosts: target.endpoint });
  return {
    put: (key, value) =>
      client
        .put(key)
        .value(value)
        .then(
          () => null,
          (err: unknown) => (err as Error).message ?? String(err),
        ),
    close: () => client.close(),
  };
}

function keyOf(target: Target, seq: number, keys: number): string {
  return `${target.prefix}k${seq % keys}`;
}

let putTarget: Target | null = null;

interface PutState {
  report: PutReport;
  inFlight: number;
}

function newPutState(plannedPuts: number): PutState {
  return {
    report: {
      planned: plannedPuts,
      issued: 0,
      succeeded: 0,
      errors: 0,
      firstError: null,
      firstAt: 0,
      lastAt: 0,
      lastDoneAt: 0,
      lag: newHistogram(),
      heldBack: 0,
      roundTrip: newHistogram(),
    },
    inFlight: 0,
  };
}

/** Issues put `seq` of `phaseOf`; resolves when it is answered. */
function issue(
  state: PutState,
  phaseOf: number,
  seq: number,
  keys: number,
  padding: string,
): Promise<void> {
  const p = putter;
  const target = putTarget;
  if (p === null || target === null) throw new Error('the putter is not connected');
  const sentAt = clock();
  const r = state.report;
  if (r.firstAt === 0) r.firstAt = sentAt;
  r.lastAt = sentAt;
  r.issued += 1;
  state.inFlight += 1;
  return p.put(keyOf(target, seq, keys), valueText(phaseOf, seq, sentAt, padding)).then((err) => {
    const done = clock();
    state.inFlight -= 1;
    r.lastDoneAt = done;
    record(r.roundTrip, done - sentAt);
    if (err === null) {
      r.succeeded += 1;
    } else {
      r.errors += 1;
      r.firstError ??= err.slice(0, 500);
    }
  });
}

/** Open loop: put i is due at start + i / rate; a due put waits while too many are unanswered. */
async function putPaced(request: Extract<LoadRequest, { type: 'put-paced' }>) {
  const state = newPutState(request.count);
  const padding = 'x'.repeat(request.payloadBytes);
  const interval = 1000 / request.rate;
  const pending = new Set<Promise<void>>();
  const start = clock() + 5;
  const deadline = start + request.maxMs;
  let i = 0;
  while (i < request.count && clock() < deadline) {
    const due = start + i * interval;
    const now = clock();
    if (now < due) {
      await sleep(Math.min(due - now, 50));
      continue;
    }
    if (state.inFlight >= request.maxInFlight) {
      state.report.heldBack += 1;
      await Promise.race(pending);
      continue;
    }
    record(state.report.lag, now - due);
    const done = issue(state, request.phase, i, request.keys, padding);
    pending.add(done);
    void done.then(() => pending.delete(done));
    i += 1;
  }
  await Promise.race([Promise.all(pending), sleep(35_000)]);
  return state.report;
}

/** Closed loop: `concurrency` puts in flight until `count` are issued or the time is up. */
async function putBurst(request: Extract<LoadRequest, { type: 'put-burst' }>) {
  const state = newPutState(request.count);
  const padding = 'x'.repeat(request.payloadBytes);
  const deadline = clock() + request.maxMs;
  let next = 0;
  const worker = async () => {
    while (next < request.count && clock() < deadline) {
      const seq = next++;
      await issue(state, request.phase, seq, request.keys, padding);
    }
  };
  await Promise.all(Array.from({ length: Math.min(request.concurrency, request.count) }, worker));
  return state.report;
}

// ---------------------------------------------------------------------------------------

async function handle(request: LoadRequest): Promise<unknown> {
  switch (request.type) {
    case 'watch':
      return watchAll(request);
    case 'reset':
      resetCounters(request.phase, request.planned);
      return null;
    case 'count':
      return { delivered, open: openCount } satisfies WatchCount;
    case 'collect':
      return collect();
    case 'unwatch':
      return unwatchAll(request.timeoutMs);
    case 'putter-connect':
      putter?.close();
      putTarget = request.target;
      putter =
        request.target.kind === 'orchestra'
          ? orchestraPutter(request.target, request.maxInFlight)
          : etcdPutter(request.target);
      return null;
    case 'put-paced':
      return putPaced(request);
    case 'put-burst':
      return putBurst(request);
    case 'stop':
      putter?.close();
      setImmediate(() => process.exit(0));
      return null;
  }
}

serveLoadRequests(handle);
