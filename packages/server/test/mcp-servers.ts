// MCP servers for tests: the reference servers from npm, the fixtures, and how to run one
// over HTTP on a free loopback port.
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childEnv, runCommand, tempDir } from './helpers.ts';

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

/** A 2025-11-25 `initialize` request, as the body of a raw POST to /mcp. */
export const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: {
    protocolVersion: '2025-11-25',
    capabilities: {},
    clientInfo: { name: 'raw', version: '1' },
  },
});

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

/**
 * A loopback proxy that adds the API key to every request: the conformance CLI cannot send
 * headers of its own. Everything else (Host included) passes unchanged.
 */
export async function credentialProxy(
  target: string,
  key: string,
): Promise<{ url: string; close: () => Promise<void> }> {
  const upstream = new URL(target);
  const proxy = createHttpServer((req, res) => {
    const forwarded = httpRequest(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, authorization: `Bearer ${key}` },
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forwarded.on('error', () => res.destroy());
    res.on('close', () => forwarded.destroy());
    req.pipe(forwarded);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    close: () =>
      new Promise((resolve) => {
        proxy.closeAllConnections();
        proxy.close(() => resolve());
      }),
  };
}

export const CONFORMANCE_CLI = fileURLToPath(
  new URL('../../../node_modules/@modelcontextprotocol/conformance/dist/index.js', import.meta.url),
);
export const EXPECTED_FAILURES = fileURLToPath(
  new URL('../../../conformance/mcp-expected-failures.yml', import.meta.url),
);

/**
 * Runs the MCP conformance suite's server scenarios against `/mcp/{view}` of a server
 * (through a proxy that adds its API key), with an expected-failures file. Resolves to the
 * CLI's exit code and its totals line.
 */
export async function runConformance(options: {
  serverUrl: string;
  apiKey: string;
  view: string;
  expectedFailures: string;
}): Promise<{ code: number | null; output: string; totals: string }> {
  const proxy = await credentialProxy(options.serverUrl, options.apiKey);
  const work = tempDir('orchestra-mcp-conformance-');
  try {
    const result = await runCommand(
      process.execPath,
      [
        CONFORMANCE_CLI,
        'server',
        '--url',
        `${proxy.url}/mcp/${options.view}`,
        '--expected-failures',
        options.expectedFailures,
        '-o',
        work.path,
      ],
      { cwd: work.path, env: childEnv(), timeoutMs: 180_000 },
    );
    return {
      code: result.code,
      output: `${result.stdout}\n${result.stderr}`,
      totals: /Total: .*/.exec(result.stdout)?.[0] ?? 'no summary',
    };
  } finally {
    await proxy.close();
    if (process.env.KEEP_CONFORMANCE === undefined) work.remove();
  }
}
