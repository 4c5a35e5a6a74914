import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { frameChecker, TERMINAL_SERVER_FRAMES } from '@orchestra/protocol';
import WebSocket from 'ws';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

// Terminals through the API and the attach protocol, spoken by hand (docs/protocol.md,
// "Terminal attach"): a PTY in the instance's sandbox whose screen the server keeps, so that
// a viewer that comes back sees it; several viewers; resize; exit; limits; bad input.

const contractProblem = frameChecker(TERMINAL_SERVER_FRAMES);

interface Frame {
  header: { id: string; type: string; correlation_id?: string };
  payload: { kind: string } & Record<string, any>;
}

/** A viewer: the frames it got, and what the terminal printed to it, as text. */
class Viewer {
  readonly socket: WebSocket;
  readonly frames: Frame[] = [];
  output = '';
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly opened: Promise<void>;

  constructor(url: string, path: string, credential: string | undefined) {
    this.socket = new WebSocket(`${url.replace('http', 'ws')}${path}`, {
      headers: credential ? { authorization: `Bearer ${credential}` } : {},
    });
    this.socket.on('message', (data, binary) => {
      if (binary) {
        this.output += Buffer.from(data as Buffer).toString('utf8');
        return;
      }
      const frame = JSON.parse(String(data)) as Frame;
      const problem = contractProblem(frame.payload);
      assert.equal(problem, undefined, `${problem}: ${String(data)}`);
      this.frames.push(frame);
    });
    this.socket.on('error', () => {});
    this.closed = new Promise((resolve) => {
      this.socket.on('close', (code, reason) => resolve({ code, reason: String(reason) }));
    });
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve());
      this.socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`upgrade refused: ${res.statusCode}`)),
      );
    });
  }

  send(kind: string, fields: Record<string, unknown> = {}): string {
    const id = randomUUID();
    this.socket.send(
      JSON.stringify({
        header: {
          id,
          type: 'REQUEST',
          timestamp: new Date().toISOString(),
          source: 'test',
          version: 1,
        },
        payload: { kind, ...fields },
      }),
    );
    return id;
  }

  type(text: string): void {
    this.socket.send(Buffer.from(text), { binary: true });
  }

  async frame(kind: string, what = kind): Promise<Frame> {
    await until(what, () => this.frames.some((f) => f.payload.kind === kind));
    return this.frames.find((f) => f.payload.kind === kind) as Frame;
  }

  async printed(pattern: RegExp): Promise<void> {
    await until(`${pattern} in the output (got ${JSON.stringify(this.output.slice(-300))})`, () =>
      pattern.test(this.output),
    );
  }
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not in time`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

for (const store of STORE_VARIANTS) {
  describe(`terminals on ${store}`, () => {
    let server: TestServer;
    let id: string;
    let other: string;
    const viewers: Viewer[] = [];

    const attach = async (terminal: string, credential: string | undefined = server.adminKey) => {
      const viewer = new Viewer(
        server.url,
        `/v1/instances/${id}/terminals/${terminal}/attach`,
        credential,
      );
      viewers.push(viewer);
      await viewer.opened;
      return viewer;
    };
    const open = async (body: Record<string, unknown> = {}, instance = id) => {
      const res = await server.call('POST', `/v1/instances/${instance}/terminals`, { body });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body;
    };

    before(async () => {
      server = await startTestServer({
        store,
        env: {
          ORCHESTRA_TERMINAL_MAX_PER_INSTANCE: '3',
          ORCHESTRA_TERMINAL_SCROLLBACK: '500',
          ORCHESTRA_TERMINAL_MAX_VIEWERS: '3',
        },
      });
      await server.call('POST', '/v1/workspace-templates', { body: { name: 'shell' } });
      const created = await server.call('POST', '/v1/instances', { body: { template: 'shell' } });
      assert.equal(created.body.state, 'running', JSON.stringify(created.body));
      id = created.body.id;
      other = (await server.call('POST', '/v1/instances', { body: { template: 'shell' } })).body.id;
    });

    after(async () => {
      for (const viewer of viewers) viewer.socket.terminate();
      await server.stop();
    });

    test('a viewer that comes back sees the screen; two viewers see the same output and size', async () => {
      const terminal = await open({ cols: 100, rows: 30 });
      assert.match(terminal.id, /^trm_/);
      assert.equal(terminal.state, 'running');
      assert.deepEqual(terminal.command, ['bash']);
      assert.equal(terminal.cwd, '');
      assert.deepEqual([terminal.cols, terminal.rows], [100, 30]);

      const first = await attach(terminal.id);
      const attached = await first.frame('attached');
      assert.equal(attached.header.type, 'EVENT');
      assert.equal(attached.payload.terminal.id, terminal.id);
      // (Typed text is echoed: what a test waits for is computed by the shell.)
      first.type('echo "first-$((6 * 7))"; test -t 0 && echo "tty-$((1 + 1))"\r');
      await first.printed(/first-42/);
      await first.printed(/tty-2/);
      first.socket.close();
      await first.closed;

      // While nobody watches, input through the API, and output to the screen only.
      const input = await server.call(
        'POST',
        `/v1/instances/${id}/terminals/${terminal.id}/input`,
        {
          body: { data: 'echo "while-away-$((7 * 7))"\r' },
        },
      );
      assert.equal(input.status, 204, JSON.stringify(input.body));
      const screen = async () =>
        (await server.call('GET', `/v1/instances/${id}/terminals/${terminal.id}/screen`)).body;
      let text = '';
      const deadline = Date.now() + 60_000;
      while (!/while-away-49/.test(text) && Date.now() < deadline) {
        const read = await screen();
        text = read.lines.join('\n');
        if (!/while-away-49/.test(text)) await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(text, /while-away-49/);

      // Back: the screen holds both, drawn from the server's copy.
      const second = await attach(terminal.id);
      const back = await second.frame('attached');
      assert.match(back.payload.screen, /first-42/);
      assert.match(back.payload.screen, /while-away-49/);

      // A third viewer: output reaches both, a resize reaches both, and both see the count.
      const third = await attach(terminal.id);
      await third.frame('attached');
      await until('two viewers counted', () =>
        second.frames.some((f) => f.payload.kind === 'viewers' && f.payload.count === 2),
      );
      second.send('input', { data: 'echo "both-$((8 * 8))"\r' });
      await second.printed(/both-64/);
      await third.printed(/both-64/);
      third.send('resize', { cols: 120, rows: 40 });
      for (const viewer of [second, third]) {
        const resized = await viewer.frame('resized');
        assert.deepEqual([resized.payload.cols, resized.payload.rows], [120, 40]);
      }
      second.type('stty size\r');
      await second.printed(/40 120/);
      const read = await server.call('GET', `/v1/instances/${id}/terminals/${terminal.id}`);
      assert.deepEqual([read.body.cols, read.body.rows, read.body.viewers], [120, 40, 2]);
      const pong = second.send('ping');
      await until('pong', () =>
        second.frames.some((f) => f.payload.kind === 'pong' && f.header.correlation_id === pong),
      );

      // Scrollback: lines pushed off the screen are kept, and readable.
      second.type('for i in $(seq 1 80); do echo "line-$i"; done\r');
      await second.printed(/line-80/);
      const withScrollback = await server.call(
        'GET',
        `/v1/instances/${id}/terminals/${terminal.id}/screen?scrollback=200`,
      );
      assert.ok(withScrollback.body.scrollback.some((l: string) => l === 'line-1'));
      assert.equal(withScrollback.body.lines.length, 40);
      const fourth = await attach(terminal.id);
      assert.match((await fourth.frame('attached')).payload.screen, /line-1\b/);
      // ORCHESTRA_TERMINAL_MAX_VIEWERS is 3 here.
      const crowd = await attach(terminal.id);
      const refused = await crowd.frame('error');
      assert.equal(refused.payload.code, 'TENANT_LIMIT_REACHED');
      assert.equal(refused.payload.details.quota, 'viewers_per_terminal');
      assert.equal((await crowd.closed).code, 4429);

      // The program ends: every viewer is told how, and the connection closes normally.
      second.type('exit 3\r');
      for (const viewer of [second, third, fourth]) {
        const exit = await viewer.frame('exit');
        assert.equal(exit.payload.exit_code, 3);
        assert.equal((await viewer.closed).code, 1000);
      }
      const exited = await server.call('GET', `/v1/instances/${id}/terminals/${terminal.id}`);
      assert.equal(exited.body.state, 'exited');
      assert.equal(exited.body.exit_code, 3);
      assert.match(exited.body.state_reason, /exited with code 3/);
      expectError(
        await server.call('POST', `/v1/instances/${id}/terminals/${terminal.id}/input`, {
          body: { data: 'x' },
        }),
        409,
        'TERMINAL_EXITED',
      );
      const late = await attach(terminal.id);
      assert.equal((await late.frame('error')).payload.code, 'TERMINAL_EXITED');
      assert.equal((await late.closed).code, 4404);
      const closed = await server.call('DELETE', `/v1/instances/${id}/terminals/${terminal.id}`);
      assert.equal(closed.status, 204);
      expectError(
        await server.call('GET', `/v1/instances/${id}/terminals/${terminal.id}`),
        404,
        'TERMINAL_NOT_FOUND',
      );
    });

    test('the program runs in the instance’s sandbox, with job control', async () => {
      const terminal = await open({
        command: ['bash', '--norc'],
        cwd: '.',
        env: { GREETING: 'hi' },
      });
      const viewer = await attach(terminal.id);
      await viewer.frame('attached');
      viewer.type('echo "pid=$$ home=$HOME term=$TERM greeting=$GREETING"\r');
      await viewer.printed(/pid=\d+ home=\S+user-data term=xterm-256color greeting=hi/);
      viewer.type(
        'cat /etc/shadow || echo "no-shadow-$((2 + 2))"; ls /root || echo "no-root-$((2 + 3))"\r',
      );
      await viewer.printed(/no-shadow-4/);
      await viewer.printed(/no-root-5/);
      viewer.type('sleep 300 & jobs; kill %1; echo "jobs-$((3 + 4))"\r');
      await viewer.printed(/\[1\]\+?\s+Running\s+sleep 300/);
      await viewer.printed(/jobs-7/);
      // Ctrl-C reaches the foreground program, not the shell.
      viewer.type('sleep 300; echo after-interrupt\r');
      await new Promise((resolve) => setTimeout(resolve, 300));
      viewer.type('\u0003');
      viewer.type('echo "still-$((3 * 3))"\r');
      await viewer.printed(/still-9/);
      const closed = await server.call('DELETE', `/v1/instances/${id}/terminals/${terminal.id}`);
      assert.equal(closed.status, 204);
      const exit = await viewer.frame('exit');
      assert.match(exit.payload.reason, /closed by/);
      assert.equal((await viewer.closed).code, 1000);
    });

    test('limits per instance and the tenant’s max_terminals; stopping the instance ends its terminals', async () => {
      const tenantId = `term-${store}`;
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: tenantId } });
      const key = tenant.body.admin_key.secret as string;
      const as = (method: string, path: string, body?: unknown) =>
        server.call(method, path, { key, ...(body === undefined ? {} : { body }) });
      await as('POST', '/v1/workspace-templates', { name: 'shell' });
      const a = (await as('POST', '/v1/instances', { template: 'shell' })).body.id;
      const b = (await as('POST', '/v1/instances', { template: 'shell' })).body.id;
      const limit = await server.call('PATCH', `/v1/tenants/${tenantId}`, {
        body: { limits: { max_terminals: 4 } },
      });
      assert.equal(limit.status, 200, JSON.stringify(limit.body));
      for (let i = 0; i < 3; i++) {
        assert.equal((await as('POST', `/v1/instances/${a}/terminals`, {})).status, 201);
      }
      const perInstance = expectError(
        await as('POST', `/v1/instances/${a}/terminals`, {}),
        409,
        'TENANT_LIMIT_REACHED',
      );
      assert.equal(perInstance.details.quota, 'terminals_per_instance');
      assert.equal((await as('POST', `/v1/instances/${b}/terminals`, {})).status, 201);
      const tenantWide = expectError(
        await as('POST', `/v1/instances/${b}/terminals`, {}),
        409,
        'TENANT_LIMIT_REACHED',
      );
      assert.equal(tenantWide.details.quota, 'max_terminals');
      const quotas = await as('GET', '/v1/quotas');
      assert.deepEqual(
        quotas.body.quotas.find((q: any) => q.name === 'max_terminals'),
        {
          name: 'max_terminals',
          limit: 4,
          used: 4,
          source: 'tenant',
          setting: 'ORCHESTRA_TENANT_MAX_TERMINALS',
        },
      );

      // Stopping an instance ends its terminals, with the reason.
      const stopped = await as('POST', `/v1/instances/${a}/stop`);
      assert.equal(stopped.body.state, 'stopped', JSON.stringify(stopped.body));
      const list = await as('GET', `/v1/instances/${a}/terminals`);
      assert.equal(list.body.items.length, 3);
      for (const terminal of list.body.items) {
        assert.equal(terminal.state, 'exited');
        assert.match(terminal.state_reason, /the instance stopped/);
      }
      const running = await as('GET', `/v1/instances/${a}/terminals?state=running`);
      assert.equal(running.body.items.length, 0);
      // Room again: the quota counts running terminals.
      assert.equal((await as('POST', `/v1/instances/${b}/terminals`, {})).status, 201);
      expectError(
        await as('POST', `/v1/instances/${a}/terminals`, {}),
        409,
        'WORKSPACE_INSTANCE_STATE',
      );

      // Another tenant sees none of them.
      expectError(
        await server.call('GET', `/v1/instances/${a}/terminals`),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      const deleted = await as('DELETE', `/v1/instances/${b}`);
      assert.equal(deleted.status, 204);
    });

    test('bad input is a 4xx; a viewer needs a write role; a credential may come in the first frame', async () => {
      const base = `/v1/instances/${other}/terminals`;
      for (const body of [
        { cols: 0 },
        { rows: 501 },
        { command: [] },
        { command: [''] },
        { cwd: '../..' },
        { cwd: 'missing' },
        { env: { 'BAD-NAME': 'x' } },
        { shell: 'bash' },
      ]) {
        const res = await server.call('POST', base, { body });
        assert.equal(res.status, 400, `${JSON.stringify(body)} → ${JSON.stringify(res.body)}`);
      }
      expectError(await server.call('GET', `${base}/trm_missing`), 404, 'TERMINAL_NOT_FOUND');
      expectError(
        await server.call('GET', `/v1/instances/ins_missing/terminals`),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      expectError(await server.call('GET', `${base}?state=dead`), 400, 'VALIDATION_FAILED');
      const terminal = await open({}, other);
      const path = `${base}/${terminal.id}`;
      expectError(
        await server.call('POST', `${path}/input`, { body: { data: '' } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', `${path}/resize`, { body: { cols: 1001, rows: 10 } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('GET', `${path}/screen?scrollback=-1`),
        400,
        'VALIDATION_FAILED',
      );
      expectError(await server.call('GET', `${path}/attach`), 426, 'UPGRADE_REQUIRED');

      const viewerKey = (
        await server.call('POST', '/v1/api-keys', { body: { name: 'watcher', role: 'viewer' } })
      ).body.secret;
      assert.equal((await server.call('GET', path, { key: viewerKey })).status, 200);
      const refused = new Viewer(server.url, `${path}/attach`, viewerKey);
      viewers.push(refused);
      await assert.rejects(refused.opened, /403/);

      // Browsers: no credential in the request, an auth frame first.
      const later = new Viewer(server.url, `${path}/attach`, undefined);
      viewers.push(later);
      await later.opened;
      const auth = later.send('auth', { token: server.adminKey });
      const attached = await later.frame('attached');
      assert.equal(attached.header.correlation_id, auth);
      later.send('resize', { cols: 0, rows: 10 });
      assert.equal((await later.frame('error')).payload.code, 'VALIDATION_FAILED');
      later.type('echo "later-$((5 * 5))"\r');
      await later.printed(/later-25/);
      // A wrong credential in the frame: refused, and closed.
      const wrong = new Viewer(server.url, `${path}/attach`, undefined);
      viewers.push(wrong);
      await wrong.opened;
      wrong.type('ls\r');
      assert.equal((await wrong.frame('error')).payload.code, 'UNAUTHENTICATED');
      assert.equal((await wrong.closed).code, 4401);
      const bad = new Viewer(server.url, `${path}/attach`, undefined);
      viewers.push(bad);
      await bad.opened;
      bad.send('auth', { token: 'ork_wrong' });
      assert.equal((await bad.closed).code, 4401);
      const missing = new Viewer(server.url, `${base}/trm_missing/attach`, server.adminKey);
      viewers.push(missing);
      assert.equal((await missing.frame('error')).payload.code, 'TERMINAL_NOT_FOUND');
      assert.equal((await missing.closed).code, 4404);
      assert.equal((await server.call('DELETE', path)).status, 204);
    });
  });
}
