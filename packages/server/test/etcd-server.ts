import { ServerProcess } from './server-process.ts';

/** A real etcd (Debian's `etcd-server`) of the test's own. */
export class EtcdServer extends ServerProcess {
  clientPort = 0;
  peerPort = 0;

  private constructor() {
    super('etcd', 'etcd-server');
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.clientPort}`;
  }

  static start(): Promise<EtcdServer> {
    return ServerProcess.launch(new EtcdServer());
  }

  protected async assignPorts(free: () => Promise<number>): Promise<void> {
    this.clientPort = await free();
    this.peerPort = await free();
  }

  protected args(): string[] {
    const client = this.endpoint;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    return [
      '--name',
      'test',
      '--data-dir',
      `${this.dir.path}/data`,
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `test=${peer}`,
      '--log-level',
      'error',
    ];
  }

  protected async ready(): Promise<boolean> {
    const res = await fetch(`${this.endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    return res.ok && ((await res.json()) as { health?: string }).health === 'true';
  }
}
