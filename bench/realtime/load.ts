/**
 * A load generator of the realtime benchmark (bench/realtime.ts), driven over Node's IPC
 * channel; see `LoadRequest` in shared.ts. One process either holds many subscriber
 * connections (`connect`, then `reset`/`count`/`collect` around each step), or is the
 * publisher (`publisher-connect`, then `publish` at a fixed rate).
 *
 * Subscribers of the `ws` anchor and of Orchestra use the `ws` client and find the payload
 * in the raw frame (no JSON.parse per message); Socket.IO subscribers use socket.io-client,
 * which parses every packet itself. Every delivery's latency is its arrival time minus the
 * payload's `t` (the publisher's clock just before the send), both wall-clock ms.
 */
import http from 'node:http';
import net from 'node:net';
import type { Socket as IoSocket } from 'socket.io-client';
import type WebSocket from 'ws';
import { serveLoadRequests } from '../common.ts';
import {
  type ConnectReport,
  clock,
  type HistogramData,
  type LoadCollect,
  type LoadCount,
  type LoadRequest,
  merged,
  newHistogram,
  PAYLOAD_PREFIX,
  type PublishReport,
  payload,
  record,
  type SlowReport,
  sleep,
  type Target,
  topicsOf,
} from './shared.ts';

/** The publisher holds back while more than this waits in its socket's buffer. */
const PUBLISHER_MAX_BUFFERED = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Counters of the current step

let step = -1;
let quarters: HistogramData[] = [0, 1, 2, 3].map(() => newHistogram());
let delivered = 0;
let stale = 0;
let other = 0;
let errorFrames = 0;
let lastError: string | null = null;
let gaps = 0;
let repeats = 0;
let closes: Record<string, number> = {};
/** The slow candidate's deliveries are left out (slow-consumer runs). */
let excludeSlow = false;

function resetCounters(next: number, withoutSlow: boolean): void {
  step = next;
  excludeSlow = withoutSlow;
  quarters = [0, 1, 2, 3].map(() => newHistogram());
  delivered = 0;
  stale = 0;
  other = 0;
  errorFrames = 0;
  lastError = null;
  gaps = 0;
  repeats = 0;
  closes = {};
}

interface Conn {
  index: number;
  lastSeq: number;
  slow: boolean;
  open: boolean;
  close(): void;
  terminate(): void;
}

const conns: Conn[] = [];
let openCount = 0;
/** Set while this process closes its connections: those closes are not counted. */
let disconnecting = false;

let slow: (SlowReport & { socket: net.Socket | null }) | null = null;

function onDelivery(conn: Conn, k: number, q: number, s: number, t: number): void {
  const now = clock();
  if (s > conn.lastSeq + 1 && conn.lastSeq >= 0) gaps += s - conn.lastSeq - 1;
  else if (s <= conn.lastSeq) repeats += 1;
  if (s > conn.lastSeq) conn.lastSeq = s;
  if (conn.slow && slow !== null) {
    slow.delivered += 1;
    slow.lastSentAt = t;
    if (slow.resumedAt !== null) slow.deliveredAfterResume += 1;
    // In a slow-consumer run, the slow one is reported on its own, not with the others.
    if (excludeSlow || slow.pausedAt !== null) return;
  }
  if (k !== step) {
    stale += 1;
    return;
  }
  delivered += 1;
  const h = quarters[q] ?? quarters[3];
  if (h) record(h, now - t);
}

function onClose(conn: Conn, code: string, reason: string): void {
  if (!conn.open) return;
  conn.open = false;
  openCount -= 1;
  if (conn.slow && slow !== null) {
    slow.closeCode = Number(code) || null;
    slow.closeReason = reason.slice(0, 200);
    slow.closedAt = clock();
  }
  if (!disconnecting) closes[code] = (closes[code] ?? 0) + 1;
}

function noteError(message: string): void {
  errorFrames += 1;
  lastError = message.slice(0, 500);
}

