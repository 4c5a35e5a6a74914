/**
 * What the config benchmark (bench/config.ts) and its load processes (bench/config/load.ts)
 * share: the systems under test, where a watcher or the putter connects, the value every put
 * writes, and the messages over Node's IPC channel. The latency histogram is the realtime
 * benchmark's (2 %-wide buckets, merged by the benchmark).
 */
import type { HistogramData } from '../realtime/shared.ts';

export type System = 'embedded' | 'orchestra-etcd' | 'raw-etcd';
export const SYSTEMS: readonly System[] = ['embedded', 'orchestra-etcd', 'raw-etcd'];
export const SYSTEM_NAMES: Record<System, string> = {
  embedded: 'Orchestra (embedded)',
  'orchestra-etcd': 'Orchestra (etcd)',
  'raw-etcd': 'etcd3 (raw)',
};

/** Where a watcher or the putter connects, and the prefix everything happens under. */
export type Target =
  | {
      kind: 'orchestra';
      /** http://127.0.0.1:<port> */
      baseUrl: string;
      apiKey: string;
      /** The config environment (`?env=`). */
      env: string;
      /** Watched prefix; the keys are `<prefix>k<i>`. */
      prefix: string;
    }
  | {
      kind: 'etcd';
      /** http://127.0.0.1:<port> */
      endpoint: string;
      /** The etcd key prefix; the keys are `<prefix>k<i>`. */
      prefix: string;
    };

// ---------------------------------------------------------------------------------------
// The value. Every put writes this JSON object, keys in this order:
//   {"k":<phase>,"s":<index of the put in the phase>,"t":<issued at, clock()>,"p":"xx…"}
// Orchestra's watch event carries it as `"value":{…}` ahead of `prev_value`; etcd's watch
// event is the value itself. The watchers read k, s and t without parsing the whole event.

export const VALUE_PREFIX = '{"k":';

/**
 * Milliseconds of CLOCK_MONOTONIC, which Linux keeps for the whole machine, so that the
 * putter's and the watchers' readings compare directly. Not `performance.timeOrigin +
 * performance.now()`: each process fixes its time origin at start-up, and on a busy machine
 * two processes' origins were seen 12 ms apart, more than the latency measured here.
 */
export const clock = () => Number(process.hrtime.bigint()) / 1e6;

/** The text of a put's value. `t` is `clock()` of the putter. */
export function valueText(phase: number, seq: number, sentAt: number, padding: string): string {
  return `{"k":${phase},"s":${seq},"t":${sentAt},"p":"${padding}"}`;
}

// ---------------------------------------------------------------------------------------
// IPC. Each request carries an id; the child answers with the same id. Its first message
// (id 0) says it is ready.

export type LoadRequest =
  | {
      type: 'watch';
      target: Target;
      /** Watchers to open in this process. */
      count: number;
      /** Watchers being opened at once. */
      parallel: number;
      timeoutMs: number;
    }
  /** Counts the deliveries of `phase` (values with `k` = phase, `s` < planned) from now on. */
  | { type: 'reset'; phase: number; planned: number }
  | { type: 'count' }
  | { type: 'collect' }
  | { type: 'unwatch'; timeoutMs: number }
  | { type: 'putter-connect'; target: Target; maxInFlight: number }
  | {
      type: 'put-paced';
      phase: number;
      /** Puts per second; put i is due at start + i / rate (open loop). */
      rate: number;
      count: number;
      keys: number;
      payloadBytes: number;
      /** A due put waits while this many are unanswered. */
      maxInFlight: number;
      /** Stop issuing after this long, on schedule or not. */
      maxMs: number;
    }
  | {
      type: 'put-burst';
      phase: number;
      /** Closed loop: `concurrency` puts in flight until `count` are issued or `maxMs` is up. */
      count: number;
      concurrency: number;
      keys: number;
      payloadBytes: number;
      maxMs: number;
    }
  | { type: 'stop' };

export interface WatchReport {
  opened: number;
  failed: number;
  firstError: string | null;
  ms: number;
}

/** What a watcher process counted since the last `reset`. */
export interface WatchCount {
  delivered: number;
  /** Watchers open now. */
  open: number;
}

export interface WatchCollect {
  phase: number;
  /** Deliveries of this phase, each (watcher, put) counted once. */
  delivered: number;
  /** The same (watcher, put) delivered again. */
  repeats: number;
  /** Deliveries of an earlier phase (late), and events that were no put of ours. */
  stale: number;
  other: number;
  /** `stream.error` events, errors of the connection or the etcd watch. */
  errors: number;
  lastError: string | null;
  /** Put issued → event received, every delivery of the phase. */
  latency: HistogramData;
  /** Arrival (`clock()`) of the first and the last delivery of the phase. */
  firstAt: number | null;
  lastAt: number | null;
  open: number;
  /** Watchers that ended since the reset without being asked to. */
  closed: number;
}

export interface PutReport {
  planned: number;
  issued: number;
  /** Answered 200/201 (Orchestra) or without error (etcd). */
  succeeded: number;
  errors: number;
  firstError: string | null;
  /** Issued at (`clock()`): the first and the last put; the last answer. */
  firstAt: number;
  lastAt: number;
  lastDoneAt: number;
  /** Paced: how late each put was issued against its schedule. */
  lag: HistogramData;
  /** Paced: due puts that waited because `maxInFlight` were unanswered. */
  heldBack: number;
  /** Issue → answer of every put. */
  roundTrip: HistogramData;
}
