import { type SpawnOptions, spawnSync } from 'node:child_process';
import { chownSync, existsSync, readdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ServerProcess } from './server-process.ts';

/**
 * A PostgreSQL server of the test's own (Debian's `postgresql` binaries), so that a test may
 * crash it and start it again without touching the machine's cluster other suites use.
 */
export class PostgresServer extends ServerProcess {
  port = 0;
  /** `kill` is an immediate shutdown: no checkpoint, crash recovery on the next start. */
  protected override readonly killSignal = 'SIGQUIT';
  readonly #owner = runAs();

  private constructor() {
    super(postgresBinary('postgres'), 'postgresql');
  }

  /** The `postgres` database, as the superuser `postgres` (trust on loopback). */
  get url(): string {
    return this.urlOf('postgres');
  }

  urlOf(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  static start(): Promise<PostgresServer> {
    return ServerProcess.launch(new PostgresServer());
  }

  /** Creates a database and returns its URL. */
  async createDatabase(name: string): Promise<string> {
    const client = new pg.Client({ connectionString: this.url });
    await client.connect();
    try {
      await client.query(`create database ${name}`);
    } finally {
      await client.end();
    }
    return this.urlOf(name);
  }

  /** Picks the port and creates the cluster; PostgreSQL refuses to run as root. */
  protected async assignPorts(free: () => Promise<number>): Promise<void> {
    this.port = await free();
    if (this.#owner) chownSync(this.dir.path, this.#owner.uid, this.#owner.gid);
    const init = spawnSync(
      postgresBinary('initdb'),
      ['-D', this.#data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'],
      { ...this.spawnOptions(), encoding: 'utf8' },
    );
    if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.error}`);
  }

  protected override spawnOptions(): SpawnOptions {
    return this.#owner ? { uid: this.#owner.uid, gid: this.#owner.gid } : {};
  }

  protected args(): string[] {
    return [
      ...['-D', this.#data, '-p', String(this.port)],
      ...['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${this.dir.path}`],
      // A process crash keeps what the OS has; fsync only guards against losing the machine.
      ...['-c', 'fsync=off', '-c', 'max_connections=200'],
    ];
  }

  protected async ready(): Promise<boolean> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 1000 });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('select 1');
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  }

  get #data(): string {
    return join(this.dir.path, 'data');
  }
}

/** The newest installed major version's binary (Debian: /usr/lib/postgresql/<major>/bin). */
function postgresBinary(name: string): string {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', name)))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  return majors[0] === undefined ? name : join(root, majors[0], 'bin', name);
}

/** When the tests run as root, the `postgres` system user's ids. */
function runAs(): { uid: number; gid: number } | null {
  if (userInfo().uid !== 0) return null;
  const id = (flag: string) =>
    Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout);
  const uid = id('-u');
  const gid = id('-g');
  if (!Number.isInteger(uid) || uid <= 0) throw new Error('running as root and no postgres user');
  return { uid, gid };
}