// ---------------------------------------------------------------------------------------
// Reading the payload out of a raw frame: PAYLOAD_PREFIX, then k, q, s, t as JSON numbers.

const PREFIX = Buffer.from(PAYLOAD_PREFIX);
const Q = Buffer.from(',"q":');
const S = Buffer.from(',"s":');
const T = Buffer.from(',"t":');
let pos = 0;

function literal(buf: Buffer, lit: Buffer): boolean {
  for (let j = 0; j < lit.length; j++) if (buf[pos + j] !== lit[j]) return false;
  pos += lit.length;
  return true;
}

function number(buf: Buffer): number {
  let v = 0;
  let c = buf[pos] ?? 0;
  while (c >= 48 && c <= 57) {
    v = v * 10 + (c - 48);
    c = buf[++pos] ?? 0;
  }
  if (c === 46) {
    let f = 0.1;
    c = buf[++pos] ?? 0;
    while (c >= 48 && c <= 57) {
      v += (c - 48) * f;
      f /= 10;
      c = buf[++pos] ?? 0;
    }
  }
  return v;
}

/** The delivery in a raw frame, if it holds one; false otherwise. */
function rawDelivery(conn: Conn, buf: Buffer): boolean {
  const at = buf.indexOf(PREFIX);
  if (at < 0) return false;
  pos = at + PREFIX.length;
  const k = number(buf);
  if (!literal(buf, Q)) return false;
  const q = number(buf);
  if (!literal(buf, S)) return false;
  const s = number(buf);
  if (!literal(buf, T)) return false;
  onDelivery(conn, k, q, s, number(buf));
  return true;
}

// ---------------------------------------------------------------------------------------
// Frames of each protocol

function envelope(id: string, payloadFields: Record<string, unknown>): string {
  return JSON.stringify({
    header: {
      id,
      type: 'REQUEST',
      timestamp: new Date().toISOString(),
      source: `bench:${process.pid}`,
      version: 1,
    },
    payload: payloadFields,
  });
}

function subscribeFrame(system: 'ws' | 'orchestra', id: string, topic: string): string {
  return system === 'ws'
    ? JSON.stringify({ op: 'sub', id, topic })
    : envelope(id, { kind: 'subscribe', topic });
}

interface Control {
  id?: unknown;
  op?: unknown;
  header?: { correlation_id?: unknown };
  payload?: { kind?: unknown; code?: unknown; message?: unknown };
}

/** Answer id, whether it is a success, and the error text if not. */
function readControl(text: string): { id: string | null; ok: boolean; error: string | null } {
  let frame: Control;
  try {
    frame = JSON.parse(text) as Control;
  } catch {
    return { id: null, ok: false, error: `not JSON: ${text.slice(0, 200)}` };
  }
  if (frame.op === 'subbed') return { id: String(frame.id), ok: true, error: null };
  const id = typeof frame.header?.correlation_id === 'string' ? frame.header.correlation_id : null;
  const kind = frame.payload?.kind;
  if (kind === 'error') {
    return {
      id,
      ok: false,
      error: `${String(frame.payload?.code)}: ${String(frame.payload?.message)}`,
    };
  }
  return { id, ok: true, error: null };
}

async function wsModule() {
  return (await import('ws')).default;
}

