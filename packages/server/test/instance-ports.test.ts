import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

// Ports of instances: numbers from the configured range, unique in the store, given to the
// instance's processes; reached through Orchestra with a credential or a share link, for
// HTTP and WebSocket, in the instance's own network.

/** The instance's app (run by Debian's Node in the sandbox): echoes requests, and a WebSocket. */
const APP = `
const http = require('http');
const crypto = require('crypto');
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    res.setHeader('content-type', 'application/json');
    res.setHeader('x-app', 'yes');
    res.end(JSON.stringify({
      method: req.method,
      url: req.url,
      prefix: req.headers['x-forwarded-prefix'] || null,
      authorization: req.headers.authorization || null,
      apiKey: req.headers['x-api-key'] || null,
      body,
    }));
  });
});
// A WebSocket by hand (one short masked text frame at a time): what it gets, it echoes.
server.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1')
    .update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: ' + accept + '\\r\\n\\r\\n');
  socket.on('data', (buf) => {
    if ((buf[0] & 0x0f) === 8) return socket.end();
    const len = buf[1] & 0x7f;
    const mask = buf.subarray(2, 6);
    const data = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
    const reply = Buffer.from('echo:' + data.toString() + ':' + req.url);
    socket.write(Buffer.concat([Buffer.from([0x81, reply.length]), reply]));
  });
});
server.listen(Number(process.env.PORT_WEB), '127.0.0.1');
`;

