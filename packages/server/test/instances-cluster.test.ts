import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AgentWorker, Orchestra } from '@orchestra/sdk';
import WebSocket from 'ws';
import { createTestDatabase, type SpawnedOrchestra, spawnOrchestra, tempDir } from './helpers.ts';
import { NatsServer } from './nats-server.ts';

// Workspaces in a cluster of two nodes on PostgreSQL: instances placed by the strategy,
// every request about an instance answered by any node (forwarded to the one that runs it,
// WebSocket upgrades too), and a node killed with kill -9: its instances become `lost`,
// those whose template says so start again on the other node from their base.

/** An app for the instance's port (Debian's Node in the sandbox): says which node runs it. */
const APP =
  "require('http').createServer((q, s) => s.end('served by ' + process.env.NODE_TAG)).listen(Number(process.env.PORT_WEB), '127.0.0.1')";

describe('instances in a cluster', () => {
  let database: { url: string; drop: () => Promise<void> };
  let nats: NatsServer;
  const dirs = [tempDir(), tempDir()];
  const nodes: SpawnedOrchestra[] = [];
  let key: string;

  const call = async (
    node: number,
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const res = await fetch((nodes[node] as SpawnedOrchestra).url + path, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: any = text;
    try {
      parsed = text === '' ? {} : JSON.parse(text);
    } catch {
      // a proxied app's answer
    }
    return { status: res.status, body: parsed };
  };

  /** Polls until `check` holds for the instance (as node 0 sees it). */
  const until = async (id: string, check: (instance: any) => boolean, what: string) => {
    const deadline = Date.now() + 120_000;
    let last: any;
    while (Date.now() < deadline) {
      last = (await call(0, 'GET', `/v1/instances/${id}`)).body;
      if (check(last)) return last;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.fail(`${what}: ${JSON.stringify(last)}`);
  };

  before(async () => {
    [database, nats] = await Promise.all([createTestDatabase(), NatsServer.start()]);
    for (const [i, dir] of dirs.entries()) {
      nodes.push(
        await spawnOrchestra({
          cwd: dir.path,
          dataDir: dir.path,
          env: {
            ORCHESTRA_DATABASE_URL: database.url,
            ORCHESTRA_NATS_URL: nats.url,
            ORCHESTRA_INSTANCE_ID: `node-${'ab'[i]}`,
            ORCHESTRA_INSTANCE_SWEEP_MS: '500',
            ORCHESTRA_INSTANCE_LOST_AFTER_MS: '0',
            ORCHESTRA_RATE_LIMIT_PER_SECOND: '0',
          },
        }),
      );
    }
    key = readFileSync(join(dirs[0]?.path ?? '', 'admin-key'), 'utf8').trim();
    // Both nodes in the registry before anything is placed.
    const deadline = Date.now() + 60_000;
    let listed = await call(0, 'GET', '/v1/cluster/nodes');
    while (listed.body.items?.length !== 2 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      listed = await call(0, 'GET', '/v1/cluster/nodes');
    }
    assert.equal(listed.body.items?.length, 2, JSON.stringify(listed.body));
    for (const node of listed.body.items) assert.deepEqual(node.instance_drivers, ['process']);
  });

  after(async () => {
    await Promise.all(nodes.map((n) => n.stop('SIGKILL')));
    await Promise.all([nats?.stop(), database?.drop()]);
    for (const dir of dirs) dir.remove();
  });

  test('placement spreads instances; any node answers for any instance: exec, files, ports, terminals (WebSocket too), stop and start', async () => {
    for (const [name, tag] of [
      ['web', 'web'],
      ['movable', 'movable'],
    ] as const) {
      const made = await call(0, 'POST', '/v1/workspace-templates', {
        name,
        env: { NODE_TAG: tag },
        ports: [{ name: 'web' }],
        startup: { command: ['node', '-e', APP] },
        ...(name === 'movable' ? { on_node_loss: 'restart_elsewhere' } : {}),
      });
      assert.equal(made.status, 201, JSON.stringify(made.body));
    }
    // Fewest running first: one on each node, whichever node takes the request.
    const first = await call(0, 'POST', '/v1/instances', { template: 'web' });
    const second = await call(0, 'POST', '/v1/instances', { template: 'web' });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.equal(second.status, 201, JSON.stringify(second.body));
    assert.deepEqual(
      [first.body.node_id, second.body.node_id].sort(),
      ['node-a', 'node-b'],
      'one instance per node',
    );
    const remote = [first.body, second.body].find((i) => i.node_id === 'node-b');
    const id = remote.id as string;
    assert.equal(remote.state, 'running');

    // Through node a, about node b's instance.
    const ran = await call(0, 'POST', `/v1/instances/${id}/exec`, {
      command: ['sh', '-c', 'echo "$NODE_TAG from $(hostname)"'],
    });
    assert.equal(ran.status, 200, JSON.stringify(ran.body));
    assert.match(ran.body.stdout, /^web from /);
    const put = await fetch(`${nodes[0]?.url}/v1/instances/${id}/files/content?path=a/b.txt`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
      body: 'written through node a',
    });
    assert.equal(put.status, 201, await put.text());
    const read = await call(1, 'POST', `/v1/instances/${id}/exec`, { command: ['cat', 'a/b.txt'] });
    assert.equal(read.body.stdout, 'written through node a');
    const port = remote.ports[0].port as number;
    const deadline = Date.now() + 60_000;
    let page = await call(0, 'GET', `/v1/instances/${id}/ports/${port}/`);
    while (page.status !== 200 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      page = await call(0, 'GET', `/v1/instances/${id}/ports/${port}/`);
    }
    assert.equal(page.body, 'served by web');

    // A terminal opened and attached through node a runs on node b.
    const opened = await call(0, 'POST', `/v1/instances/${id}/terminals`, { command: ['sh'] });
    assert.equal(opened.status, 201, JSON.stringify(opened.body));
    const terminal = opened.body.id as string;
    const ws = new WebSocket(
      `${nodes[0]?.url.replace('http', 'ws')}/v1/instances/${id}/terminals/${terminal}/attach`,
      { headers: { authorization: `Bearer ${key}` } },
    );
    let output = '';
    const frames: any[] = [];
    ws.on('message', (data, binary) => {
      if (binary) output += data.toString();
      else frames.push(JSON.parse(data.toString()));
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const seen = async (pattern: RegExp) => {
      const end = Date.now() + 60_000;
      while (!pattern.test(output) && Date.now() < end) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.match(output, pattern);
    };
    ws.send(Buffer.from('echo "on-$((40 + 2))-$NODE_TAG"\r'));
    await seen(/on-42-web/);
    assert.ok(
      frames.some((f) => f.payload?.kind === 'attached'),
      JSON.stringify(frames),
    );
    ws.close();

    // Stop and start through node a; the instance stays on node b.
    const stopped = await call(0, 'POST', `/v1/instances/${id}/stop`);
    assert.equal(stopped.body.state, 'stopped', JSON.stringify(stopped.body));
    const started = await call(0, 'POST', `/v1/instances/${id}/start`);
    assert.equal(started.body.state, 'running', JSON.stringify(started.body));
    assert.equal(started.body.node_id, 'node-b');
  });

  test('an agent connected to one node works in an instance on the other: its workspace tools and its task’s checkpoint run there', async () => {
    const onB = { 'x-orchestra-forwarded-by': 'test' };
    const made = await call(1, 'POST', '/v1/instances', { template: 'web' }, onB);
    assert.equal(made.body.node_id, 'node-b', JSON.stringify(made.body));
    const id = made.body.id as string;
    const policy = await call(0, 'POST', '/v1/tool-policies', {
      name: 'cluster-coder',
      effect: 'allow',
      tools: ['workspace.*'],
    });
    assert.equal(policy.status, 201, JSON.stringify(policy.body));
    const agentKey = await call(0, 'POST', '/v1/api-keys', { name: 'coder', role: 'agent' });
    const worker = new AgentWorker({
      url: nodes[0]?.url ?? '',
      apiKey: agentKey.body.secret,
      agentId: 'cluster-coder',
      capabilities: ['cluster-code'],
      handleSignals: false,
      handler: async (_input, ctx) => {
        const wrote = await ctx.tools.call('workspace.write_file', {
          path: 'from-agent.txt',
          content: 'written by an agent on node a\n',
        });
        const ran = await ctx.tools.call('workspace.exec', {
          command: 'cat from-agent.txt; echo "tag=$NODE_TAG"',
        });
        return {
          wrote: wrote.result?.is_error,
          ran: (ran.result?.structured_content as { stdout: string } | undefined)?.stdout,
          checkpoint: await ctx.checkpoint('agent on node a'),
        };
      },
    });
    await worker.start();
    try {
      const client = new Orchestra({ url: nodes[0]?.url ?? '', apiKey: key });
      const task = await client.tasks.create({ capabilities: ['cluster-code'], instance: id });
      const done = await client.tasks.wait(task.id, { timeoutMs: 120_000 });
      assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
      const result = done.result as { wrote: boolean; ran: string; checkpoint: string };
      assert.equal(result.wrote, false);
      assert.equal(result.ran, 'written by an agent on node a\ntag=web\n');
      // The files are node b's, and so are the checkpoints (listed through node a).
      assert.equal(
        readFileSync(
          join(dirs[1]?.path ?? '', 'instances', id, 'workspace', 'from-agent.txt'),
          'utf8',
        ),
        'written by an agent on node a\n',
      );
      const checkpoints = await client.instances.checkpoints.list(id, { task_id: task.id });
      assert.deepEqual(
        checkpoints.items.map((c) => c.message),
        ['agent on node a', `before attempt 1 of task ${task.id}`],
      );
      assert.equal(checkpoints.items[0]?.id, result.checkpoint);
    } finally {
      await worker.stop();
      await call(0, 'DELETE', '/v1/tool-policies/cluster-coder');
      await call(0, 'DELETE', `/v1/instances/${id}`);
    }
  });

  test('a node frozen past its lease: its instances become lost and one moves; back, it stops what moved and starts what stayed from its files', async () => {
    const onB = { 'x-orchestra-forwarded-by': 'test' };
    const kept = await call(1, 'POST', '/v1/instances', { template: 'web' }, onB);
    const moved = await call(1, 'POST', '/v1/instances', { template: 'movable' }, onB);
    assert.equal(kept.body.node_id, 'node-b', JSON.stringify(kept.body));
    assert.equal(moved.body.node_id, 'node-b', JSON.stringify(moved.body));
    await call(1, 'POST', `/v1/instances/${kept.body.id}/exec`, {
      command: ['sh', '-c', 'echo still here > mine.txt'],
    });
    const pid = nodes[1]?.child.pid as number;
    /** Node b's own processes of an instance: its sandboxes carry the instance's directory. */
    const running = (id: string) => {
      try {
        return execFileSync('pgrep', ['-f', `${dirs[1]?.path}/instances/${id}`], {
          encoding: 'utf8',
        })
          .split('\n')
          .filter(Boolean).length;
      } catch {
        return 0;
      }
    };
    assert.ok(running(moved.body.id) > 0, 'node b runs the movable instance');
    process.kill(pid, 'SIGSTOP');
    try {
      await until(kept.body.id, (i) => i.state === 'lost', 'kept instance lost');
      await until(
        moved.body.id,
        (i) => i.state === 'running' && i.node_id === 'node-a',
        'movable instance running on node a',
      );
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // Back: node b stops its copy of the instance that moved, and deletes its files there...
    const deadline = Date.now() + 120_000;
    while (running(moved.body.id) > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.equal(running(moved.body.id), 0, 'no copy left on node b');
    // ...and starts the one that stayed, from its files.
    const back = await until(
      kept.body.id,
      (i) => i.state === 'running' && i.node_id === 'node-b',
      'kept instance running again on node b',
    );
    assert.match(back.state_reason, /its node is back/);
    // Through node a, once it sees node b live again (it caches the node list for 2 s).
    let mine = await call(0, 'POST', `/v1/instances/${kept.body.id}/exec`, {
      command: ['cat', 'mine.txt'],
    });
    const until2 = Date.now() + 60_000;
    while (mine.status === 409 && Date.now() < until2) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      mine = await call(0, 'POST', `/v1/instances/${kept.body.id}/exec`, {
        command: ['cat', 'mine.txt'],
      });
    }
    assert.equal(mine.status, 200, JSON.stringify(mine.body));
    assert.equal(mine.body.stdout, 'still here\n');
    await call(0, 'DELETE', `/v1/instances/${kept.body.id}`);
    await call(0, 'DELETE', `/v1/instances/${moved.body.id}`);
  });

  test('kill -9 of a node: its instances become lost with the reason; restart_elsewhere starts one on the other node from its base, its terminals end', async () => {
    // Made on node b (a request from a node is not placed again).
    const onB = { 'x-orchestra-forwarded-by': 'test' };
    const kept = await call(1, 'POST', '/v1/instances', { template: 'web' }, onB);
    const moved = await call(1, 'POST', '/v1/instances', { template: 'movable' }, onB);
    assert.equal(kept.body.node_id, 'node-b', JSON.stringify(kept.body));
    assert.equal(moved.body.node_id, 'node-b', JSON.stringify(moved.body));
    await call(1, 'POST', `/v1/instances/${moved.body.id}/exec`, {
      command: ['sh', '-c', 'echo before > made-on-b.txt'],
    });
    const terminal = await call(1, 'POST', `/v1/instances/${kept.body.id}/terminals`, {
      command: ['sh'],
    });
    assert.equal(terminal.status, 201, JSON.stringify(terminal.body));

    await nodes[1]?.stop('SIGKILL');

    const lost = await until(kept.body.id, (i) => i.state === 'lost', 'kept instance lost');
    assert.match(lost.state_reason, /its node node-b was lost/);
    assert.equal(lost.node_id, 'node-b');
    // Requests about it are answered here: its node is gone.
    const refused = await call(0, 'POST', `/v1/instances/${kept.body.id}/exec`, {
      command: ['true'],
    });
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.equal(refused.body.error.details.node_id, 'node-b');
    const ended = await call(
      0,
      'GET',
      `/v1/instances/${kept.body.id}/terminals/${terminal.body.id}`,
    );
    assert.equal(ended.body.state, 'exited', JSON.stringify(ended.body));
    assert.match(ended.body.state_reason, /the instance was lost/);

    const restarted = await until(
      moved.body.id,
      (i) => i.state === 'running' && i.node_id === 'node-a',
      'moved instance running on node a',
    );
    assert.match(restarted.state_reason, /started again on node node-a from its template's base/);
    const events = await fetch(
      `${nodes[0]?.url}/v1/instances/${moved.body.id}/events?after=0&follow=false`,
      { headers: { authorization: `Bearer ${key}` } },
    );
    const types = (await events.text())
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line).type);
    assert.deepEqual(types.slice(-3), ['instance.lost', 'instance.starting', 'instance.running']);
    // From its base: what it had on node b stayed there.
    const files = await call(0, 'POST', `/v1/instances/${moved.body.id}/exec`, {
      command: ['sh', '-c', 'ls; echo "$NODE_TAG"'],
    });
    assert.equal(files.body.stdout, 'movable\n');
  });
});
