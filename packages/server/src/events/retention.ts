import type { Logger } from 'pino';
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
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(deps: { events: EventLog; retentionMs: number; log: Logger }) {
    this.#events = deps.events;
    this.#retentionMs = deps.retentionMs;
    this.#log = deps.log;
  }

  /** Sweeps once now (awaited) and then every interval until `stop`. */
  async start(): Promise<void> {
    await this.sweep();
    const interval = Math.min(
      MAX_SWEEP_INTERVAL_MS,
      Math.max(1000, Math.floor(this.#retentionMs / 10)),
    );
    this.#timer = setInterval(() => {
      this.sweep().catch(() => {}); // sweep() logs its own failures
    }, interval);
    this.#timer.unref();
  }

  /** Deletes what has expired; a failure is logged and retried at the next sweep. */
  async sweep(): Promise<void> {
    if (this.#running) return this.#running;
    this.#running = (async () => {
      try {
        const removed = await this.#events.trim(new Date(Date.now() - this.#retentionMs));
        if (removed > 0)
          this.#log.info({ removed, retention_ms: this.#retentionMs }, 'trimmed expired events');
      } catch (err) {
        this.#log.warn({ err }, 'could not trim expired events');
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** Stops sweeping and waits for a sweep in progress. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
  }
}
