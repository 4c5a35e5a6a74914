/**
 * The bus port: fire-and-forget messages between the parts of Orchestra, on one node
 * (in-process) or across nodes (NATS, in cluster mode).
 *
 * Deliberately left out: durability, ordering across subjects, acknowledgements and
 * replay. The bus carries wake-ups and fan-out; anything that must not be lost is written
 * to the store first, and a subscriber that misses a message catches up from there.
 */
export interface Bus {
  readonly backend: 'in-process' | 'nats';
  /** Delivers to every current subscriber of `subject`; returns once handed over. */
  publish(subject: string, message: unknown): void;
  /** Calls `handler` for each message on `subject` until the returned function is called. */
  subscribe(subject: string, handler: (message: unknown) => void): () => void;
  /** Messages dropped so far because they could not be handed to other nodes. */
  readonly dropped: number;
  /** Rejects when the bus cannot carry messages to other nodes within `timeoutMs`. */
  ping(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** The bus within one process: subscribers are called synchronously, in subscription order. */
export class InProcessBus implements Bus {
  readonly backend = 'in-process' as const;
  readonly dropped = 0;
  readonly #subscribers = new Map<string, Set<(message: unknown) => void>>();

  publish(subject: string, message: unknown): void {
    const handlers = this.#subscribers.get(subject);
    if (handlers === undefined) return;
    for (const handler of [...handlers]) {
      try {
        handler(message);
      } catch {
        // One failing subscriber must not keep the message from the others.
      }
    }
  }

  subscribe(subject: string, handler: (message: unknown) => void): () => void {
    let handlers = this.#subscribers.get(subject);
    if (handlers === undefined) {
      handlers = new Set();
      this.#subscribers.set(subject, handlers);
    }
    handlers.add(handler);
    return () => {
      handlers.delete(handler);
      if (handlers.size === 0) this.#subscribers.delete(subject);
    };
  }

  async ping(_timeoutMs: number): Promise<void> {}

  async close(): Promise<void> {
    this.#subscribers.clear();
  }
}
