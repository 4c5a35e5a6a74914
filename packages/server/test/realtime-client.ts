import { randomUUID } from 'node:crypto';
import { frameChecker, REALTIME_SERVER_FRAMES } from '@orchestra/protocol';
import WebSocket from 'ws';

// A bare realtime WebSocket client for tests, speaking docs/protocol.md by hand (not the SDK).

export type Payload = { kind: string } & Record<string, any>;
export interface Frame {
  header: { id: string; type: string; correlation_id?: string };
  payload: Payload;
}

/**
 * What a server frame breaks of the wire contract (`REALTIME_SERVER_FRAMES` of
 * @orchestra/protocol): an unknown kind, a missing or wrong field, a field the kind does not
 * declare. Undefined when it follows the contract.
 */
export const contractProblem = frameChecker(REALTIME_SERVER_FRAMES);

/** Every server frame, from any test client of this process, that broke the contract. */
export const contractViolations: string[] = [];

/** A realtime client: sends requests, collects every frame, waits for what a test expects. */
export class RealtimeTestClient {
  readonly socket: WebSocket;
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Pings received from the server, counted from the start (one may come before `open`). */
  pings = 0;
  #waiters: { match: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];

  constructor(url: string, credential?: string, options: WebSocket.ClientOptions = {}) {
    this.socket = new WebSocket(`${url.replace('http', 'ws')}/v1/realtime`, {
      ...options,
      headers: credential ? { authorization: `Bearer ${credential}` } : {},
    });
    this.socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as Frame;
      const problem = contractProblem(frame.payload);
      if (problem !== undefined) contractViolations.push(`${problem}: ${String(data)}`);
      this.frames.push(frame);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.match(frame)) return true;
        w.resolve(frame);
        return false;
      });
    });
    this.closed = new Promise((resolve) => {
      this.socket.on('close', (code, reason) => resolve({ code, reason: String(reason) }));
    });
    this.socket.on('ping', () => {
      this.pings += 1;
    });
    this.socket.on('error', () => {});
  }

  static async open(url: string, credential?: string, options?: WebSocket.ClientOptions) {
    const client = new RealtimeTestClient(url, credential, options);
    await new Promise<void>((resolve, reject) => {
      client.socket.once('open', () => resolve());
      client.socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`upgrade refused: ${res.statusCode}`)),
      );
      client.socket.once('error', reject);
    });
    return client;
  }

  /** Sends a REQUEST without waiting for an answer (a publish without ack has none). */
  send(payload: Payload): void {
    this.socket.send(
      JSON.stringify({
        header: {
          id: randomUUID(),
          type: 'REQUEST',
          timestamp: new Date().toISOString(),
          source: 'test',
          version: 1,
        },
        payload,
      }),
    );
  }

  sendRaw(text: string): void {
    this.socket.send(text);
  }

  /** Sends a REQUEST and resolves with its answer (a RESPONSE or an error). */
  async request(payload: Payload): Promise<Payload> {
    const id = randomUUID();
    const answer = this.next((f) => f.header.correlation_id === id);
    this.socket.send(
      JSON.stringify({
        header: {
          id,
          type: 'REQUEST',
          timestamp: new Date().toISOString(),
          source: 'test',
          version: 1,
        },
        payload,
      }),
    );
    return (await answer).payload;
  }

  /** The first frame that matches; fails after `timeoutMs` (a minute: machines are busy). */
  next(match: (f: Frame) => boolean, timeoutMs = 60_000): Promise<Frame> {
    const seen = this.frames.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no matching frame in time')), timeoutMs);
      this.#waiters.push({
        match,
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
      });
    });
  }

  messages(topic: string): Payload[] {
    return this.frames
      .filter((f) => f.payload.kind === 'message' && f.payload.topic === topic)
      .map((f) => f.payload);
  }

  /** Waits until `count` messages of `topic` arrived. */
  async waitForMessages(topic: string, count: number): Promise<Payload[]> {
    await this.next(() => this.messages(topic).length >= count);
    return this.messages(topic);
  }

  close(): void {
    this.socket.terminate();
  }
}
