import { OnePortServer, ServerProcess } from './server-process.ts';

/** A real nats-server with JetStream (Debian's `nats-server`) of the test's own. */
export class NatsServer extends OnePortServer {
  private constructor() {
    super('nats-server', 'nats-server');
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static start(): Promise<NatsServer> {
    return ServerProcess.launch(new NatsServer());
  }

  protected args(): string[] {
    return ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', `${this.dir.path}/js`];
  }

  /** The server greets every connection with an INFO line once it is ready. */
  protected ready(): Promise<boolean> {
    return this.answers('INFO');
  }
}