/** A `ws` client connection to the anchor or to Orchestra, subscribed to `topics`. */
async function connectWs(
  target: Target,
  index: number,
  topics: string[],
  localAddress: string | undefined,
  capture: boolean,
  timeoutMs: number,
): Promise<Conn> {
  const WebSocketClass = await wsModule();
  const system = target.system === 'orchestra' ? 'orchestra' : 'ws';
  const ws = new WebSocketClass(target.url, {
    perMessageDeflate: false,
    skipUTF8Validation: true,
    handshakeTimeout: timeoutMs,
    ...(target.apiKey === undefined
      ? {}
      : { headers: { authorization: `Bearer ${target.apiKey}` } }),
    ...(localAddress === undefined ? {} : { localAddress }),
    ...(capture
      ? {
          createConnection: ((options: net.NetConnectOpts) => {
            const socket = net.createConnection(options);
            if (slow !== null) slow.socket = socket;
            return socket;
          }) as typeof net.createConnection,
        }
      : {}),
  });
  const pending = new Map<string, { done: () => void; fail: (e: Error) => void }>();
  const conn: Conn = {
    index,
    lastSeq: -1,
    slow: capture,
    open: false,
    close: () => ws.close(1000),
    terminate: () => ws.terminate(),
  };
  ws.on('message', (data: Buffer) => {
    if (rawDelivery(conn, data)) return;
    const control = readControl(data.toString());
    const waiter = control.id === null ? undefined : pending.get(control.id);
    if (waiter !== undefined && control.id !== null) {
      pending.delete(control.id);
      if (control.ok) waiter.done();
      else waiter.fail(new Error(control.error ?? 'refused'));
      return;
    }
    if (control.error !== null) noteError(control.error);
    else other += 1;
  });
  ws.on('close', (code: number, reason: Buffer) => onClose(conn, String(code), reason.toString()));
  ws.on('unexpected-response', (_req, res) => {
    ws.emit('error', new Error(`upgrade answered ${res.statusCode} ${res.statusMessage}`));
    res.resume();
  });
  await new Promise<void>((done, fail) => {
    ws.once('open', () => done());
    ws.once('error', fail);
  });
  ws.on('error', (err: Error) => noteError(err.message));
  conn.open = true;
  openCount += 1;
  const subscribed = Promise.all(
    topics.map(
      (topic, j) =>
        new Promise<void>((done, fail) => {
          const id = `sub-${index}-${j}`;
          const timer = setTimeout(() => {
            pending.delete(id);
            fail(new Error(`no answer to subscribe ${topic} within ${timeoutMs} ms`));
          }, timeoutMs);
          pending.set(id, {
            done: () => {
              clearTimeout(timer);
              done();
            },
            fail: (e) => {
              clearTimeout(timer);
              fail(e);
            },
          });
          ws.send(subscribeFrame(system, id, topic));
        }),
    ),
  );
  try {
    await subscribed;
  } catch (err) {
    abandon(conn);
    throw err;
  }
  return conn;
}

/** A connection whose subscribe failed: closed, and no longer counted. */
function abandon(conn: Conn): void {
  if (conn.open) {
    conn.open = false;
    openCount -= 1;
  }
  conn.terminate();
}

/** An http.Agent that keeps the socket it made, so that the slow consumer can pause it. */
class CapturingAgent extends http.Agent {
  override createConnection(options: http.ClientRequestArgs) {
    const socket = net.createConnection(options as net.NetConnectOpts);
    if (slow !== null) slow.socket = socket;
    return socket;
  }
}

interface IoFrame {
  payload?: { data?: { k?: unknown; q?: unknown; s?: unknown; t?: unknown } };
}

/** A socket.io-client connection (WebSocket transport only), in the rooms `topics`. */
async function connectSocketIo(
  target: Target,
  index: number,
  topics: string[],
  localAddress: string | undefined,
  capture: boolean,
  timeoutMs: number,
): Promise<Conn> {
  const { io } = await import('socket.io-client');
  // `localAddress` and `agent` go through to the `ws` client that engine.io-client uses.
  const socket: IoSocket = io(target.url, {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: timeoutMs,
    ...(localAddress === undefined ? {} : { localAddress }),
    ...(capture ? { agent: new CapturingAgent() as unknown as string } : {}),
  });
  const conn: Conn = {
    index,
    lastSeq: -1,
    slow: capture,
    open: false,
    close: () => socket.disconnect(),
    terminate: () => socket.io.engine?.close(),
  };
  socket.on('message', (frame: IoFrame) => {
    const d = frame?.payload?.data;
    if (d !== undefined && typeof d.k === 'number' && typeof d.t === 'number') {
      onDelivery(conn, d.k, Number(d.q), Number(d.s), d.t);
    } else {
      other += 1;
    }
  });
  await new Promise<void>((done, fail) => {
    socket.once('connect', () => done());
    socket.once('connect_error', (err: Error) => {
      socket.close();
      fail(err);
    });
  });
  socket.on('disconnect', (reason: string) => onClose(conn, reason, reason));
  conn.open = true;
  openCount += 1;
  try {
    for (const topic of topics) await socket.timeout(timeoutMs).emitWithAck('subscribe', topic);
  } catch (err) {
    abandon(conn);
    throw err;
  }
  return conn;
}

