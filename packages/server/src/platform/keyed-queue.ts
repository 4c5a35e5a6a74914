/**
 * Runs work one at a time per key (an instance, a tenant), in the order it was asked for;
 * work for different keys runs concurrently. A failure does not stop what comes after it.
 */
export class KeyedQueue {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const next = previous.then(work, work);
    const settled = next.catch(() => {});
    this.#tails.set(key, settled);
    void settled.then(() => {
      if (this.#tails.get(key) === settled) this.#tails.delete(key);
    });
    return next;
  }

  /** Resolves once everything asked for so far has run. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.#tails.values()]);
  }
}
