/**
 * How long to wait before a retry or a reconnect: the first delay and the ceiling. The
 * shape of the `reconnect` option every client of the SDK takes.
 */
export interface ReconnectOptions {
  /** The step after the first failure; it doubles with each one after. */
  initialDelayMs?: number;
  /** The largest step. */
  maxDelayMs?: number;
}

/**
 * The one backoff of the SDK: after the `failures`-th consecutive failure (1 for the first)
 * the step is `initialDelayMs · 2^(failures − 1)`, at most `maxDelayMs`, and the delay is
 * drawn within it:
 *
 * - `full` jitter: anywhere from 0 to the step, which spreads many clients reconnecting to
 *   one server the most (the agent and realtime reconnects);
 * - `equal` jitter: from half the step to the step, which never retries at once (REST
 *   retries and stream resumes).
 *
 * The delay is never shorter than `atLeastMs` (a server's Retry-After). `random` is
 * `Math.random` unless a test fixes it.
 */
export function backoffDelayMs(
  failures: number,
  options: Required<ReconnectOptions> & {
    jitter: 'full' | 'equal';
    atLeastMs?: number;
    random?: () => number;
  },
): number {
  const { initialDelayMs, maxDelayMs, jitter, atLeastMs = 0, random = Math.random } = options;
  // Capped so that a long outage cannot overflow the power into Infinity or NaN.
  const doublings = Math.min(Math.max(failures - 1, 0), 30);
  const step = Math.min(maxDelayMs, initialDelayMs * 2 ** doublings);
  const drawn = jitter === 'full' ? random() * step : step / 2 + (random() * step) / 2;
  return Math.max(Math.round(drawn), atLeastMs);
}

/**
 * Counts consecutive failures of one thing (a connection, a stream, a resend) and draws the
 * delay before the next try from `backoffDelayMs`. A success calls `reset`.
 */
export class Backoff {
  readonly #options: Required<ReconnectOptions> & { jitter: 'full' | 'equal' };
  #failures = 0;

  /** `reconnect` fields left out take `defaults`. */
  constructor(
    reconnect: ReconnectOptions | undefined,
    defaults: Required<ReconnectOptions> & { jitter: 'full' | 'equal' },
  ) {
    this.#options = {
      initialDelayMs: reconnect?.initialDelayMs ?? defaults.initialDelayMs,
      maxDelayMs: reconnect?.maxDelayMs ?? defaults.maxDelayMs,
      jitter: defaults.jitter,
    };
    for (const name of ['initialDelayMs', 'maxDelayMs'] as const) {
      const value = this.#options[name];
      if (!(Number.isFinite(value) && value >= 0)) {
        throw new RangeError(`reconnect.${name} must be a number, 0 or more; got ${value}`);
      }
    }
  }

  /** Failures since the last success. */
  get failures(): number {
    return this.#failures;
  }

  /** Counts one more failure and returns the delay before the next try. */
  fail(atLeastMs = 0): number {
    this.#failures += 1;
    return backoffDelayMs(this.#failures, { ...this.#options, atLeastMs });
  }

  reset(): void {
    this.#failures = 0;
  }
}

/** Resolves after `ms`; rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
