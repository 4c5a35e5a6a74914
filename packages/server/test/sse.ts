/** One Server-Sent Event as a client sees it. */
export interface SseEvent {
  id: string | undefined;
  event: string;
  data: any;
}

/**
 * Reads a Server-Sent Events response the way EventSource would (fields `id`, `event`,
 * `data`; comments skipped) and lets a test wait for what it expects.
 */
export class SseReader {
  readonly events: SseEvent[] = [];
  readonly status: number;
  readonly #controller: AbortController;
  #waiters: { until: (events: SseEvent[]) => boolean; resolve: () => void }[] = [];
  #ended = false;
  readonly done: Promise<void>;

  private constructor(response: Response, controller: AbortController) {
    this.status = response.status;
    this.#controller = controller;
    this.done = this.#read(response).finally(() => {
      this.#ended = true;
      for (const w of this.#waiters) w.resolve();
      this.#waiters = [];
    });
  }

  static async open(url: string, headers: Record<string, string>): Promise<SseReader> {
    const controller = new AbortController();
    const response = await fetch(url, {
      headers: { accept: 'text/event-stream', ...headers },
      signal: controller.signal,
    });
    return new SseReader(response, controller);
  }

  async #read(response: Response): Promise<void> {
    if (!response.body) return;
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end = buffer.indexOf('\n\n');
        while (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          this.#parse(block);
          end = buffer.indexOf('\n\n');
        }
      }
    } catch {
      // aborted or the connection dropped: `done` resolves either way
    }
  }

  #parse(block: string): void {
    let id: string | undefined;
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':') || line === '') continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') id = value;
      else if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return;
    const text = data.join('\n');
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // keep the text
    }
    this.events.push({ id, event, data: parsed });
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.until(this.events)) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves once `until` holds for the events so far; rejects after `timeoutMs`. */
  async waitFor(until: (events: SseEvent[]) => boolean, timeoutMs = 10_000): Promise<SseEvent[]> {
    if (until(this.events)) return this.events;
    if (this.#ended) throw new Error(`the stream ended; events: ${JSON.stringify(this.events)}`);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`not seen in time; events: ${JSON.stringify(this.events)}`)),
        timeoutMs,
      );
      this.#waiters.push({
        until,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
    if (!until(this.events))
      throw new Error(`the stream ended; events: ${JSON.stringify(this.events)}`);
    return this.events;
  }

  /** Events other than keep-alives of a type, in order. */
  of(type: string): SseEvent[] {
    return this.events.filter((e) => e.event === type);
  }

  close(): void {
    this.#controller.abort();
  }
}
