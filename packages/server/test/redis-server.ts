import { OnePortServer, ServerProcess } from './server-process.ts';

/** A real redis-server (Debian's `redis-server`) of the test's own, keeping nothing on disk. */
export class RedisServer extends OnePortServer {
  private constructor() {
    super('redis-server', 'redis-server');
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static start(): Promise<RedisServer> {
    return ServerProcess.launch(new RedisServer());
  }

  protected args(): string[] {
    const dir = this.dir.path;
    return ['--bind', '127.0.0.1', '--port', String(this.port), '--save', '', '--dir', dir];
  }

  /** Answers PING with +PONG once it is ready. */
  protected ready(): Promise<boolean> {
    return this.answers('+PONG', 'PING\r\n');
  }
}
