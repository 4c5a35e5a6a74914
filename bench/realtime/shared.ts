/**
 * What the realtime benchmark (bench/realtime.ts) and its child processes
 * (bench/realtime/load.ts, bench/realtime/anchor-server.ts) share: the systems under test,
 * the messages over Node's IPC channel, the payload every publisher sends, and a cheap
 * latency histogram that the load generators fill and the benchmark merges.
 */

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export const clock = () => performance.timeOrigin + performance.now();

export const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));

export type System = 'ws' | 'socketio' | 'orchestra';
export const SYSTEMS: readonly System[] = ['ws', 'socketio', 'orchestra'];
export const SYSTEM_NAMES: Record<System, string> = {
  ws: 'ws broadcast',
  socketio: 'Socket.IO rooms',
  orchestra: 'Orchestra',
};

/** Where a client connects to, and with what. */
export interface Target {
  system: System;
  /** ws://host:port/ for ws, http://host:port for Socket.IO, ws://host:port/v1/realtime. */
  url: string;
  /** Orchestra: the API key sent as `Authorization: Bearer`. */
  apiKey?: string;
}

// ---------------------------------------------------------------------------------------
// The payload. Every publisher sends `data` as this JSON object, keys in this order:
//   {"k":<step>,"q":<quarter of the step, 0-3>,"s":<sequence>,"t":<sent at, ms>,"p":"xx…"}
// Subscribers of ws and Orchestra find it in the raw frame without parsing the whole frame
// (PAYLOAD_PREFIX, then the numbers); Socket.IO's client parses every packet anyway.

export const PAYLOAD_PREFIX = '{"k":';

export function payload(step: number, quarter: number, seq: number, padding: string) {
  return { k: step, q: quarter, s: seq, t: clock(), p: padding };
}

// ---------------------------------------------------------------------------------------
// Latency histogram: log-spaced buckets, 2 % wide, from 1 µs to about 2 minutes. Recording
// is a logarithm and an increment; percentiles are read as the bucket's upper bound, so at
// most 2 % high.

const BUCKET_MIN_MS = 0.001;
const BUCKET_FACTOR = 1.02;
const LOG_FACTOR = Math.log(BUCKET_FACTOR);
export const BUCKETS = 1000;

export interface HistogramData {
  counts: Uint32Array;
  n: number;
  sum: number;
  min: number;
  max: number;
}

export function newHistogram(): HistogramData {
  return {
    counts: new Uint32Array(BUCKETS),
    n: 0,
    sum: 0,
    min: Number.POSITIVE_INFINITY,
    max: Number.NEGATIVE_INFINITY,
  };
}

export function record(h: HistogramData, ms: number): void {
  const v = ms > BUCKET_MIN_MS ? ms : BUCKET_MIN_MS;
  let b = Math.ceil(Math.log(v / BUCKET_MIN_MS) / LOG_FACTOR);
  if (b >= BUCKETS) b = BUCKETS - 1;
  h.counts[b] = (h.counts[b] ?? 0) + 1;
  h.n += 1;
  h.sum += ms;
  if (ms < h.min) h.min = ms;
  if (ms > h.max) h.max = ms;
}

export function mergeInto(into: HistogramData, from: HistogramData): void {
  for (let i = 0; i < BUCKETS; i++) into.counts[i] = (into.counts[i] ?? 0) + (from.counts[i] ?? 0);
  into.n += from.n;
  into.sum += from.sum;
  if (from.min < into.min) into.min = from.min;
  if (from.max > into.max) into.max = from.max;
}

export function merged(histograms: HistogramData[]): HistogramData {
  const h = newHistogram();
  for (const x of histograms) mergeInto(h, x);
  return h;
}

/** The q-quantile (0..1), in ms: the upper bound of its bucket (never above the maximum). */
export function quantile(h: HistogramData, q: number): number | null {
  if (h.n === 0) return null;
  const rank = Math.max(1, Math.ceil(q * h.n));
  let seen = 0;
  for (let i = 0; i < BUCKETS; i++) {
    seen += h.counts[i] ?? 0;
    if (seen >= rank) return Math.min(BUCKET_MIN_MS * BUCKET_FACTOR ** i, h.max);
  }
  return h.max;
}