type ConnectRequest = Extract<LoadRequest, { type: 'connect' }>;
/** The last `connect`: what `top-up` reopens closed connections with. */
let lastConnect: ConnectRequest | null = null;

/** Connection `i` of a `connect` request, subscribed. */
function openOne(request: ConnectRequest, i: number, capture: boolean, deadline: number) {
  const { target, firstIndex, sourceAddresses } = request;
  const index = firstIndex + i;
  const localAddress =
    sourceAddresses.length > 0 ? sourceAddresses[index % sourceAddresses.length] : undefined;
  const topics = topicsOf(request.topics, index);
  const remaining = Math.max(1000, deadline - clock());
  return target.system === 'socketio'
    ? connectSocketIo(target, index, topics, localAddress, capture, remaining)
    : connectWs(target, index, topics, localAddress, capture, remaining);
}

/** Reopens the connections the server closed (not the slow one once paused), as they were. */
async function topUp(): Promise<ConnectReport> {
  const started = clock();
  const request = lastConnect;
  const closed = conns.filter((c) => !c.open && !(c.slow && slow?.pausedAt != null));
  let connected = 0;
  let firstError: string | null = null;
  if (request !== null) {
    const deadline = started + request.timeoutMs;
    let next = 0;
    const worker = async () => {
      while (next < closed.length && clock() < deadline) {
        const old = closed[next++];
        if (old === undefined) break;
        try {
          const conn = await openOne(request, old.index - request.firstIndex, old.slow, deadline);
          conns[conns.indexOf(old)] = conn;
          connected += 1;
        } catch (err) {
          firstError ??= (err as Error).message;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(request.parallel, closed.length) }, worker));
  }
  return {
    connected,
    failed: closed.length - connected,
    firstError,
    ms: Math.round(clock() - started),
  };
}

async function connectAll(request: ConnectRequest) {
  const started = clock();
  disconnecting = false;
  const { count } = request;
  if (request.slowCandidate) {
    slow = {
      pausedAt: null,
      resumedAt: null,
      delivered: 0,
      lastSentAt: null,
      deliveredAfterResume: 0,
      closeCode: null,
      closeReason: null,
      closedAt: null,
      localPort: null,
      socket: null,
    };
  }
  lastConnect = request;
  let next = 0;
  let connected = 0;
  let failed = 0;
  let firstError: string | null = null;
  const deadline = started + request.timeoutMs;
  const worker = async () => {
    while (next < count && clock() < deadline) {
      const i = next++;
      try {
        conns.push(await openOne(request, i, request.slowCandidate && i === 0, deadline));
        connected += 1;
      } catch (err) {
        failed += 1;
        firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(request.parallel, count) }, worker));
  if (slow !== null) slow.localPort = slow.socket?.localPort ?? null;
  return {
    connected,
    failed: failed + (count - next),
    firstError,
    ms: Math.round(clock() - started),
  } satisfies ConnectReport;
}

