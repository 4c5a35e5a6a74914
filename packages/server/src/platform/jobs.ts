import { type Logger, pino } from 'pino';
import type { Metrics } from './metrics.ts';

/**
 * Background work of the server: the loops that sweep leases, trim events, relay changes,
 * check health. Every such loop is a `Job` made here, so that each one runs single-flight
 * (a run never overlaps the previous one), survives a failed run (logged, counted, tried
 * again at the next interval), stops once and waits for its run in progress, and, when it
 * must run on one node of a cluster, holds a leader claim and logs when it gains or loses it.
 *
 * Not jobs: per-connection and per-request timers (keep-alive pings, grace periods, an
 * event stream's heartbeat), the shutdown's drain, and the in-memory rate limiter's
 * eviction of full buckets (no I/O, nothing to fail): they live and die with what they serve.
 */

/** Runs a job on one node of the cluster: the node that holds `key` (through the KV). */
export interface LeaderSpec {
  key: string;
  /** Claims or renews `key` for this node; resolves true while this node holds it. */
  claim: (key: string) => Promise<boolean>;
  /** What the leader does, for the log: "relays config and registry changes to topics". */
  role: string;
  /** Called when this node stops being the leader (also at stop), to let go of its work. */
  onLost?: () => Promise<void> | void;
}

export interface JobSpec {
  /** A short stable name for logs and metrics: `topic-relay`, `lease-sweep`. */
  name: string;
  intervalMs: number;
  /** One run. `signal` aborts when the job stops. */
  run: (signal: AbortSignal) => Promise<unknown> | unknown;
  /** Also run once as soon as the job starts (default: first run after one interval). */
  runAtStart?: boolean;
  leader?: LeaderSpec;
  /** Level of the log line of a failed run (default `warn`). */
  failureLevel?: 'warn' | 'error' | 'debug';
  /** Logs a failed run instead of the job (to say it in the job's own words, or less often). */
  logFailure?: (err: unknown) => void;
}

/** Where jobs report: a logger, and the server's metrics when there are any. */
export class Jobs {
  readonly #log: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #jobs = new Set<Job>();

  constructor(deps: { log: Logger; metrics?: Metrics | undefined }) {
    this.#log = deps.log;
    this.#metrics = deps.metrics;
  }

  /** Makes a job; it runs once `start` is called on it. */
  job(spec: JobSpec): Job {
    const job = new Job(spec, this.#log, this.#metrics, () => this.#jobs.delete(job));
    this.#jobs.add(job);
    return job;
  }

  /**
   * Jobs that report nowhere: for a component made outside a server (a test, a CLI tool)
   * that was given no `Jobs` of its own.
   */
  static detached(): Jobs {
    return new Jobs({ log: pino({ level: 'silent' }) });
  }

  /** The jobs not stopped yet, for introspection and tests. */
  get names(): string[] {
    return [...this.#jobs].map((j) => j.name);
  }
}

export class Job {
  readonly name: string;
  readonly #spec: JobSpec;
  readonly #log: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #forget: () => void;
  readonly #abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #leader = false;
  #stopped = false;

  constructor(spec: JobSpec, log: Logger, metrics: Metrics | undefined, forget: () => void) {
    this.name = spec.name;
    this.#spec = spec;
    this.#log = log.child({ job: spec.name });
    this.#metrics = metrics;
    this.#forget = forget;
  }

  /** True while this node holds the job's leader claim (always false for other jobs). */
  get leader(): boolean {
    return this.#leader;
  }

  /** Starts the interval (and a first run, with `runAtStart`). Idempotent. */
  start(): void {
    if (this.#timer !== undefined || this.#stopped) return;
    this.#timer = setInterval(() => {
      void this.runNow();
    }, this.#spec.intervalMs);
    // Background work never keeps the process alive: stopping the server ends it.
    this.#timer.unref();
    if (this.#spec.runAtStart) void this.runNow();
  }

  /**
   * Runs the job now, unless a run is in progress: then resolves when that one ends
   * (single-flight). Never rejects: a failed run is logged and counted.
   */
  runNow(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    this.#running ??= this.#runOnce().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #runOnce(): Promise<void> {
    const started = performance.now();
    let outcome: 'done' | 'failed' | 'follower' = 'done';
    try {
      if (this.#spec.leader !== undefined && !(await this.#holdsClaim(this.#spec.leader))) {
        outcome = 'follower';
        return;
      }
      if (this.#stopped) return;
      await this.#spec.run(this.#abort.signal);
    } catch (err) {
      outcome = 'failed';
      if (this.#stopped) {
        // A run cut short by stop: nothing to report.
      } else if (this.#spec.logFailure !== undefined) {
        this.#spec.logFailure(err);
      } else {
        this.#log[this.#spec.failureLevel ?? 'warn'](
          { err },
          `${this.name}: a run failed; it runs again in ${this.#spec.intervalMs} ms`,
        );
      }
    } finally {
      this.#metrics?.jobRuns.inc({ job: this.name, outcome });
      if (outcome !== 'follower') {
        this.#metrics?.jobSeconds.observe({ job: this.name }, (performance.now() - started) / 1000);
      }
    }
  }

  /** Claims (or renews) the leader key; logs and reports a change of leadership. */
  async #holdsClaim(leader: LeaderSpec): Promise<boolean> {
    const now = await leader.claim(leader.key);
    if (now !== this.#leader) {
      this.#leader = now;
      this.#metrics?.jobLeader.set({ job: this.name }, now ? 1 : 0);
      if (now) this.#log.info(`this node now ${leader.role}`);
      else {
        this.#log.info(`${this.name}: no longer the leader`);
        await leader.onLost?.();
      }
    }
    return now;
  }

  /** Stops the interval, aborts the run in progress and waits for it. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return this.#running;
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#abort.abort();
    this.#forget();
    await this.#running;
    if (this.#leader) {
      this.#leader = false;
      this.#metrics?.jobLeader.set({ job: this.name }, 0);
      await this.#spec.leader?.onLost?.();
    }
  }
}
