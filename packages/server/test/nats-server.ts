import { OnePortServer, ServerProcess } from './server-process.ts';

/** A real nats-server (Debian's `nats-server`) of the test's own. */
export class NatsServer extends OnePortServer {
  readonly #jetstream: boolean;

  private constructor(jetstream: boolean) {
    super('nats-server', 'nats-server');
    this.#jetstream = jetstream;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** With JetStream unless `jetstream: false`. */
  static start(options: { jetstream?: boolean } = {}): Promise<NatsServer> {
    return ServerProcess.launch(new NatsServer(options.jetstream !== false));
  }

  protected args(): string[] {
    const base = ['-a', '127.0.0.1', '-p', String(this.port)];
    return this.#jetstream ? [...base, '-js', '-sd', `${this.dir.path}/js`] : base;
  }

  /** The server greets every connection with an INFO line once it is ready. */
  protected ready(): Promise<boolean> {
    return this.answers('INFO');
  }
}
