import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { upstreamFetch } from '../src/mcp/http-fetch.ts';

/** The MCP hub's fetch for Streamable HTTP upstreams answers as fetch does. */
describe('upstream fetch', () => {
  let server: Server;
  let base: string;
  const upstream = upstreamFetch();
  const seen: { method: string; url: string; headers: Record<string, unknown>; body: string }[] =
    [];

  before(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => {
        body += chunk;
      });
      req.on('end', () => {
        seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
        switch (req.url) {
          case '/json':
            res.writeHead(200, { 'content-type': 'application/json', 'x-two': ['a', 'b'] });
            res.end(JSON.stringify({ echo: body }));
            return;
          case '/accepted':
            res.writeHead(202).end();
            return;
          case '/empty':
            res.writeHead(204).end();
            return;
          case '/moved':
            res.writeHead(307, { location: '/json' }).end();
            return;
          case '/stream':
            // One event now, the rest never: the reader aborts.
            res.writeHead(200, { 'content-type': 'text/event-stream' });
            res.write('data: first\n\n');
            return;
          default:
            res.writeHead(404).end('no');
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    upstream.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('sends the method, headers and body, and answers status, headers and body', async () => {
    const res = await upstream.fetch(`${base}/json`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'mcp-session-id': 's1' },
      body: '{"x":"é"}',
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.equal(res.headers.get('x-two'), 'a, b');
    assert.deepEqual(await res.json(), { echo: '{"x":"é"}' });
    const request = seen.at(-1);
    assert.equal(request?.method, 'POST');
    assert.equal(request?.headers['mcp-session-id'], 's1');
    assert.equal(request?.headers['content-length'], String(Buffer.byteLength('{"x":"é"}')));
  });

  it('keeps the connection alive across requests', async () => {
    const ports = new Set<number>();
    server.on('connection', (socket) => ports.add(socket.remotePort ?? 0));
    for (let i = 0; i < 5; i++) await (await upstream.fetch(`${base}/json`)).text();
    assert.ok(ports.size <= 1, `opened ${ports.size} connections for 5 requests`);
  });

  it('has no body for 204, an empty one for 202, and reads a 404', async () => {
    const empty = await upstream.fetch(`${base}/empty`, { method: 'DELETE' });
    assert.equal(empty.status, 204);
    assert.equal(empty.body, null);
    const accepted = await upstream.fetch(`${base}/accepted`, { method: 'POST', body: '{}' });
    assert.equal(accepted.status, 202);
    assert.equal(await accepted.text(), '');
    const missing = await upstream.fetch(`${base}/nowhere`);
    assert.equal(missing.status, 404);
    assert.equal(await missing.text(), 'no');
  });

  it('follows a redirect as fetch does, body and method kept for 307', async () => {
    const res = await upstream.fetch(`${base}/moved`, { method: 'POST', body: 'again' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { echo: 'again' });
    assert.deepEqual(
      seen.slice(-2).map((r) => [r.method, r.url, r.body]),
      [
        ['POST', '/moved', 'again'],
        ['POST', '/json', 'again'],
      ],
    );
  });

  it('rejects with the reason of an aborted signal, before and during the body', async () => {
    const early = new AbortController();
    early.abort(new Error('gave up'));
    await assert.rejects(upstream.fetch(`${base}/json`, { signal: early.signal }), /gave up/);

    const late = new AbortController();
    const res = await upstream.fetch(`${base}/stream`, { signal: late.signal });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    assert.equal(new TextDecoder().decode(first.value), 'data: first\n\n');
    const rest = reader.read();
    late.abort(new Error('cancelled by the caller'));
    await assert.rejects(rest, /cancelled by the caller/);
  });

  it('rejects a connection that fails as fetch does: TypeError with the cause', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(upstream.fetch(`http://127.0.0.1:${port}/mcp`), (err: unknown) => {
      assert.ok(err instanceof TypeError);
      assert.equal((err.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
      return true;
    });
  });
});
