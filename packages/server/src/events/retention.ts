import type { Logger } from 'pino';
import type { Job, Jobs } from '../platform/jobs.ts';
import type { EventLog } from './event-log.ts';

/** How often the sweeper runs at most; short retentions are swept more often. */
const MAX_SWEEP_INTERVAL_MS = 10 * 60_000;

/**
 * Deletes events older than the retention, at start and then periodically. Every node runs
 * one: trimming is an idempotent delete by age, so concurrent sweeps need no coordination.
 */
export class EventRetention {
  readonly #events: EventLog;
  readonly #retentionMs: number;
  readonly #log: Logger;
  readonly #job: Job;

  constructor(deps: { events: EventLog; retentionMs: number; log: Logger; jobs: Jobs }) {
    this.#events = deps.events;
    this.#retentionMs = deps.retentionMs;
    this.#log = deps.log;
    this.#job = deps.jobs.job({
      name: 'event-retention',
      intervalMs: Math.min(
        MAX_SWEEP_INTERVAL_MS,
        Math.max(1000, Math.floor(this.#retentionMs / 10)),
      ),
      run: () => this.#trim(),
      logFailure: (err) => this.#log.warn({ err }, 'could not trim expired events'),
    });
  }

  /** Sweeps once now (awaited) and then every interval until `stop`. */
  async start(): Promise<void> {
    await this.sweep();
    this.#job.start();
  }

  /** Deletes what has expired; a failure is logged and retried at the next sweep. */
  sweep(): Promise<void> {
    return this.#job.runNow();
  }

  async #trim(): Promise<void> {
    const removed = await this.#events.trim(new Date(Date.now() - this.#retentionMs));
    if (removed > 0) {
      this.#log.info({ removed, retention_ms: this.#retentionMs }, 'trimmed expired events');
    }
  }

  /** Stops sweeping and waits for a sweep in progress. */
  stop(): Promise<void> {
    return this.#job.stop();
  }
}
