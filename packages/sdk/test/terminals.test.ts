import assert from 'node:assert/strict';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { Orchestra, OrchestraError } from '../src/index.ts';
import { rejection } from './support.ts';

// Terminals through the SDK: open, attach, type, resize, read the screen, and a viewer whose
// connection is cut attaches again by itself and redraws the screen the server kept.

let server: TestServer;
let client: Orchestra;
let instance: string;
/** A TCP proxy in front of the server whose connections a test can cut. */
let proxy: { url: string; cut: () => void; close: () => Promise<void> };

function startProxy(target: URL): Promise<typeof proxy> {
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  };
  const listener = createServer((downstream) => {
    const upstream = connect(Number(target.port), target.hostname);
    track(downstream);
    track(upstream);
    downstream.on('close', () => upstream.destroy());
    upstream.on('close', () => downstream.destroy());
    downstream.pipe(upstream).pipe(downstream);
  });
  return new Promise((resolve) => {
    listener.listen(0, '127.0.0.1', () => {
      const { port } = listener.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        cut: () => {
          for (const socket of sockets) socket.destroy();
        },
        close: () =>
          new Promise((done) => {
            for (const socket of sockets) socket.destroy();
            listener.close(() => done());
          }),
      });
    });
  });
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not in time`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

before(async () => {
  server = await startTestServer();
  proxy = await startProxy(new URL(server.url));
  client = new Orchestra({ url: proxy.url, apiKey: server.adminKey });
  await client.workspaceTemplates.create({ name: 'sdk-term' });
  instance = (await client.instances.create({ template: 'sdk-term' })).id;
});

after(async () => {
  await proxy.close();
  await server.stop();
});

test('attach, type, resize; a cut connection attaches again and redraws the screen; exit ends it', async () => {
  const terminal = await client.instances.terminals.open(instance, { cols: 90, rows: 20 });
  assert.equal(terminal.state, 'running');
  let output = '';
  const screens: string[] = [];
  const sizes: [number, number][] = [];
  const decoder = new TextDecoder();
  const viewer = client.instances.terminals.attach(instance, terminal.id, {
    onOutput: (data) => {
      output += decoder.decode(data, { stream: true });
    },
    onScreen: (screen) => screens.push(screen),
    onResize: (cols, rows) => sizes.push([cols, rows]),
  });
  const attached = await viewer.attached;
  assert.equal(attached.id, terminal.id);
  assert.deepEqual([attached.cols, attached.rows], [90, 20]);
  // (Typed text is echoed: what the test waits for is computed by the shell.)
  viewer.write('echo "before-$((20 + 1))"\r');
  await until('output before the cut', () => output.includes('before-21'));
  viewer.resize(100, 30);
  await until('resized', () => sizes.some(([c, r]) => c === 100 && r === 30));

  proxy.cut();
  await until('attached again', () => screens.length === 2);
  assert.match(screens[1] ?? '', /before-21/);
  viewer.write('echo "after-$((20 + 2))"\r');
  await until('output after the cut', () => output.includes('after-22'));

  // Without a WebSocket: type, read the screen, list.
  await client.instances.terminals.write(instance, terminal.id, 'echo "api-$((20 + 3))"\r');
  await until('the API input echoed to the viewer', () => output.includes('api-23'));
  const screen = await client.instances.terminals.screen(instance, terminal.id, { scrollback: 10 });
  assert.equal(screen.rows, 30);
  assert.ok(screen.lines.some((line) => line === 'api-23'));
  const listed = await client.instances.terminals.list(instance, { state: 'running' });
  assert.deepEqual(
    listed.items.map((t) => t.id),
    [terminal.id],
  );

  viewer.write('exit 7\r');
  const exit = await viewer.exited;
  assert.equal(exit.exit_code, 7);
  assert.match(exit.reason, /exited with code 7/);
  assert.equal((await client.instances.terminals.get(instance, terminal.id)).state, 'exited');
  const err = await rejection(() => client.instances.terminals.write(instance, terminal.id, 'x'));
  assert.equal(err.code, 'TERMINAL_EXITED');
  await client.instances.terminals.close(instance, terminal.id);
  assert.equal(
    (await rejection(() => client.instances.terminals.get(instance, terminal.id))).code,
    'TERMINAL_NOT_FOUND',
  );
});

test('attaching to a terminal that does not exist fails for good; close detaches and leaves it running', async () => {
  const missing = client.instances.terminals.attach(instance, 'trm_01a2500000000000000000000000', {
    onOutput: () => {},
  });
  const refused = await missing.attached.then(
    () => assert.fail('attached to nothing'),
    (err: unknown) => err,
  );
  assert.ok(refused instanceof OrchestraError);
  assert.equal(refused.code, 'TERMINAL_NOT_FOUND');

  const terminal = await client.instances.terminals.open(instance, { command: ['sh'] });
  const viewer = client.instances.terminals.attach(instance, terminal.id, { onOutput: () => {} });
  await viewer.attached;
  assert.equal((await client.instances.terminals.get(instance, terminal.id)).viewers, 1);
  await viewer.close();
  let seen = await client.instances.terminals.get(instance, terminal.id);
  for (const deadline = Date.now() + 60_000; seen.viewers > 0 && Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    seen = await client.instances.terminals.get(instance, terminal.id);
  }
  assert.deepEqual([seen.state, seen.viewers], ['running', 0]);
  await client.instances.terminals.close(instance, terminal.id);
  const bad = await rejection(() => client.instances.terminals.open(instance, { cols: 0 }));
  assert.equal(bad.code, 'VALIDATION_FAILED');
});