async function disconnectAll(timeoutMs: number): Promise<{ closed: number; terminated: number }> {
  disconnecting = true;
  slow?.socket?.resume();
  for (const conn of conns) if (conn.open) conn.close();
  const deadline = clock() + timeoutMs;
  while (openCount > 0 && clock() < deadline) await sleep(50);
  let terminated = 0;
  for (const conn of conns) {
    if (conn.open) {
      terminated += 1;
      conn.terminate();
      onClose(conn, 'terminated', '');
    }
  }
  const closed = conns.length - terminated;
  conns.length = 0;
  openCount = 0;
  slow = null;
  lastConnect = null;
  return { closed, terminated };
}

function slowReport(): SlowReport | null {
  if (slow === null) return null;
  const { socket: _socket, ...rest } = slow;
  return { ...rest };
}

function collect(): LoadCollect {
  return {
    step,
    delivered,
    latency: merged(quarters),
    quarters,
    stale,
    other,
    errorFrames,
    lastError,
    gaps,
    repeats,
    closes,
    open: openCount,
    slow: slowReport(),
  };
}

// ---------------------------------------------------------------------------------------
// The publisher

interface Publisher {
  send(topic: string, data: unknown, ack: boolean): void;
  buffered(): number;
  close(): void;
}

let publisher: Publisher | null = null;
let publishSeq = 0;
let inFlight = 0;
let acked = 0;
let publishErrors = 0;
let firstPublishError: string | null = null;

function publishError(message: string): void {
  publishErrors += 1;
  firstPublishError ??= message.slice(0, 500);
}

async function connectPublisher(target: Target): Promise<void> {
  publisher?.close();
  publisher = null;
  if (target.system === 'socketio') {
    const { io } = await import('socket.io-client');
    const socket: IoSocket = io(target.url, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
    });
    await new Promise<void>((done, fail) => {
      socket.once('connect', () => done());
      socket.once('connect_error', fail);
    });
    let current = true;
    socket.on('disconnect', (reason: string) => {
      if (current) publishError(`disconnected: ${reason}`);
    });
    const transport = () =>
      socket.io.engine?.transport as unknown as { ws?: { bufferedAmount?: number } } | undefined;
    publisher = {
      send: (topic, data) => socket.emit('publish', topic, data),
      buffered: () =>
        (transport()?.ws?.bufferedAmount ?? 0) + (socket.io.engine?.writeBuffer?.length ?? 0),
      close: () => {
        current = false;
        socket.disconnect();
      },
    };
    return;
  }
  const WebSocketClass = await wsModule();
  const ws: WebSocket = new WebSocketClass(target.url, {
    perMessageDeflate: false,
    ...(target.apiKey === undefined
      ? {}
      : { headers: { authorization: `Bearer ${target.apiKey}` } }),
  });
  ws.on('unexpected-response', (_req, res) => {
    ws.emit('error', new Error(`upgrade answered ${res.statusCode} ${res.statusMessage}`));
    res.resume();
  });
  await new Promise<void>((done, fail) => {
    ws.once('open', () => done());
    ws.once('error', fail);
  });
  // Until this process closes it: events of a connection it closed are not errors.
  let current = true;
  const close = () => {
    current = false;
    ws.close(1000);
  };
  ws.on('error', (err: Error) => {
    if (current) publishError(err.message);
  });
  ws.on('close', (code: number) => {
    if (current) publishError(`closed: ${code}`);
  });
  ws.on('message', (data: Buffer) => {
    if (!current) return;
    const control = readControl(data.toString());
    if (control.error !== null) publishError(control.error);
    else if (control.id?.startsWith('p')) {
      acked += 1;
      inFlight = Math.max(0, inFlight - 1);
    }
  });
  publisher =
    target.system === 'orchestra'
      ? {
          send: (topic, data, ack) =>
            ws.send(envelope(`p${publishSeq}`, { kind: 'publish', topic, data, ack })),
          buffered: () => ws.bufferedAmount,
          close,
        }
      : {
          send: (topic, data) => ws.send(JSON.stringify({ op: 'pub', topic, data })),
          buffered: () => ws.bufferedAmount,
          close,
        };
}

