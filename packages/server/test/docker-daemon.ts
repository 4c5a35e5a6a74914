import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { chmod, copyFile, mkdir, symlink } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServerProcess } from './server-process.ts';

/**
 * A Docker engine of the test's own (Debian's `docker.io`): `dockerd` on a private socket,
 * with its own data and exec roots, no bridge and no iptables rules, so it touches nothing
 * of the machine's and needs no image registry. Needs root, as dockerd does.
 */
export class DockerDaemon extends ServerProcess {
  protected override readonly killSignal: NodeJS.Signals = 'SIGTERM';

  private constructor() {
    super('dockerd', 'docker.io');
  }

  get socketPath(): string {
    return join(this.dir.path, 'docker.sock');
  }

  static start(): Promise<DockerDaemon> {
    return ServerProcess.launch(new DockerDaemon());
  }

  protected async assignPorts(): Promise<void> {}

  protected args(): string[] {
    return [
      '--host',
      `unix://${this.socketPath}`,
      '--data-root',
      join(this.dir.path, 'data'),
      '--exec-root',
      join(this.dir.path, 'exec'),
      '--pidfile',
      join(this.dir.path, 'docker.pid'),
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
    ];
  }

  protected ready(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = request({ socketPath: this.socketPath, path: '/_ping', timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.once('error', () => resolve(false));
      req.end();
    });
  }

  /**
   * An image made with `docker import` from a root file system of Debian's busybox-static
   * (sh, sleep, httpd, nc… as links to one static binary): no registry needed.
   */
  async importBusybox(tag: string): Promise<void> {
    const root = mkdtempSync(join(tmpdir(), 'orchestra-rootfs-'));
    try {
      await mkdir(join(root, 'bin'));
      for (const dir of ['tmp', 'etc', 'proc', 'sys', 'dev']) await mkdir(join(root, dir));
      await copyFile('/bin/busybox', join(root, 'bin', 'busybox'));
      await chmod(join(root, 'bin', 'busybox'), 0o755);
      const applets = await output('/bin/busybox', ['--list']);
      for (const name of applets.split('\n').filter((n) => n !== '' && n !== 'busybox')) {
        await symlink('busybox', join(root, 'bin', name));
      }
      const tar = spawn('tar', ['-C', root, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const imported = spawn('docker', ['-H', `unix://${this.socketPath}`, 'import', '-', tag], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      tar.stdout.pipe(imported.stdin);
      let said = '';
      imported.stdout.on('data', (d) => (said += d));
      imported.stderr.on('data', (d) => (said += d));
      const code = await new Promise<number | null>((resolve) => imported.once('close', resolve));
      if (code !== 0) throw new Error(`docker import failed (${code}): ${said}`);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
}

function output(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (d) => (text += d));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve(text) : reject(new Error(`${command} exited with ${code}`)),
    );
  });
}
