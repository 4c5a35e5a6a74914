import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type RestartableServer, startRestartableServer } from '../../sdk/test/support.ts';
import { eventually } from './helpers.ts';

// `kill -9` of the server that runs instances: their sandboxed processes and terminals end
// with it (no orphan), and the restarted server starts again the instances that were
// running (terminals are not: their records say they ended with the node).

let server: RestartableServer;

before(async () => {
  server = await startRestartableServer('sqlite', {});
});

after(async () => {
  await server.remove();
});

const call = async (method: string, path: string, body?: unknown) => {
  const response = await fetch(server.url + path, {
    method,
    headers: {
      authorization: `Bearer ${server.adminKey}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, any> };
};

/** The pids of processes whose command line holds `marker`. */
function processesWith(marker: string): string[] {
  try {
    return execFileSync('pgrep', ['-f', marker], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

test('kill -9 of the server leaves no sandboxed process; at the restart, running instances run again and stopped ones stay stopped', async () => {
  const marker = `orchestra-crash-${randomUUID()}`;
  const created = await call('POST', '/v1/workspace-templates', {
    name: 'looping',
    startup: { command: ['bash', '-c', 'echo up > service-up; while :; do sleep 1; done', marker] },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const running = await call('POST', '/v1/instances', { template: 'looping' });
  assert.equal(running.body.state, 'running', JSON.stringify(running.body));
  const stopped = await call('POST', '/v1/instances', { template: 'looping', start: false });
  assert.equal(stopped.body.state, 'stopped');
  // Running, not still being set up: a sandbox killed half-way through bwrap's setup is
  // another matter (see decision 0019).
  const workspace = join(server.dataDir, 'instances', running.body.id, 'workspace');
  await eventually('the service runs', () => existsSync(join(workspace, 'service-up')));
  // A terminal's program too: it dies with the server, and its record says so.
  const terminalMarker = `${marker}-terminal`;
  const terminal = await call('POST', `/v1/instances/${running.body.id}/terminals`, {
    command: ['bash', '-c', 'echo up > terminal-up; while :; do sleep 1; done', terminalMarker],
  });
  assert.equal(terminal.status, 201, JSON.stringify(terminal.body));
  await eventually('the terminal runs', () => existsSync(join(workspace, 'terminal-up')));

  await server.crash();
  await eventually('no orphan process', () => processesWith(marker).length === 0);
  assert.deepEqual(processesWith(terminalMarker), []);
  // Nor what holds the instance's network: every sandbox names the instance's directory.
  await eventually('no network holder', () => processesWith(running.body.id).length === 0);

  await server.restart();
  const again = await call('GET', `/v1/instances/${running.body.id}`);
  assert.equal(again.body.state, 'running');
  assert.equal(again.body.state_reason, 'started again after the node restarted; its service runs');
  assert.equal((await call('GET', `/v1/instances/${stopped.body.id}`)).body.state, 'stopped');
  const ended = await call('GET', `/v1/instances/${running.body.id}/terminals/${terminal.body.id}`);
  assert.equal(ended.body.state, 'exited');
  assert.equal(ended.body.state_reason, 'its node restarted');
  await eventually('the service runs', () => processesWith(marker).length > 0);
  // The restarted node operates on it (it is this node's now).
  const halted = await call('POST', `/v1/instances/${running.body.id}/stop`);
  assert.equal(halted.body.state, 'stopped', JSON.stringify(halted.body));
  await eventually('the service ends', () => processesWith(marker).length === 0);
});
