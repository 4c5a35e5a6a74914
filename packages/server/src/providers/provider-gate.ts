/**
 * One provider's limits on this node: at most `maxConcurrency` requests in flight and at
 * most `requestsPerMinute` started a minute. A request over either waits its turn, first in
 * first out, until its signal aborts. Nothing is refused: the caller's own timeout and
 * budget decide how long waiting is worth it.
 */
export class ProviderGate {
  #maxConcurrency: number;
  #perMinute: number | null;
  #running = 0;
  /** Tokens of the minute bucket; refilled continuously up to `perMinute`. */
  #tokens: number;
  #refilledAt = Date.now();
  readonly #waiting: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(limits: { maxConcurrency: number; requestsPerMinute: number | null }) {
    this.#maxConcurrency = limits.maxConcurrency;
    this.#perMinute = limits.requestsPerMinute;
    this.#tokens = limits.requestsPerMinute ?? 0;
  }

  /** Takes new limits (the provider was updated); waiters keep their places. */
  configure(limits: { maxConcurrency: number; requestsPerMinute: number | null }): void {
    if (
      limits.maxConcurrency === this.#maxConcurrency &&
      limits.requestsPerMinute === this.#perMinute
    ) {
      return;
    }
    this.#maxConcurrency = limits.maxConcurrency;
    this.#perMinute = limits.requestsPerMinute;
    this.#tokens = Math.min(this.#tokens, this.#perMinute ?? 0);
    this.#drain();
  }

  /** Requests in flight and waiting, for metrics and tests. */
  get load(): { running: number; waiting: number } {
    return { running: this.#running, waiting: this.#waiting.length };
  }

  /** Waits for a turn; call the returned function when the request is over. */
  async enter(signal?: AbortSignal): Promise<() => void> {
    if (this.#waiting.length === 0 && this.#canStart()) {
      this.#take();
      return this.#release();
    }
    signal?.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiting.indexOf(entry);
        if (i !== -1) this.#waiting.splice(i, 1);
        reject(signal?.reason);
      };
      // Resolved by #drain, which has already taken the slot (and token) for it.
      const entry = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject,
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(entry);
      this.#drain();
    });
    return this.#release();
  }

  #refill(): void {
    if (this.#perMinute === null) return;
    const now = Date.now();
    this.#tokens = Math.min(
      this.#perMinute,
      this.#tokens + ((now - this.#refilledAt) * this.#perMinute) / 60_000,
    );
    this.#refilledAt = now;
  }

  #canStart(): boolean {
    if (this.#running >= this.#maxConcurrency) return false;
    if (this.#perMinute === null) return true;
    this.#refill();
    return this.#tokens >= 1;
  }

  #take(): void {
    this.#running += 1;
    if (this.#perMinute !== null) this.#tokens -= 1;
  }

  #release(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#running -= 1;
      this.#drain();
    };
  }

  /** Lets waiters in while they may start; otherwise wakes up when the next token is due. */
  #drain(): void {
    while (this.#waiting.length > 0 && this.#canStart()) {
      this.#take();
      this.#waiting.shift()?.resolve();
    }
    if (
      this.#waiting.length > 0 &&
      this.#perMinute !== null &&
      this.#running < this.#maxConcurrency &&
      this.#timer === undefined
    ) {
      const waitMs = Math.max(1, Math.ceil(((1 - this.#tokens) * 60_000) / this.#perMinute));
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#drain();
      }, waitMs);
      this.#timer.unref();
    }
  }
}
