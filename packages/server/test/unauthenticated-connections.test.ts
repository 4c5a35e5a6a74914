// Issue 18, finding 1: refused WebSocket upgrades left their sockets open (CLOSE-WAIT) until
// the process died of EMFILE, with no credential needed; and nothing bounded what a client
// without a credential could hold.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  eventually,
  killSpawned,
  type SpawnedOrchestra,
  spawnOrchestra,
  startTestServer,
  tempDir,
} from './helpers.ts';

/** Sends raw bytes on a new connection; resolves to all it received once the server closes. */
function exchange(port: number, request: string, options: { keepOpen?: boolean } = {}) {
  return new Promise<{ text: string; closed: boolean; socket: Socket }>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      if (request !== '') socket.write(request);
    });
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open; received ${JSON.stringify(text)}`));
    }, 60_000);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (options.keepOpen && text.includes('\r\n\r\n')) {
        clearTimeout(timer);
        resolve({ text, closed: false, socket });
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true, socket });
    });
  });
}

/** Opens a connection that sends nothing; resolves once it is established. */
function silentConnection(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', reject);
  });
}

function upgradeRequest(path: string, headers: Record<string, string> = {}): string {
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  return (
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`
  );
}

/** Sends an upgrade, reads the status line, and hangs up as a client that gave up would. */
function refusedUpgrade(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.includes('\r\n\r\n')) {
        socket.destroy();
        resolve(text.slice(0, text.indexOf('\r\n')));
      }
    });
    socket.on('error', reject);
  });
}