for (const store of STORE_VARIANTS) {
  describe(`instance ports on ${store}`, () => {
    let server: TestServer;
    let id: string;
    let port: number;

    const get = (path: string, key: string | null = server.adminKey) =>
      fetch(server.url + path, { headers: key ? { authorization: `Bearer ${key}` } : {} });

    /** Waits until the app answers through the proxy (it starts with the instance). */
    async function appAnswers(path: string): Promise<any> {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const res = await get(path);
        if (res.status === 200) return res.json();
        if (Date.now() > deadline) assert.fail(`the app never answered: ${await res.text()}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }

    before(async () => {
      server = await startTestServer({
        store,
        env: { ORCHESTRA_INSTANCE_PORT_RANGE: '21000-21009' },
      });
      const template = await server.call('POST', '/v1/workspace-templates', {
        body: {
          name: 'web',
          startup: { command: ['node', 'app.js'] },
          ports: [{ name: 'web' }, { name: 'debug-port' }],
        },
      });
      assert.equal(template.status, 201, JSON.stringify(template.body));
      assert.deepEqual(template.body.ports, [{ name: 'web' }, { name: 'debug-port' }]);
      const created = await server.call('POST', '/v1/instances', {
        body: { template: 'web', start: false },
      });
      id = created.body.id;
      port = created.body.ports[0].port;
      await server.call('PUT', `/v1/instances/${id}/files/content?path=app.js`, {
        body: APP,
        headers: { 'content-type': 'application/octet-stream' },
      });
      const started = await server.call('POST', `/v1/instances/${id}/start`);
      assert.equal(started.body.state, 'running', JSON.stringify(started.body));
    });

    after(async () => {
      await server.stop();
    });

    test('ports get numbers of the range, unique, and the processes get them as PORT_<NAME>', async () => {
      const instance = (await server.call('GET', `/v1/instances/${id}`)).body;
      assert.equal(instance.ports.length, 2);
      const numbers = instance.ports.map((p: { port: number }) => p.port);
      for (const n of numbers) assert.ok(n >= 21000 && n <= 21009, String(n));
      assert.notEqual(numbers[0], numbers[1]);
      const env = await server.call('POST', `/v1/instances/${id}/exec`, {
        body: { command: ['sh', '-c', 'echo "$PORT $PORT_WEB $PORT_DEBUG_PORT"'] },
      });
      assert.equal(env.body.stdout.trim(), `${numbers[0]} ${numbers[0]} ${numbers[1]}`);

      // Ten ports in the range: four more instances take eight, the fifth finds none.
      const more: string[] = [];
      for (let i = 0; i < 4; i++) {
        const made = await server.call('POST', '/v1/instances', {
          body: { template: 'web', start: false },
        });
        assert.equal(made.status, 201, JSON.stringify(made.body));
        more.push(made.body.id);
      }
      const all = new Set<number>(numbers);
      for (const other of more) {
        for (const p of (await server.call('GET', `/v1/instances/${other}`)).body.ports) {
          assert.ok(!all.has(p.port), `port ${p.port} given twice`);
          all.add(p.port);
        }
      }
      expectError(
        await server.call('POST', '/v1/instances', { body: { template: 'web', start: false } }),
        503,
        'PORTS_EXHAUSTED',
      );
      // A deleted instance gives its ports back.
      await server.call('DELETE', `/v1/instances/${more[0]}`);
      const again = await server.call('POST', '/v1/instances', {
        body: { template: 'web', start: false },
      });
      assert.equal(again.status, 201, JSON.stringify(again.body));
      for (const other of [...more.slice(1), again.body.id]) {
        await server.call('DELETE', `/v1/instances/${other}`);
      }
      const twice = await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'twice', ports: [{ name: 'a' }, { name: 'a' }] },
      });
      expectError(twice, 400, 'VALIDATION_FAILED');
      expectError(
        await server.call('POST', '/v1/workspace-templates', {
          body: { name: 'bad-name', ports: [{ name: 'Web Port' }] },
        }),
        400,
        'VALIDATION_FAILED',
      );
    });

    test('HTTP through the proxy: path, query, method and body reach the app; credentials do not', async () => {
      const prefix = `/v1/instances/${id}/ports/${port}`;
      const seen = await appAnswers(`${prefix}/hello/world?x=1&y=2`);
      assert.deepEqual(seen, {
        method: 'GET',
        url: '/hello/world?x=1&y=2',
        prefix,
        authorization: null,
        apiKey: null,
        body: '',
      });
      const posted = await fetch(`${server.url}${prefix}/submit`, {
        method: 'POST',
        headers: { 'x-api-key': server.adminKey, 'content-type': 'text/plain' },
        body: 'some bytes',
      });
      assert.equal(posted.status, 200);
      assert.equal(posted.headers.get('x-app'), 'yes');
      // The app's pages are sandboxed out of Orchestra's origin.
      assert.match(posted.headers.get('content-security-policy') ?? '', /^sandbox allow-scripts/);
      const echoed = (await posted.json()) as { method: string; body: string; apiKey: null };
      assert.deepEqual([echoed.method, echoed.body, echoed.apiKey], ['POST', 'some bytes', null]);
      // The bare prefix is the app's root.
      assert.equal(((await (await get(prefix)).json()) as { url: string }).url, '/');

      const anonymous = await get(`${prefix}/x`, null);
      expectError(
        { status: anonymous.status, body: await anonymous.json() },
        401,
        'UNAUTHENTICATED',
      );
      const closed = await get(`/v1/instances/${id}/ports/${port + 100}/`);
      expectError({ status: closed.status, body: await closed.json() }, 502, 'PORT_NOT_LISTENING');
      const bad = await get(`/v1/instances/${id}/ports/70000/`);
      expectError({ status: bad.status, body: await bad.json() }, 400, 'VALIDATION_FAILED');
    });

    test('WebSocket through the proxy, with the credential in the upgrade', async () => {
      const socket = new WebSocket(
        `${server.url.replace('http', 'ws')}/v1/instances/${id}/ports/${port}/live?room=1`,
        { headers: { authorization: `Bearer ${server.adminKey}` } },
      );
      const message = new Promise<string>((resolve, reject) => {
        socket.once('message', (data) => resolve(String(data)));
        socket.once('error', reject);
      });
      await new Promise((resolve) => socket.once('open', resolve));
      socket.send('hi');
      assert.equal(await message, 'echo:hi:/live?room=1');
      socket.close();
    });

    test('share links: reach the port without a credential until revoked; list without tokens', async () => {
      const shared = await server.call('POST', `/v1/instances/${id}/shares`, {
        body: { port, expires_in_seconds: 600 },
      });
      assert.equal(shared.status, 201, JSON.stringify(shared.body));
      assert.match(shared.body.url, /^\/share\/ors_[A-Za-z0-9_-]+\/$/);
      const seen = (await (await get(`${shared.body.url}page?q=1`, null)).json()) as {
        url: string;
        prefix: string;
      };
      assert.equal(seen.url, '/page?q=1');
      assert.equal(`${seen.prefix}/`, shared.body.url);

      const socket = new WebSocket(`${server.url.replace('http', 'ws')}${shared.body.url}ws`);
      const message = new Promise<string>((resolve) =>
        socket.once('message', (d) => resolve(String(d))),
      );
      await new Promise((resolve) => socket.once('open', resolve));
      socket.send('shared');
      assert.equal(await message, 'echo:shared:/ws');
      socket.close();

      const listed = await server.call('GET', `/v1/instances/${id}/shares`);
      assert.equal(listed.body.items.length, 1);
      assert.equal(listed.body.items[0].url, null);
      assert.ok(!JSON.stringify(listed.body).includes(shared.body.url.slice(7, 30)));
      const revoked = await server.call('DELETE', `/v1/instances/${id}/shares/${shared.body.id}`);
      assert.equal(revoked.status, 204);
      const gone = await get(`${shared.body.url}page`, null);
      expectError({ status: gone.status, body: await gone.json() }, 404, 'PORT_SHARE_NOT_FOUND');
      const made = await get('/share/ors_nothing/', null);
      expectError({ status: made.status, body: await made.json() }, 404, 'PORT_SHARE_NOT_FOUND');
      for (const body of [
        { port: 0 },
        { port, expires_in_seconds: 10 },
        { port, expires_in_seconds: 8 * 86400 },
      ]) {
        const res = await server.call('POST', `/v1/instances/${id}/shares`, { body });
        expectError(res, 400, 'VALIDATION_FAILED');
      }
      expectError(
        await server.call('DELETE', `/v1/instances/${id}/shares/shr_missing`),
        404,
        'PORT_SHARE_NOT_FOUND',
      );
    });

    test('another tenant reaches nothing; a stopped instance answers 409; the node’s network exposes only own ports', async () => {
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: `ports-${store}` } });
      const key = tenant.body.admin_key.secret as string;
      const foreign = await get(`/v1/instances/${id}/ports/${port}/`, key);
      expectError(
        { status: foreign.status, body: await foreign.json() },
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );
      expectError(
        await server.call('POST', `/v1/instances/${id}/shares`, { body: { port }, key }),
        404,
        'WORKSPACE_INSTANCE_NOT_FOUND',
      );

      await server.call('POST', '/v1/workspace-templates', {
        body: { name: 'on-host', network: 'host', ports: [{ name: 'web' }] },
      });
      const host = (await server.call('POST', '/v1/instances', { body: { template: 'on-host' } }))
        .body;
      // The server's own port is on the node's loopback: not through an instance.
      const serverPort = new URL(server.url).port;
      const refused = await get(`/v1/instances/${host.id}/ports/${serverPort}/healthz`);
      expectError({ status: refused.status, body: await refused.json() }, 400, 'VALIDATION_FAILED');
      const own = await get(`/v1/instances/${host.id}/ports/${host.ports[0].port}/`);
      expectError({ status: own.status, body: await own.json() }, 502, 'PORT_NOT_LISTENING');
      await server.call('DELETE', `/v1/instances/${host.id}`);

      await server.call('POST', `/v1/instances/${id}/stop`);
      const stopped = await get(`/v1/instances/${id}/ports/${port}/`);
      expectError(
        { status: stopped.status, body: await stopped.json() },
        409,
        'WORKSPACE_INSTANCE_STATE',
      );
    });
  });
}
