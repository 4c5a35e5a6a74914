import type { Logger } from 'pino';

/**
 * What a server start has taken, to be given back once, last taken first: the same list
 * serves a normal close and a start that fails half-way, so neither can forget a step or
 * take them in another order. Register the stop right after the step it undoes succeeds.
 */
export class Lifecycle {
  readonly #log: Logger;
  readonly #stops: { name: string; stop: () => Promise<unknown> | unknown }[] = [];
  #stopping: Promise<void> | undefined;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Registers what undoes a step just taken (`name` is for the log of a failed stop). */
  add(name: string, stop: () => Promise<unknown> | unknown): void {
    if (this.#stopping !== undefined) throw new Error(`${name}: started while stopping`);
    this.#stops.push({ name, stop });
  }

  /** The names registered so far, first taken first. */
  get names(): string[] {
    return this.#stops.map((s) => s.name);
  }

  /**
   * Runs every registered stop once, last registered first. A stop that fails is logged
   * and the others still run: a broken NATS connection must not leave the store open.
   */
  stopAll(): Promise<void> {
    this.#stopping ??= (async () => {
      for (const { name, stop } of [...this.#stops].reverse()) {
        try {
          await stop();
        } catch (err) {
          this.#log.warn({ err, step: name }, `could not stop ${name}`);
        }
      }
    })();
    return this.#stopping;
  }
}
