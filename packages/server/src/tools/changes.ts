import type { Bus } from '../bus/bus.ts';

const SUBJECT = 'tools.changed';
/** Changes of one tenant within this long reach listeners once. */
const COALESCE_MS = 200;

/**
 * "What a tenant's callers may list has changed": a tool was added, changed, held,
 * approved or removed, or a policy or a view changed. Said on the bus, so every node hears
 * it (the MCP gateway tells its open sessions `notifications/tools/list_changed`).
 * A wake-up only: a listener reads the store again; a message lost with a bus outage
 * leaves a session's list stale until the next change or its next `tools/list`.
 */
export class ToolChanges {
  readonly #bus: Bus;
  readonly #listeners = new Map<string, Set<() => void>>();
  readonly #pending = new Map<string, NodeJS.Timeout>();
  #unsubscribe: (() => void) | undefined;

  constructor(bus: Bus) {
    this.#bus = bus;
  }

  /** Says that tenant `tenantId`'s list changed, on every node. */
  changed(tenantId: string): void {
    this.#bus.publish(SUBJECT, { tenantId });
  }

  /** Calls `listener` after changes of the tenant's list, until the returned function is called. */
  listen(tenantId: string, listener: () => void): () => void {
    this.#unsubscribe ??= this.#bus.subscribe(SUBJECT, (message) => {
      const tenant = (message as { tenantId?: unknown }).tenantId;
      if (typeof tenant === 'string') this.#schedule(tenant);
    });
    let listeners = this.#listeners.get(tenantId);
    if (listeners === undefined) {
      listeners = new Set();
      this.#listeners.set(tenantId, listeners);
    }
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0) this.#listeners.delete(tenantId);
    };
  }

  /** Stops listening to the bus and drops pending notices. */
  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    for (const timer of this.#pending.values()) clearTimeout(timer);
    this.#pending.clear();
    this.#listeners.clear();
  }

  #schedule(tenantId: string): void {
    if (!this.#listeners.has(tenantId) || this.#pending.has(tenantId)) return;
    const timer = setTimeout(() => {
      this.#pending.delete(tenantId);
      for (const listener of [...(this.#listeners.get(tenantId) ?? [])]) {
        try {
          listener();
        } catch {
          // One listener's failure must not keep the notice from the others.
        }
      }
    }, COALESCE_MS);
    timer.unref();
    this.#pending.set(tenantId, timer);
  }
}