/**
 * Open loop: message i is due at start + i / rate, whatever happened to the earlier ones.
 * While the socket's buffer is full (or, with acks, the window is), the due messages wait;
 * how late each one went out is the lag.
 */
async function publish(request: Extract<LoadRequest, { type: 'publish' }>) {
  const pub = publisher;
  if (pub === null) throw new Error('the publisher is not connected');
  const planned = Math.max(1, Math.round(request.rate * request.seconds));
  const interval = 1000 / request.rate;
  const padding = 'x'.repeat(request.payloadBytes);
  const ack = request.ackWindow > 0;
  const lag = newHistogram();
  acked = 0;
  inFlight = 0;
  publishErrors = 0;
  firstPublishError = null;
  let heldBack = 0;
  let firstAt = 0;
  let lastAt = 0;
  const start = clock() + 5;
  const deadline = start + request.maxMs;
  let i = 0;
  while (i < planned && clock() < deadline) {
    const now = clock();
    const due = start + i * interval;
    if (now < due) {
      await sleep(Math.min(due - now, 50));
      continue;
    }
    let sent = 0;
    while (i < planned && start + i * interval <= clock() && sent < 1000) {
      if (pub.buffered() > PUBLISHER_MAX_BUFFERED || (ack && inFlight >= request.ackWindow)) {
        heldBack += 1;
        break;
      }
      const quarter = Math.min(3, Math.floor((4 * i) / planned));
      const data = payload(request.step, quarter, publishSeq, padding);
      record(lag, data.t - (start + i * interval));
      pub.send(request.topic, data, ack);
      publishSeq += 1;
      if (ack) inFlight += 1;
      if (firstAt === 0) firstAt = data.t;
      lastAt = data.t;
      i += 1;
      sent += 1;
    }
    // Let the socket write and the answers come in before the next batch.
    await new Promise<void>((done) => setImmediate(done));
    if (sent === 0) await sleep(1);
  }
  // With acks, wait (a little) for the last answers.
  const ackDeadline = clock() + 5_000;
  while (ack && inFlight > 0 && clock() < ackDeadline) await sleep(5);
  return {
    planned,
    published: i,
    firstAt,
    lastAt,
    lag,
    heldBack,
    acked,
    errors: publishErrors,
    firstError: firstPublishError,
  } satisfies PublishReport;
}

// ---------------------------------------------------------------------------------------

async function handle(request: LoadRequest): Promise<unknown> {
  switch (request.type) {
    case 'connect':
      return connectAll(request);
    case 'top-up':
      return topUp();
    case 'reset':
      resetCounters(request.step, request.excludeSlow);
      return null;
    case 'count':
      return { delivered, open: openCount } satisfies LoadCount;
    case 'collect':
      return collect();
    case 'pause': {
      if (slow === null) return null;
      if (slow.socket === null) throw new Error('the slow connection has no socket to pause');
      slow.socket.pause();
      slow.pausedAt = clock();
      slow.localPort = slow.socket.localPort ?? null;
      return slowReport();
    }
    case 'resume': {
      if (slow === null) return null;
      slow.resumedAt = clock();
      slow.socket?.resume();
      // Until it is closed, or has read what was waiting for it.
      const deadline = clock() + request.waitMs;
      let seen = -1;
      let quietSince = clock();
      while (clock() < deadline && slow.closedAt === null) {
        await sleep(100);
        if (slow.delivered !== seen) {
          seen = slow.delivered;
          quietSince = clock();
        } else if (clock() - quietSince > 1_000) {
          break;
        }
      }
      return slowReport();
    }
    case 'disconnect': {
      const result = await disconnectAll(request.timeoutMs);
      publisher?.close();
      publisher = null;
      return result;
    }
    case 'publisher-connect':
      await connectPublisher(request.target);
      return null;
    case 'publish':
      return publish(request);
    case 'stop':
      setImmediate(() => process.exit(0));
      return null;
  }
}

serveLoadRequests(handle);
