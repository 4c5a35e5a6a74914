import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Docker from 'dockerode';
import { startRestartableServer } from '../../sdk/test/support.ts';
import { DockerDaemon } from './docker-daemon.ts';
import { expectError, startTestServer, type TestServer } from './helpers.ts';

// The docker driver against a real engine of the test's own (dockerd on a private socket)
// and an image made with `docker import` from Debian's busybox-static: the instance's
// directory bind-mounted into a container, commands and terminals as Docker execs, ports
// through the container's own network, Docker's limits, and nothing left behind.

const IMAGE = 'orchestra-test/busybox:1';

describe('instances on the docker driver', () => {
  let dockerd: DockerDaemon;
  let docker: Docker;
  let server: TestServer;

  const containersOf = async (id: string) =>
    docker.listContainers({ all: true, filters: { label: [`orchestra.instance=${id}`] } });

  before(async () => {
    dockerd = await DockerDaemon.start();
    await dockerd.importBusybox(IMAGE);
    docker = new Docker({ socketPath: dockerd.socketPath });
    server = await startTestServer({
      env: {
        ORCHESTRA_DOCKER_HOST: `unix://${dockerd.socketPath}`,
        ORCHESTRA_INSTANCE_PORT_RANGE: '22000-22009',
      },
    });
  });
  after(async () => {
    await server?.stop();
    await dockerd?.stop();
  });

  test('templates: docker needs an image that is on the engine; the process driver takes none', async () => {
    const refused = async (body: Record<string, unknown>, pattern: RegExp) => {
      const error = expectError(
        await server.call('POST', '/v1/workspace-templates', { body }),
        400,
        'VALIDATION_FAILED',
      );
      assert.match(JSON.stringify(error), pattern);
    };
    await refused({ name: 'no-image', driver: 'docker' }, /body\.image.*required/);
    await refused(
      { name: 'missing', driver: 'docker', image: 'orchestra-test/absent:1' },
      /not on this node's Docker engine/,
    );
    await refused({ name: 'bad-ref', driver: 'docker', image: 'Has Spaces' }, /image/);
    await refused({ name: 'proc', image: IMAGE }, /process driver takes no image/);
    const made = await server.call('POST', '/v1/workspace-templates', {
      body: { name: 'box', driver: 'docker', image: IMAGE },
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.equal(made.body.driver, 'docker');
    assert.equal(made.body.image, IMAGE);
  });

  test('an instance is a container of the image with the workspace mounted: exec, files both ways, no network, limits, stop and start keep the files, delete leaves nothing', async () => {
    await server.call('POST', '/v1/workspace-templates', {
      body: {
        name: 'limited',
        driver: 'docker',
        image: IMAGE,
        env: { FROM_TEMPLATE: 'yes' },
        resources: { memory_bytes: 64 * 1024 * 1024, processes: 50, cpus: 0.5 },
      },
    });
    const created = await server.call('POST', '/v1/instances', { body: { template: 'limited' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    assert.equal(created.body.state, 'running');
    assert.equal(created.body.driver, 'docker');
    assert.equal(created.body.resource_limits.mechanism, 'docker');
    assert.ok(created.body.resource_limits.enforced.includes('memory'));
    const [container] = await containersOf(id);
    assert.ok(container, 'a container for the instance');
    assert.equal(container.Image, IMAGE);
    const inspected = await docker.getContainer(container.Id).inspect();
    assert.equal(inspected.HostConfig.Memory, 64 * 1024 * 1024);
    assert.equal(inspected.HostConfig.PidsLimit, 50);
    assert.equal(inspected.HostConfig.NanoCpus, 500_000_000);
    assert.equal(inspected.HostConfig.NetworkMode, 'none');
    assert.equal(inspected.HostConfig.ReadonlyRootfs, true);

    const exec = (body: Record<string, unknown>) =>
      server.call('POST', `/v1/instances/${id}/exec`, { body });
    // It runs in the image (busybox), in the workspace, with the template's environment.
    const ran = await exec({
      command: ['sh', '-c', 'readlink /bin/sh; pwd; echo $FROM_TEMPLATE; echo err >&2; exit 3'],
    });
    assert.equal(ran.status, 200, JSON.stringify(ran.body));
    assert.equal(ran.body.exit_code, 3);
    const [shell, cwd, env] = (ran.body.stdout as string).trim().split('\n');
    assert.equal(shell, 'busybox');
    assert.match(cwd ?? '', /\/workspace$/);
    assert.equal(env, 'yes');
    assert.equal(ran.body.stderr, 'err\n');
    const stdin = await exec({ command: ['cat'], stdin: 'typed in' });
    assert.equal(stdin.body.stdout, 'typed in');

    // Files written through the API are the container's, and the other way round.
    const put = await server.call('PUT', `/v1/instances/${id}/files/content?path=notes/a.txt`, {
      body: 'from the api',
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.ok(put.status === 200 || put.status === 201, JSON.stringify(put.body));
    assert.equal((await exec({ command: ['cat', 'notes/a.txt'] })).body.stdout, 'from the api');
    await exec({ command: ['sh', '-c', 'echo from the container > made.txt'] });
    const read = await fetch(`${server.url}/v1/instances/${id}/files/content?path=made.txt`, {
      headers: { authorization: `Bearer ${server.adminKey}` },
    });
    assert.equal(await read.text(), 'from the container\n');

    // Only the workspace is writable; no network but loopback; Docker's limits inside.
    const rootfs = await exec({ command: ['sh', '-c', 'echo x > /bin/x'] });
    assert.notEqual(rootfs.body.exit_code, 0);
    assert.match(rootfs.body.stderr, /Read-only file system/);
    const net = await exec({ command: ['cat', '/proc/net/dev'] });
    const interfaces = (net.body.stdout as string)
      .split('\n')
      .slice(2)
      .map((l) => l.split(':')[0]?.trim())
      .filter(Boolean);
    assert.deepEqual(interfaces, ['lo']);
    const memory = await exec({
      command: [
        'sh',
        '-c',
        'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes',
      ],
    });
    assert.equal(Number(memory.body.stdout), 64 * 1024 * 1024);

    // A timeout kills what it started, children too.
    const slow = await exec({ command: ['sh', '-c', 'sleep 600 & sleep 600'], timeout_ms: 500 });
    assert.equal(slow.body.timed_out, true);
    const left = await exec({ command: ['sh', '-c', 'ps -o comm | grep -c "^sleep" || true'] });
    // `sleep infinity` keeps the container up (no startup command): only it is left.
    assert.equal(left.body.stdout.trim(), '1');

    const usage = await server.call('GET', `/v1/resources/usage?instance=${id}`);
    assert.equal(usage.status, 200, JSON.stringify(usage.body));
    assert.ok(usage.body.instances[0].usage.memory_bytes > 0);
    assert.ok(usage.body.instances[0].usage.processes >= 1);

    // Stop: the container goes, the files stay; start: a new container, same files.
    const stopped = await server.call('POST', `/v1/instances/${id}/stop`);
    assert.equal(stopped.body.state, 'stopped', JSON.stringify(stopped.body));
    assert.deepEqual(await containersOf(id), []);
    const started = await server.call('POST', `/v1/instances/${id}/start`);
    assert.equal(started.body.state, 'running', JSON.stringify(started.body));
    assert.equal(
      (await exec({ command: ['cat', 'made.txt'] })).body.stdout,
      'from the container\n',
    );

    const deleted = await server.call('DELETE', `/v1/instances/${id}`);
    assert.ok(deleted.status === 200 || deleted.status === 204, JSON.stringify(deleted.body));
    assert.deepEqual(await containersOf(id), []);
    assert.ok(!existsSync(join(server.dataDir, 'instances', id)));
  });

  test('the startup command is the service: its output logged, its exit the instance’s, its port reached through Orchestra', async () => {
    await server.call('POST', '/v1/workspace-templates', {
      body: {
        name: 'web',
        driver: 'docker',
        image: IMAGE,
        ports: [{ name: 'web' }],
        startup: {
          command: [
            'sh',
            '-c',
            'echo serving; echo hello from httpd > index.html; exec httpd -f -p 127.0.0.1:$PORT_WEB',
          ],
        },
      },
    });
    const created = await server.call('POST', '/v1/instances', { body: { template: 'web' } });
    assert.equal(created.body.state, 'running', JSON.stringify(created.body));
    const id = created.body.id as string;
    const port = created.body.ports[0].port as number;
    const deadline = Date.now() + 60_000;
    let answer = '';
    while (Date.now() < deadline) {
      const res = await fetch(`${server.url}/v1/instances/${id}/ports/${port}/index.html`, {
        headers: { authorization: `Bearer ${server.adminKey}` },
      });
      answer = await res.text();
      if (res.status === 200) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(answer, 'hello from httpd\n');
    // Nothing listens on another port of its loopback.
    expectError(
      await server.call('GET', `/v1/instances/${id}/ports/${port + 1}/`),
      502,
      'PORT_NOT_LISTENING',
    );
    // The service's output goes to logs/service.log, outside the workspace (an operator's).
    const logged = await readFile(
      join(server.dataDir, 'instances', id, 'logs', 'service.log'),
      'utf8',
    );
    assert.match(logged, /serving/);

    // The service ends by itself (killed inside): the instance fails with the reason.
    await server.call('POST', `/v1/instances/${id}/exec`, {
      body: { command: ['sh', '-c', 'kill -9 $(pidof httpd)'] },
    });
    let state = '';
    let reason = '';
    const until = Date.now() + 60_000;
    while (Date.now() < until && state !== 'failed') {
      const got = await server.call('GET', `/v1/instances/${id}`);
      ({ state, state_reason: reason } = got.body);
      if (state !== 'failed') await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(state, 'failed');
    assert.match(reason, /SIGKILL|137/);
    await server.call('DELETE', `/v1/instances/${id}`);
  });

  test('a terminal is a Docker exec on a TTY: typed input, the screen, resize, close', async () => {
    const created = await server.call('POST', '/v1/instances', { body: { template: 'box' } });
    const id = created.body.id as string;
    const opened = await server.call('POST', `/v1/instances/${id}/terminals`, {
      body: { command: ['sh'], cols: 100, rows: 30 },
    });
    assert.equal(opened.status, 201, JSON.stringify(opened.body));
    const terminal = opened.body.id as string;
    const screen = async (pattern: RegExp) => {
      let text = '';
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        const got = await server.call('GET', `/v1/instances/${id}/terminals/${terminal}/screen`);
        text = got.body.lines.join('\n');
        if (pattern.test(text)) return text;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.fail(`${pattern} not on the screen: ${text}`);
    };
    await server.call('POST', `/v1/instances/${id}/terminals/${terminal}/input`, {
      body: { data: 'echo "in-docker-$((6 * 7))"; stty size\r' },
    });
    await screen(/in-docker-42/);
    await screen(/^30 100$/m);
    await server.call('POST', `/v1/instances/${id}/terminals/${terminal}/resize`, {
      body: { cols: 90, rows: 20 },
    });
    await server.call('POST', `/v1/instances/${id}/terminals/${terminal}/input`, {
      body: { data: 'stty size\r' },
    });
    await screen(/^20 90$/m);
    await server.call('POST', `/v1/instances/${id}/terminals/${terminal}/input`, {
      body: { data: 'exit 5\r' },
    });
    let state = '';
    const deadline = Date.now() + 60_000;
    let got: Awaited<ReturnType<TestServer['call']>> | undefined;
    while (Date.now() < deadline && state !== 'exited') {
      got = await server.call('GET', `/v1/instances/${id}/terminals/${terminal}`);
      state = got.body.state;
      if (state !== 'exited') await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(got?.body.exit_code, 5);
    await server.call('DELETE', `/v1/instances/${id}`);
  });

  test('a server killed (kill -9) leaves its containers running: at its next start they are replaced, none twice', async () => {
    const crashing = await startRestartableServer('sqlite', {
      ORCHESTRA_DOCKER_HOST: dockerd.socketPath,
    });
    try {
      const call = async (method: string, path: string, body?: unknown) => {
        const res = await fetch(crashing.url + path, {
          method,
          headers: {
            authorization: `Bearer ${crashing.adminKey}`,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await res.text();
        return {
          status: res.status,
          body: (text === '' ? {} : JSON.parse(text)) as Record<string, any>,
        };
      };
      await call('POST', '/v1/workspace-templates', {
        name: 'box',
        driver: 'docker',
        image: IMAGE,
      });
      const created = await call('POST', '/v1/instances', { template: 'box' });
      assert.equal(created.body.state, 'running', JSON.stringify(created.body));
      const id = created.body.id as string;
      const before = await containersOf(id);
      assert.equal(before.length, 1);
      await crashing.crash();
      assert.equal((await containersOf(id)).length, 1, 'Docker keeps it running meanwhile');
      await crashing.restart();
      const after = await containersOf(id);
      assert.equal(after.length, 1, 'one container');
      assert.notEqual(after[0]?.Id, before[0]?.Id, 'a new one: the old one was removed');
      assert.equal((await call('GET', `/v1/instances/${id}`)).body.state, 'running');
      await call('DELETE', `/v1/instances/${id}`);
      assert.deepEqual(await containersOf(id), []);
    } finally {
      await crashing.remove();
    }
  });
});
