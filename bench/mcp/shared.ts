/**
 * What the MCP benchmark (bench/mcp.ts) and its child processes (bench/mcp/load.ts, the
 * client side; bench/mcp/upstream.ts, the MCP server) share: the two paths, the requests
 * over Node's IPC channel and their answers.
 */
import type { HistogramData } from '../realtime/shared.ts';

/** `direct`: the client talks to the upstream MCP server; `orchestra`: to `/mcp/{view}`. */
export type Path = 'direct' | 'orchestra';
export const PATHS: readonly Path[] = ['direct', 'orchestra'];
export const PATH_NAMES: Record<Path, string> = {
  direct: 'direct',
  orchestra: 'Orchestra /mcp/bench',
};

/** Where a client connects to, and with what. */
export interface Target {
  path: Path;
  /** The Streamable HTTP endpoint. */
  url: string;
  /** Orchestra: the API key sent as `Authorization: Bearer`. */
  apiKey?: string;
}

/** The upstream's one tool, and what the benchmark calls it with. */
export const TOOL_NAME = 'echo';
export const ECHO_PREFIX = 'echo: ';

/** A phase's calls that failed, and the first reason. */
export interface Failures {
  errors: number;
  firstError: string | null;
}

export type LoadRequest =
  /**
   * One client per target, then `calls` calls one at a time, alternating between the
   * targets call by call, so that noise hits both alike; `warmup` calls each first, not
   * recorded.
   */
  | { type: 'latency'; targets: Target[]; calls: number; warmup: number; maxMs: number }
  /** `clients` clients, each keeping `inFlight` calls outstanding, for `durationMs`. */
  | {
      type: 'throughput';
      target: Target;
      clients: number;
      inFlight: number;
      durationMs: number;
      maxCalls: number;
    }
  /**
   * `sessions` clients at once, each: initialize, then `calls` calls one after another,
   * then end its session.
   */
  | { type: 'sessions'; target: Target; sessions: number; calls: number; maxMs: number }
  | { type: 'stop' };

export interface LatencyReport {
  /** Per target, in the order given. */
  perTarget: (Failures & { calls: number; latency: HistogramData })[];
  ms: number;
}

export interface ThroughputReport extends Failures {
  calls: number;
  /** First call issued → last call answered. */
  ms: number;
  latency: HistogramData;
  /** Clients that could not initialize. */
  connectFailures: number;
}

export interface SessionsReport extends Failures {
  sessions: number;
  /** Sessions that initialized and made every call. */
  completed: number;
  calls: number;
  /** First initialize sent → last session done. */
  ms: number;
  initialize: HistogramData;
  latency: HistogramData;
  /** Whole session: initialize + calls. */
  session: HistogramData;
}

/** What the upstream answers to `stats`. */
export interface UpstreamStats {
  calls: number;
  sessionsOpened: number;
  sessionsOpen: number;
}

export type UpstreamRequest = { type: 'stats' } | { type: 'stop' };