function openFiles(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

describe('refused WebSocket upgrades leak sockets until the server dies (EMFILE)', () => {
  const dir = tempDir();
  let server: SpawnedOrchestra;
  let port: number;
  let adminKey: string;

  before(async () => {
    server = await spawnOrchestra({
      cwd: dir.path,
      dataDir: join(dir.path, 'data'),
      // 700 open files crashed the server after 700 refused upgrades.
      maxOpenFiles: 512,
      // A rate limit, so that /v1/realtime also refuses with 429.
      env: { ORCHESTRA_RATE_LIMIT_PER_SECOND: '50', ORCHESTRA_RATE_LIMIT_BURST: '50' },
    });
    port = Number(new URL(server.url).port);
    adminKey = readFileSync(join(dir.path, 'data', 'admin-key'), 'utf8').trim();
  });
  after(async () => {
    await server?.stop();
    killSpawned();
    dir.remove();
  });

  test('10,000 refused upgrades under ulimit -n 512: the server lives and its open files return to the baseline', async () => {
    const pid = server.child.pid;
    assert.ok(pid !== undefined);
    const created = await fetch(`${server.url}/v1/api-keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'viewer', role: 'viewer' }),
    });
    assert.equal(created.status, 201);
    const viewerKey = ((await created.json()) as { secret: string }).secret;
    const baseline = openFiles(pid);

    const kinds = [
      upgradeRequest('/v1/agents/connect'), // 401: no credential
      upgradeRequest('/v1/agents/connect', { authorization: 'Bearer ork_not_a_key' }), // 401
      upgradeRequest('/v1/agents/connect', { authorization: `Bearer ${viewerKey}` }), // 403
      upgradeRequest('/v1/realtime', { authorization: 'Bearer ork_not_a_key' }), // 401, then 429
      upgradeRequest('/v1/no-such-route'), // 404
    ];
    const statuses = new Map<string, number>();
    let sent = 0;
    const worker = async () => {
      while (sent < 10_000) {
        const request = kinds[sent++ % kinds.length] ?? '';
        const status = await refusedUpgrade(port, request);
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));

    for (const status of ['401', '403', '404', '429']) {
      assert.ok(
        [...statuses.keys()].some((line) => line.startsWith(`HTTP/1.1 ${status} `)),
        `some upgrade was refused with ${status}: ${JSON.stringify([...statuses])}`,
      );
    }
    assert.ok(![...statuses.keys()].some((line) => /^HTTP\/1\.1 5/.test(line)));
    // Before the fix every refused upgrade kept one descriptor: 10,000 would be far past 512.
    await eventually(`open files back to ${baseline} (now ${openFiles(pid)})`, () => {
      return openFiles(pid) <= baseline + 2;
    });
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(server.child.exitCode, null);
  });
});

describe('what a client without a credential can hold', () => {
  test('connections over ORCHESTRA_UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS get 429 TOO_MANY_CONNECTIONS; authenticated ones do not count', async () => {
    const server = await startTestServer({
      // Held connections send nothing: a long headers timeout keeps them, however slow the machine.
      env: {
        ORCHESTRA_UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS: '4',
        ORCHESTRA_HEADERS_TIMEOUT_MS: '300000',
      },
    });
    const port = Number(new URL(server.url).port);
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 4; i++) held.push(await silentConnection(port));
      const refused = await exchange(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      assert.match(refused.text, /^HTTP\/1\.1 429 /);
      assert.match(refused.text, /retry-after: 1/i);
      const body = JSON.parse(refused.text.slice(refused.text.indexOf('\r\n\r\n') + 4));
      assert.equal(body.success, false);
      assert.equal(body.error.code, 'TOO_MANY_CONNECTIONS');
      assert.equal(body.error.details.limit, 4);

      // One held connection authenticates: it stops counting, and a new client gets in.
      const first = held[0] as Socket;
      const answered = new Promise<string>((resolve) => {
        let text = '';
        first.setEncoding('utf8').on('data', (chunk: string) => {
          text += chunk;
          if (text.includes('\r\n\r\n')) resolve(text);
        });
      });
      first.write(
        `GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.adminKey}\r\n\r\n`,
      );
      assert.match(await answered, /^HTTP\/1\.1 200 /);
      const admitted = await exchange(
        port,
        'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      );
      assert.match(admitted.text, /^HTTP\/1\.1 200 /);
    } finally {
      for (const socket of held) socket.destroy();
      await server.stop();
    }
  });

  test('a connection that sends nothing, or headers too slowly, gets 408 and is closed after ORCHESTRA_HEADERS_TIMEOUT_MS', async () => {
    const server = await startTestServer({ env: { ORCHESTRA_HEADERS_TIMEOUT_MS: '1000' } });
    const port = Number(new URL(server.url).port);
    try {
      const silent = exchange(port, '');
      const partial = exchange(port, 'GET /v1/whoami HTTP/1.1\r\nHost: x\r\n');
      for (const { text, closed } of await Promise.all([silent, partial])) {
        assert.ok(closed);
        assert.match(text, /^HTTP\/1\.1 408 /);
        assert.match(text, /"code":"REQUEST_TIMEOUT"/);
      }
    } finally {
      await server.stop();
    }
  });

  test('headers larger than ORCHESTRA_MAX_HEADER_BYTES get 431 HEADERS_TOO_LARGE', async () => {
    const server = await startTestServer({ env: { ORCHESTRA_MAX_HEADER_BYTES: '8192' } });
    const port = Number(new URL(server.url).port);
    try {
      const { text, closed } = await exchange(
        port,
        `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ${'a'.repeat(10_000)}\r\n\r\n`,
      );
      assert.ok(closed);
      assert.match(text, /^HTTP\/1\.1 431 /);
      assert.match(text, /"code":"HEADERS_TOO_LARGE"/);
    } finally {
      await server.stop();
    }
  });

  test('a request with a bad credential closes its connection instead of keeping it alive', async () => {
    const server = await startTestServer();
    const port = Number(new URL(server.url).port);
    try {
      const { text, closed } = await exchange(
        port,
        'GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ork_wrong\r\n\r\n',
      );
      assert.match(text, /^HTTP\/1\.1 401 /);
      assert.match(text, /connection: close/i);
      assert.ok(closed);
    } finally {
      await server.stop();
    }
  });
});
