// MCP servers for tests: the reference servers from npm, the fixtures, and how to run one
// over HTTP on a free loopback port.
import { type ChildProcess, spawn } from 'node:child_process';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES = fileURLToPath(new URL('./fixtures/mcp/', import.meta.url));
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const NODE_MODULES = join(REPO_ROOT, 'node_modules');
export const EVERYTHING = join(
  NODE_MODULES,
  '@modelcontextprotocol/server-everything/dist/index.js',
);
export const FILESYSTEM = join(
  NODE_MODULES,
  '@modelcontextprotocol/server-filesystem/dist/index.js',
);
/** How long a server may take to start or answer on a busy machine. */
export const WAIT_MS = 60_000;

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Spawns server-everything over HTTP on a free loopback port; resolves once it listens. */
export function spawnEverythingHttp(mode: 'streamableHttp' | 'sse', fixedPort?: number) {
  return spawnHttpServer([EVERYTHING, mode], fixedPort);
}

/** Spawns a node HTTP MCP server with PORT set; resolves once it says it listens. */
export async function spawnHttpServer(args: string[], fixedPort?: number) {
  const port = fixedPort ?? (await freePort());
  const child: ChildProcess = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? '', PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listen line: ${stderr}`)), WAIT_MS);
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      if (stderr.length < 10_000) stderr += chunk;
      if (/port \d+/i.test(stderr)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
  });
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(-child.pid, 'SIGKILL');
    await exited;
  };
  return { port, kill };
}