export interface LatencySummary {
  count: number;
  mean: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

const r3 = (n: number) => Math.round(n * 1000) / 1000;

export function summary(h: HistogramData): LatencySummary | null {
  if (h.n === 0) return null;
  const at = (q: number) => r3(quantile(h, q) ?? 0);
  return {
    count: h.n,
    mean: r3(h.sum / h.n),
    min: r3(h.min),
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    p999: at(0.999),
    max: r3(h.max),
  };
}

// ---------------------------------------------------------------------------------------
// IPC between the benchmark and its load generators. Each request carries an id; the
// child answers with the same id. Its first message (id 0) says it is ready.

export type LoadRequest =
  | {
      type: 'connect';
      target: Target;
      /** Connections to open, each subscribed to every topic of `topics`. */
      count: number;
      /** Topics of connection i: `topics(i)` is built from these (see load.ts). */
      topics: TopicPlan;
      /** Index of this generator's first connection among all connections. */
      firstIndex: number;
      sourceAddresses: string[];
      /** Connections being opened at once. */
      parallel: number;
      /** The first connection can be paused later (slow consumer). */
      slowCandidate: boolean;
      timeoutMs: number;
    }
  /** Reopens the connections the server closed since `connect` (not the slow one once paused). */
  | { type: 'top-up' }
  /** Counts the messages of `step` from now on; `excludeSlow`: not those of the slow one. */
  | { type: 'reset'; step: number; excludeSlow: boolean }
  | { type: 'count' }
  | { type: 'collect' }
  | { type: 'pause' }
  | { type: 'resume'; waitMs: number }
  | { type: 'disconnect'; timeoutMs: number }
  | { type: 'publisher-connect'; target: Target }
  | {
      type: 'publish';
      step: number;
      topic: string;
      /** Messages per second (may be below 1). */
      rate: number;
      seconds: number;
      payloadBytes: number;
      /** Orchestra: publishes awaiting their `published` answer; 0 sends `ack: false`. */
      ackWindow: number;
      /** Stop publishing after this long, on schedule or not. */
      maxMs: number;
    }
  | { type: 'stop' };

/** Connection i subscribes to `shared` and, if `groups` > 0, to `${groupPrefix}${i % groups}`. */
export interface TopicPlan {
  shared: string;
  groups: number;
  groupPrefix: string;
}

export function topicsOf(plan: TopicPlan, index: number): string[] {
  return plan.groups > 0
    ? [plan.shared, `${plan.groupPrefix}${index % plan.groups}`]
    : [plan.shared];
}

export interface ConnectReport {
  connected: number;
  failed: number;
  firstError: string | null;
  ms: number;
}

/** What a generator counted since the last `reset`, for the messages of that step. */
export interface LoadCount {
  delivered: number;
  /** Connections open now. */
  open: number;
}

export interface LoadCollect {
  step: number;
  /** Messages of the current step received by the connections that were not paused. */
  delivered: number;
  /** Per quarter of the step (payload `q`), and all together. */
  latency: HistogramData;
  quarters: HistogramData[];
  /** Messages of an earlier step (late), frames that were no message, error frames. */
  stale: number;
  other: number;
  errorFrames: number;
  lastError: string | null;
  /** Sequence numbers skipped or repeated, per connection (loss, duplicates, reordering). */
  gaps: number;
  repeats: number;
  /** Connections closed since the last reset, by close code (or "error"). */
  closes: Record<string, number>;
  open: number;
  /** The paused (slow) connection, if there is one in this generator. */
  slow: SlowReport | null;
}

export interface SlowReport {
  pausedAt: number | null;
  resumedAt: number | null;
  /** Messages it received (before the pause and after the resume), and the last one's `t`. */
  delivered: number;
  lastSentAt: number | null;
  /** Messages received after the resume: what the kernel and the server had buffered. */
  deliveredAfterResume: number;
  closeCode: number | null;
  closeReason: string | null;
  closedAt: number | null;
  localPort: number | null;
}

export interface PublishReport {
  planned: number;
  published: number;
  /** Sent at (ms) of the first and the last publish. */
  firstAt: number;
  lastAt: number;
  /** How late the publishes went out against their schedule. */
  lag: HistogramData;
  /** Sends held back because the publisher's socket buffer was full (backpressure). */
  heldBack: number;
  acked: number;
  errors: number;
  firstError: string | null;
}
