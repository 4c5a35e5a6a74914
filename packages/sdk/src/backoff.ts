/**
 * How long to wait before a retry or a reconnect: the first delay and the ceiling. The
 * shape of the `reconnect` option of `AgentWorker`.
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
