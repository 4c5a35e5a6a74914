import assert from 'node:assert/strict';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from './helpers.ts';

// Resource limits of instances' processes, for real: cgroups where this machine lets the
// server make them, prlimit when asked (or when it does not), and what each instance
// reports it got. Memory is tested by running out of it, which takes no timing.

/** What this machine allows, found independently of the server's own probe. */
function expectedMechanism(): 'cgroup-v2' | 'cgroup-v1' {
  const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8').split(/\s+/)
    : [];
  if (['cpu', 'memory', 'pids'].every((c) => v2.includes(c))) return 'cgroup-v2';
  for (const c of ['memory', 'cpu', 'cpuacct', 'pids']) {
    accessSync(`/sys/fs/cgroup/${c}`, constants.W_OK);
  }
  return 'cgroup-v1';
}

const LIMITED = { cpus: 0.5, memory_bytes: 64 * 1024 ** 2, processes: 32 };

async function limitedInstance(server: TestServer): Promise<{ id: string; body: any }> {
  await server.call('POST', '/v1/workspace-templates', {
    body: { name: 'limited', resources: LIMITED },
  });
  const created = await server.call('POST', '/v1/instances', { body: { template: 'limited' } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.equal(created.body.state, 'running');
  return { id: created.body.id, body: created.body };
}

const exec = (server: TestServer, id: string, script: string) =>
  server.call('POST', `/v1/instances/${id}/exec`, {
    body: { command: ['sh', '-c', script], timeout_ms: 120_000 },
  });

// Reads all of /dev/zero into memory: without a limit it would take the machine.
const EAT_MEMORY = 'tail /dev/zero';

describe('resource limits with cgroups', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  test('an instance reports its cgroup limits; memory and processes are enforced, the CPU quota is set', async () => {
    const mechanism = expectedMechanism();
    const { id, body } = await limitedInstance(server);
    assert.deepEqual(body.resource_limits, {
      mechanism,
      enforced: ['cpu', 'memory', 'processes'],
      note: null,
    });
    const small = await exec(server, id, 'head -c 8000000 /dev/zero | wc -c');
    assert.equal(small.body.stdout.trim(), '8000000', JSON.stringify(small.body));
    const eaten = await exec(server, id, EAT_MEMORY);
    assert.equal(eaten.body.timed_out, false);
    assert.notEqual(eaten.body.exit_code, 0, JSON.stringify(eaten.body));
    // Forking past 32 processes fails inside; the instance goes on.
    const forks = await exec(
      server,
      id,
      'for i in $(seq 1 40); do sleep 2 & done; wait; echo waited',
    );
    assert.match(
      forks.body.stderr,
      /fork|Resource temporarily unavailable/i,
      JSON.stringify(forks.body),
    );
    // The CPU quota: half of a 100 ms period.
    const group = `orchestra-${body.node_id.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
    if (mechanism === 'cgroup-v1') {
      const quota = readFileSync(`/sys/fs/cgroup/cpu/${group}/${id}/cpu.cfs_quota_us`, 'utf8');
      assert.equal(quota.trim(), '50000');
    } else {
      const max = readFileSync(`/sys/fs/cgroup/${group}/${id}/cpu.max`, 'utf8');
      assert.equal(max.trim(), '50000 100000');
    }
    assert.equal((await server.call('GET', `/v1/instances/${id}`)).body.state, 'running');
    await server.call('DELETE', `/v1/instances/${id}`);
  });

  test('usage from the cgroups, and recommendations', async () => {
    await checkUsage(server);
  });
});

/** Usage and recommendations of a running instance with a service and a 1 MiB file. */
async function checkUsage(server: TestServer): Promise<void> {
  await server.call('POST', '/v1/workspace-templates', {
    body: {
      name: 'measured',
      startup: { command: ['sleep', '600'] },
      resources: { memory_bytes: 256 * 1024 ** 2, storage_bytes: 1024 ** 2 },
    },
  });
  const created = await server.call('POST', '/v1/instances', { body: { template: 'measured' } });
  const id = created.body.id as string;
  const wrote = await fetch(`${server.url}/v1/instances/${id}/files/content?path=blob`, {
    method: 'PUT',
    headers: {
      authorization: `Bearer ${server.adminKey}`,
      'content-type': 'application/octet-stream',
    },
    body: new Uint8Array(1024 * 1024).fill(7),
  });
  assert.equal(wrote.status, 201);
  const usage = await server.call('GET', `/v1/resources/usage?instance=${id}`);
  assert.equal(usage.status, 200, JSON.stringify(usage.body));
  assert.equal(usage.body.node.instances_running >= 1, true);
  assert.ok(usage.body.node.cpus >= 1);
  const [item] = usage.body.instances;
  assert.equal(item.instance_id, id);
  assert.ok(item.usage.processes >= 1, JSON.stringify(item));
  assert.ok(item.usage.memory_bytes > 0, JSON.stringify(item));
  assert.ok(item.usage.disk_bytes >= 1024 * 1024, JSON.stringify(item));
  assert.ok(item.usage.storage_utilization >= 1);
  const all = await server.call('GET', '/v1/resources/usage');
  assert.ok(all.body.instances.some((i: { instance_id: string }) => i.instance_id === id));

  const advice = await server.call('POST', '/v1/resources/optimize', {
    body: { instance: id, min_running_ms: 0 },
  });
  assert.equal(advice.status, 200, JSON.stringify(advice.body));
  const kinds = advice.body.recommendations.map(
    (r: { kind: string; resource: string }) => `${r.kind} ${r.resource}`,
  );
  assert.ok(kinds.includes('over_used storage'), kinds.join(', '));
  assert.ok(kinds.includes('under_used memory'), kinds.join(', '));
  assert.equal(advice.body.instances_checked, 1);
  const patient = await server.call('POST', '/v1/resources/optimize', { body: { instance: id } });
  assert.ok(
    !patient.body.recommendations.some((r: { kind: string }) => r.kind === 'under_used'),
    'under-use is judged only after min_running_ms',
  );
  const missing = await server.call('GET', '/v1/resources/usage?instance=ins_none');
  assert.equal(missing.status, 404);
  await server.call('DELETE', `/v1/instances/${id}`);
}

describe('resource limits with prlimit', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { ORCHESTRA_INSTANCE_LIMITS: 'prlimit' } });
  });
  after(async () => {
    await server.stop();
  });

  test('prlimit limits memory only, and the instance says so', async () => {
    const { id, body } = await limitedInstance(server);
    assert.equal(body.resource_limits.mechanism, 'prlimit');
    assert.deepEqual(body.resource_limits.enforced, ['memory']);
    assert.match(body.resource_limits.note, /CPU and processes are not limited/);
    const small = await exec(server, id, 'head -c 8000000 /dev/zero | wc -c');
    assert.equal(small.body.stdout.trim(), '8000000');
    const eaten = await exec(server, id, EAT_MEMORY);
    assert.equal(eaten.body.timed_out, false);
    assert.notEqual(eaten.body.exit_code, 0, JSON.stringify(eaten.body));
    await server.call('DELETE', `/v1/instances/${id}`);
  });

  test('usage from /proc, and recommendations', async () => {
    await checkUsage(server);
  });
});
