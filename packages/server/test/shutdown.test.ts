import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { type IncomingMessage, request } from 'node:http';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  killSpawned,
  logLines,
  type SpawnedOrchestra,
  spawnOrchestra,
  tempDir,
} from './helpers.ts';

// Graceful shutdown of a spawned `orchestra start`, observed from outside: exit codes,
// the JSON log, and what clients get while the server drains.

const dirs: { remove: () => void }[] = [];

after(() => {
  killSpawned();
  for (const dir of dirs) dir.remove();
});

interface RunningServer extends SpawnedOrchestra {
  adminKey: string;
}

function logMessages(stdout: string): string[] {
  return logLines(stdout).map((line) => String(line.msg));
}

async function startOrchestra(env: Record<string, string> = {}): Promise<RunningServer> {
  const dir = tempDir('orchestra-shutdown-');
  dirs.push(dir);
  const server = await spawnOrchestra({ cwd: dir.path, dataDir: dir.path, env });
  return { ...server, adminKey: readFileSync(join(dir.path, 'admin-key'), 'utf8').trim() };
}

interface HeldRequest {
  /** Writes the rest of the body and resolves to the status and parsed body. */
  finish: () => Promise<{ status: number | undefined; body: any }>;
}

/**
 * Starts `POST /v1/api-keys` and sends only part of its body, so the request is in flight.
 * Resolves once the server has taken the request (its `100 Continue` arrived).
 */
async function holdRequest(server: RunningServer, name: string): Promise<HeldRequest> {
  const body = JSON.stringify({ name, role: 'viewer' });
  const split = Math.floor(body.length / 2);
  const url = new URL('/v1/api-keys', server.url);
  const req = request(url, {
    method: 'POST',
    agent: false,
    headers: {
      authorization: `Bearer ${server.adminKey}`,
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      // The server answers 100 Continue once it has parsed the headers: a signal that the
      // request is in flight before the test sends a signal to the process.
      expect: '100-continue',
    },
  });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.on('response', resolve);
    req.on('error', reject);
  });
  await new Promise<void>((resolve, reject) => {
    req.on('continue', resolve);
    req.on('error', reject);
  });
  req.write(body.slice(0, split));
  return {
    finish: async () => {
      req.end(body.slice(split));
      const res = await response;
      let text = '';
      res.setEncoding('utf8');
      for await (const chunk of res) text += chunk;
      return { status: res.statusCode, body: JSON.parse(text) };
    },
  };
}

test('SIGTERM stops the server with exit code 0 after "shutdown complete"', async () => {
  const server = await startOrchestra();
  const health = await fetch(`${server.url}/healthz`);
  assert.equal(health.status, 200);

  server.child.kill('SIGTERM');
  assert.equal(await server.exited(), 0);
  const messages = logMessages(server.stdout());
  assert.ok(messages.includes('shutting down'), messages.join('\n'));
  assert.equal(messages.at(-1), 'shutdown complete');
});

test('SIGINT stops the server with exit code 0', async () => {
  const server = await startOrchestra();
  server.child.kill('SIGINT');
  assert.equal(await server.exited(), 0);
  assert.ok(logMessages(server.stdout()).includes('shutdown complete'));
});

test('a request in flight at SIGTERM is answered before the process exits', async () => {
  // A generous drain deadline: this test is about draining, not about the deadline.
  const server = await startOrchestra({ ORCHESTRA_SHUTDOWN_TIMEOUT_MS: '120000' });
  const held = await holdRequest(server, 'in-flight');

  server.child.kill('SIGTERM');
  await server.logged('shutting down');
  assert.equal(server.child.exitCode, null, 'the server must wait for the request in flight');

  const { status, body } = await held.finish();
  assert.equal(status, 201, JSON.stringify(body));
  assert.equal(body.name, 'in-flight');
  assert.match(body.secret, /^ork_/);
  assert.equal(await server.exited(), 0);
  assert.ok(logMessages(server.stdout()).includes('shutdown complete'));
});

test('while draining, new connections are refused or get 503 SHUTTING_DOWN', async () => {
  const server = await startOrchestra({ ORCHESTRA_SHUTDOWN_TIMEOUT_MS: '120000' });
  // Keeps the process draining, so the new request meets a closing server, not a dead one.
  const held = await holdRequest(server, 'keeps-draining');

  server.child.kill('SIGTERM');
  await server.logged('shutting down');

  let outcome: string;
  try {
    const response = await fetch(`${server.url}/v1/whoami`, {
      headers: { authorization: `Bearer ${server.adminKey}` },
    });
    const body = (await response.json()) as { error?: { code?: string } };
    outcome = `${response.status} ${body.error?.code}`;
    if (response.status === 503) assert.equal(response.headers.get('retry-after'), '1');
  } catch (err) {
    // fetch wraps the socket error; ECONNRESET is a connection the kernel had queued.
    outcome = String((err as { cause?: { code?: string } }).cause?.code);
  }
  assert.ok(
    ['ECONNREFUSED', 'ECONNRESET', '503 SHUTTING_DOWN'].includes(outcome),
    `unexpected outcome: ${outcome}`,
  );

  assert.equal((await held.finish()).status, 201);
  assert.equal(await server.exited(), 0);
});
