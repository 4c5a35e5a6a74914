import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

/** A loopback HTTP upstream whose behaviour each test sets per path. */
class Upstream {
  readonly server: Server;
  url = '';
  readonly requests: {
    method: string;
    url: string;
    headers: IncomingMessage['headers'];
    body: string;
  }[] = [];
  handlers = new Map<string, (req: IncomingMessage, res: ServerResponse, body: string) => void>();

  constructor() {
    this.server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        this.requests.push({
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body,
        });
        const path = new URL(req.url ?? '/', 'http://x').pathname;
        const handler = [...this.handlers].find(([prefix]) => path.startsWith(prefix))?.[1];
        if (handler === undefined) {
          res.writeHead(404).end('no handler');
          return;
        }
        handler(req, res, body);
      });
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const json = (res: ServerResponse, status: number, value: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
};

for (const store of STORE_VARIANTS) {
  describe(`tools API on ${store}`, () => {
    let server: TestServer;
    const upstream = new Upstream();
    before(async () => {
      await upstream.start();
      server = await startTestServer({
        store,
        env: { ORCHESTRA_TOOL_BREAKER_FAILURES: '3', ORCHESTRA_TOOL_BREAKER_HALF_OPEN_MS: '300' },
      });
    });
    after(async () => {
      await server.stop();
      await upstream.stop();
    });

    const readOnly = { readOnlyHint: true };
    const httpTool = (name: string, path: string, extra: Record<string, unknown> = {}) => ({
      name,
      description: `Test tool ${name}`,
      annotations: readOnly,
      source: { type: 'http', method: 'GET', url: `${upstream.url}${path}` },
      ...extra,
    });
    const invoke = (name: string, args: Record<string, unknown>, key?: string) =>
      server.call('POST', `/v1/tools/${name}/invoke`, {
        body: { arguments: args },
        ...(key ? { key } : {}),
      });

    test('registers an HTTP tool; reads it by name and id; versions on update', async () => {
      const created = await server.call('POST', '/v1/tools', {
        body: httpTool('weather__forecast', '/forecast/{city}', {
          input_schema: {
            type: 'object',
            required: ['city'],
            properties: { city: { type: 'string', maxLength: 50 }, days: { type: 'integer' } },
          },
          labels: { team: 'geo' },
        }),
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const tool = created.body;
      assert.match(tool.id, /^tool_/);
      assert.equal(tool.version, 1);
      assert.equal(tool.state, 'active');
      assert.equal(tool.destructive, false);
      assert.equal(tool.timeout_ms, 30_000);
      assert.match(tool.pinned_hash, /^[0-9a-f]{64}$/);
      assert.deepEqual(tool.flags, []);
      assert.deepEqual((await server.call('GET', `/v1/tools/${tool.id}`)).body, tool);

      const { name: _name, ...definition } = httpTool('x', '/forecast/{city}', {
        input_schema: tool.input_schema,
      });
      const updated = await server.call('PUT', '/v1/tools/weather__forecast', {
        body: { ...definition, description: 'Forecast v2' },
      });
      assert.equal(updated.status, 200, JSON.stringify(updated.body));
      assert.equal(updated.body.version, 2);
      assert.notEqual(updated.body.pinned_hash, tool.pinned_hash);
      const v1 = await server.call('GET', '/v1/tools/weather__forecast/versions/1');
      assert.equal(v1.body.description, 'Test tool weather__forecast');
      const versions = await server.call('GET', '/v1/tools/weather__forecast/versions');
      assert.deepEqual(
        versions.body.items.map((v: { version: number; latest: boolean }) => [v.version, v.latest]),
        [
          [2, true],
          [1, false],
        ],
      );
    });

    test('calls an HTTP tool: URL template, query string, JSON result as structured content', async () => {
      upstream.handlers.set('/forecast/', (req, res) =>
        json(res, 200, {
          city: decodeURIComponent(req.url?.split('/')[2]?.split('?')[0] ?? ''),
          temp: 21,
        }),
      );
      const res = await invoke('weather__forecast', { city: 'São Paulo', days: 3 });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.result.is_error, false);
      assert.deepEqual(res.body.result.structured_content, { city: 'São Paulo', temp: 21 });
      assert.equal(res.body.result.content[0].type, 'text');
      assert.equal(upstream.requests.at(-1)?.url, '/forecast/S%C3%A3o%20Paulo?days=3');
      const call = res.body.call;
      assert.match(call.id, /^tc_/);
      assert.equal(call.status, 'succeeded');
      assert.equal(call.tool_version, 2);
      assert.equal(call.upstream, upstream.url.slice('http://'.length));
      assert.equal(call.caller.role, 'admin');
      assert.ok(call.result_bytes > 0);
      const recorded = await server.call('GET', `/v1/tool-calls/${call.id}`);
      assert.deepEqual(recorded.body, call);
    });

    test('bad input gets a 4xx: schema, arguments, unknown tool, MCP source by hand, unsafe retry', async () => {
      expectError(
        await server.call('POST', '/v1/tools', { body: { name: 'bad name!', source: {} } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', '/v1/tools', {
          body: { ...httpTool('x__mcp', '/x'), source: { type: 'mcp', server: 's', tool: 't' } },
        }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', '/v1/tools', {
          body: httpTool('x__retry', '/x', { annotations: {}, retry: { max_attempts: 3 } }),
        }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', '/v1/tools', {
          body: httpTool('x__schema', '/x', { input_schema: { type: 'nonsense' } }),
        }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', '/v1/tools', { body: httpTool('weather__forecast', '/x') }),
        409,
        'TOOL_ALREADY_EXISTS',
      );
      const invalid = expectError(
        await invoke('weather__forecast', { days: 'three' }),
        400,
        'TOOL_INVALID_ARGUMENTS',
      );
      assert.match(invalid.details.call_id, /^tc_/);
      const denied = await server.call('GET', `/v1/tool-calls/${invalid.details.call_id}`);
      assert.equal(denied.body.status, 'denied');
      assert.equal(denied.body.error.code, 'TOOL_INVALID_ARGUMENTS');
      expectError(await invoke('nope', {}), 404, 'TOOL_NOT_FOUND');
      expectError(await server.call('GET', '/v1/tools/nope/versions/9'), 404, 'TOOL_NOT_FOUND');
      expectError(
        await server.call('GET', '/v1/tools/weather__forecast/versions/9'),
        404,
        'TOOL_VERSION_NOT_FOUND',
      );
      expectError(
        await server.call('POST', '/v1/tools/weather__forecast/approve', { body: { hash: 'x' } }),
        409,
        'TOOL_NOT_HELD',
      );
      expectError(await server.call('GET', '/v1/tool-calls/tc_nope'), 404, 'TOOL_CALL_NOT_FOUND');
      expectError(await server.call('GET', '/v1/tool-calls?status=odd'), 400, 'VALIDATION_FAILED');
    });

    test('lists with filters and search', async () => {
      await server.call('POST', '/v1/tools', {
        body: httpTool('github__create_issue', '/issues', {
          description: 'Open a GitHub issue in a repository',
          annotations: { destructiveHint: false },
        }),
      });
      const all = await server.call('GET', '/v1/tools?limit=1');
      assert.equal(all.body.items.length, 1);
      assert.ok(all.body.next_cursor);
      const searched = await server.call('GET', '/v1/tools?q=github%20REPOSITORY');
      assert.deepEqual(
        searched.body.items.map((t: { name: string }) => t.name),
        ['github__create_issue'],
      );
      const prefixed = await server.call('GET', '/v1/tools?name_prefix=weather');
      assert.deepEqual(
        prefixed.body.items.map((t: { name: string }) => t.name),
        ['weather__forecast'],
      );
      const labelled = await server.call('GET', '/v1/tools?label=team%3Dgeo');
      assert.equal(labelled.body.items.length, 0, 'labels are of the latest version (v2 has none)');
      const percent = await server.call('GET', '/v1/tools?q=%25');
      assert.equal(
        percent.body.items.length,
        0,
        'a % in the search is a character, not a wildcard',
      );
    });

    test('policies: destructive tools need an explicit allow, deny wins, argument constraints', async () => {
      upstream.handlers.set('/files', (_req, res, body) =>
        json(res, 200, { deleted: JSON.parse(body).path }),
      );
      const created = await server.call('POST', '/v1/tools', {
        body: {
          name: 'files__delete',
          description: 'Delete a file',
          input_schema: {
            type: 'object',
            properties: { path: { type: 'string' } },
            required: ['path'],
          },
          source: { type: 'http', method: 'POST', url: `${upstream.url}/files` },
        },
      });
      assert.equal(created.body.destructive, true);
      const refused = expectError(
        await invoke('files__delete', { path: '/tmp/x' }),
        403,
        'TOOL_CALL_DENIED',
      );
      assert.match(refused.message, /destructive/);

      const allow = await server.call('POST', '/v1/tool-policies', {
        body: {
          name: 'files-in-tmp',
          effect: 'allow',
          tools: ['files__*'],
          arguments_schema: {
            type: 'object',
            properties: { path: { type: 'string', pattern: '^/tmp/', maxLength: 200 } },
          },
        },
      });
      assert.equal(allow.status, 201, JSON.stringify(allow.body));
      const ok = await invoke('files__delete', { path: '/tmp/x' });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.deepEqual(ok.body.result.structured_content, { deleted: '/tmp/x' });
      const outside = expectError(
        await invoke('files__delete', { path: '/etc/passwd' }),
        403,
        'TOOL_CALL_DENIED',
      );
      assert.match(outside.message, /files-in-tmp/);

      const operator = await server.call('POST', '/v1/api-keys', {
        body: { name: 'op', role: 'operator' },
      });
      const deny = await server.call('POST', '/v1/tool-policies', {
        body: {
          name: 'no-operators',
          effect: 'deny',
          tools: ['*'],
          match: { roles: ['operator'] },
        },
      });
      assert.equal(deny.status, 201);
      expectError(
        await invoke('files__delete', { path: '/tmp/y' }, operator.body.secret),
        403,
        'TOOL_CALL_DENIED',
      );
      expectError(
        await invoke('weather__forecast', { city: 'Oslo' }, operator.body.secret),
        403,
        'TOOL_CALL_DENIED',
      );
      assert.equal(
        (await invoke('weather__forecast', { city: 'Oslo' })).status,
        200,
        'admins still may',
      );

      const viewer = await server.call('POST', '/v1/api-keys', {
        body: { name: 'v', role: 'viewer' },
      });
      expectError(
        await invoke('weather__forecast', { city: 'Oslo' }, viewer.body.secret),
        403,
        'PERMISSION_DENIED',
      );
      expectError(
        await server.call('POST', '/v1/tool-policies', {
          key: operator.body.secret,
          body: { name: 'x', effect: 'allow', tools: ['*'] },
        }),
        403,
        'PERMISSION_DENIED',
      );
      expectError(
        await server.call('POST', '/v1/tool-policies', {
          body: { name: 'bad', effect: 'deny', tools: ['*'], arguments_schema: { type: 'object' } },
        }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', '/v1/tool-policies', {
          body: { name: 'no-operators', effect: 'deny', tools: ['*'] },
        }),
        409,
        'TOOL_POLICY_ALREADY_EXISTS',
      );
      assert.equal((await server.call('DELETE', '/v1/tool-policies/no-operators')).status, 204);
      expectError(
        await server.call('GET', '/v1/tool-policies/no-operators'),
        404,
        'TOOL_POLICY_NOT_FOUND',
      );
      assert.equal(
        (await invoke('weather__forecast', { city: 'Oslo' }, operator.body.secret)).status,
        200,
      );
    });

    test('a policy rate limit refuses with 429 once used up', async () => {
      await server.call('POST', '/v1/tool-policies', {
        body: {
          name: 'slow-weather',
          effect: 'allow',
          tools: ['weather__forecast'],
          rate_limit: { requests: 2, per_seconds: 3600 },
        },
      });
      assert.equal((await invoke('weather__forecast', { city: 'A' })).status, 200);
      assert.equal((await invoke('weather__forecast', { city: 'B' })).status, 200);
      const limited = expectError(
        await invoke('weather__forecast', { city: 'C' }),
        429,
        'TOOL_RATE_LIMITED',
      );
      assert.ok(limited.details.retry_after_seconds > 0);
      await server.call('DELETE', '/v1/tool-policies/slow-weather');
      assert.equal((await invoke('weather__forecast', { city: 'D' })).status, 200);
    });

    test('the call record redacts credential-like arguments and truncates long values', async () => {
      upstream.handlers.set('/echo', (_req, res) => json(res, 200, { ok: true }));
      await server.call('POST', '/v1/tools', { body: httpTool('util__echo', '/echo') });
      const res = await invoke('util__echo', { api_key: 'sk-very-secret', note: 'x'.repeat(5000) });
      assert.equal(res.status, 200);
      assert.equal(res.body.call.arguments.api_key, '[redacted]');
      assert.ok(res.body.call.arguments.note.length < 1100);
      const page = await server.call('GET', '/v1/tool-calls?tool=util__echo');
      assert.equal(page.body.items[0].arguments.api_key, '[redacted]');
      assert.ok(!JSON.stringify(page.body).includes('sk-very-secret'));
    });

    test('secret references in headers are resolved at each call and redacted from what comes back', async () => {
      const secret = `sk-${store}-3c9e7a1f0b`;
      upstream.handlers.set('/whoami', (req, res) =>
        json(res, 200, { saw: req.headers.authorization }),
      );
      assert.equal(
        (await server.call('PUT', '/v1/secrets/UPSTREAM_TOKEN', { body: { value: secret } }))
          .status,
        201,
      );
      const created = await server.call('POST', '/v1/tools', {
        body: httpTool('auth__whoami', '/whoami', {
          source: {
            type: 'http',
            method: 'GET',
            url: `${upstream.url}/whoami`,
            // biome-ignore lint/suspicious/noTemplateCurlyInString: a secret reference
            headers: { authorization: 'Bearer ${secret:UPSTREAM_TOKEN}' },
          },
        }),
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.ok(!JSON.stringify(created.body).includes(secret));
      const res = await invoke('auth__whoami', {});
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(upstream.requests.at(-1)?.headers.authorization, `Bearer ${secret}`);
      assert.ok(!JSON.stringify(res.body).includes(secret), JSON.stringify(res.body));
      assert.equal(res.body.result.structured_content.saw, 'Bearer [redacted]');
      const calls = await server.call('GET', '/v1/tool-calls?tool=auth__whoami');
      assert.ok(!JSON.stringify(calls.body).includes(secret));

      await server.call('DELETE', '/v1/secrets/UPSTREAM_TOKEN');
      const missing = await invoke('auth__whoami', {});
      assert.equal(missing.body.call.status, 'failed');
      assert.equal(missing.body.call.error.code, 'SECRET_NOT_FOUND');
    });

    test('upstream failures: HTTP 4xx is a tool error; 5xx, garbage and oversize fail the call', async () => {
      upstream.handlers.set('/missing', (_req, res) => json(res, 404, { message: 'not here' }));
      upstream.handlers.set('/garbage', (_req, res) =>
        res.writeHead(200, { 'content-type': 'application/json' }).end('{not json'),
      );
      await server.call('POST', '/v1/tools', { body: httpTool('t__missing', '/missing') });
      await server.call('POST', '/v1/tools', { body: httpTool('t__garbage', '/garbage') });
      const missing = await invoke('t__missing', {});
      assert.equal(missing.status, 200);
      assert.equal(missing.body.result.is_error, true);
      assert.equal(missing.body.call.status, 'succeeded');
      assert.match(missing.body.result.content[0].text, /^HTTP 404/);
      const garbage = await invoke('t__garbage', {});
      assert.equal(garbage.body.call.status, 'failed');
      assert.equal(garbage.body.call.error.code, 'TOOL_UPSTREAM_ERROR');
      assert.equal(garbage.body.result.is_error, true);
    });
  });
}

describe('tool executor faults', () => {
  let server: TestServer;
  const upstream = new Upstream();
  const slow = new Upstream();
  before(async () => {
    await upstream.start();
    await slow.start();
    server = await startTestServer({
      env: {
        ORCHESTRA_TOOL_BREAKER_FAILURES: '3',
        // Long enough that the breaker is surely still open when the next call comes.
        ORCHESTRA_TOOL_BREAKER_HALF_OPEN_MS: '60000',
        ORCHESTRA_TOOL_RESULT_MAX_BYTES: '65536',
      },
    });
  });
  after(async () => {
    await server.stop();
    await upstream.stop();
    await slow.stop();
  });

  const tool = (name: string, url: string, extra: Record<string, unknown> = {}) =>
    server.call('POST', '/v1/tools', {
      body: {
        name,
        annotations: { readOnlyHint: true },
        source: { type: 'http', method: 'GET', url },
        ...extra,
      },
    });
  const invoke = (name: string) =>
    server.call('POST', `/v1/tools/${name}/invoke`, { body: { arguments: {} } });

  test('a hanging upstream times out; its breaker opens and fails fast; other upstreams are untouched', async () => {
    slow.handlers.set('/hang', () => {
      // never answers
    });
    upstream.handlers.set('/fine', (_req, res) => json(res, 200, { fine: true }));
    assert.equal((await tool('slow__hang', `${slow.url}/hang`, { timeout_ms: 200 })).status, 201);
    assert.equal((await tool('fast__fine', `${upstream.url}/fine`)).status, 201);
    for (let i = 0; i < 3; i++) {
      const res = await invoke('slow__hang');
      assert.equal(res.status, 200);
      assert.equal(res.body.call.status, 'failed');
      assert.equal(res.body.call.error.code, 'TOOL_TIMEOUT');
    }
    const open = await invoke('slow__hang');
    assert.equal(open.body.call.error.code, 'TOOL_CIRCUIT_OPEN');
    const fine = await invoke('fast__fine');
    assert.equal(fine.body.call.status, 'succeeded');
    const metrics = await fetch(`${server.url}/metrics`).then((r) => r.text());
    assert.match(
      metrics,
      new RegExp(`orchestra_tool_upstream_circuit_open\\{upstream="${slow.url.slice(7)}"\\} 1`),
    );
    assert.match(
      metrics,
      /orchestra_tool_calls_total\{tool="fast__fine",upstream="[^"]+",status="succeeded"\} 1/,
    );
  });

  test('an open breaker lets a test call through after its half-open time, and closes when it succeeds', async () => {
    const local = await startTestServer({
      env: { ORCHESTRA_TOOL_BREAKER_FAILURES: '2', ORCHESTRA_TOOL_BREAKER_HALF_OPEN_MS: '300' },
    });
    try {
      let healthy = false;
      upstream.handlers.set('/mend', (_req, res) =>
        healthy ? json(res, 200, { ok: true }) : json(res, 503, { down: true }),
      );
      await local.call('POST', '/v1/tools', {
        body: {
          name: 'mend__get',
          annotations: { readOnlyHint: true },
          source: { type: 'http', method: 'GET', url: `${upstream.url}/mend` },
        },
      });
      const call = () =>
        local.call('POST', '/v1/tools/mend__get/invoke', { body: { arguments: {} } });
      assert.equal((await call()).body.call.error.code, 'TOOL_UPSTREAM_UNAVAILABLE');
      assert.equal((await call()).body.call.error.code, 'TOOL_UPSTREAM_UNAVAILABLE');
      assert.equal((await call()).body.call.error.code, 'TOOL_CIRCUIT_OPEN');
      healthy = true;
      // Only the wait matters, not its exact length: the breaker half-opens after 300 ms.
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal((await call()).body.call.status, 'succeeded');
      assert.equal((await call()).body.call.status, 'succeeded');
      const metrics = await fetch(`${local.url}/metrics`).then((r) => r.text());
      assert.match(metrics, /orchestra_tool_upstream_circuit_open\{upstream="[^"]+"\} 0/);
    } finally {
      await local.stop();
    }
  });

  test('retries an idempotent tool on 5xx, then succeeds', async () => {
    let n = 0;
    upstream.handlers.set('/flaky', (_req, res) => {
      n += 1;
      if (n < 3) json(res, 503, { busy: true });
      else json(res, 200, { n });
    });
    await tool('flaky__get', `${upstream.url}/flaky`, {
      retry: { max_attempts: 4, initial_delay_ms: 1, max_delay_ms: 5 },
    });
    const res = await invoke('flaky__get');
    assert.equal(res.body.call.status, 'succeeded', JSON.stringify(res.body));
    assert.equal(res.body.call.attempts, 3);
    assert.deepEqual(res.body.result.structured_content, { n: 3 });
  });

  test('an answer larger than the limit fails the call, bounded', async () => {
    upstream.handlers.set('/flood', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('x'.repeat(1024 * 1024));
    });
    await tool('flood__get', `${upstream.url}/flood`);
    const res = await invoke('flood__get');
    assert.equal(res.body.call.status, 'failed');
    assert.equal(res.body.call.error.code, 'TOOL_RESULT_TOO_LARGE');
  });

  test('tenant isolation: another tenant sees none of the tools, policies or calls', async () => {
    const tenant = await server.call('POST', '/v1/tenants', { body: { id: 'tools-other' } });
    const other = tenant.body.admin_key.secret as string;
    const list = await server.call('GET', '/v1/tools', { key: other });
    // Only the built-in workspace tools, which every tenant has as its own.
    const stored = (t: { source: { type: string } }) => t.source.type !== 'workspace';
    assert.deepEqual(list.body.items.filter(stored), []);
    assert.ok(list.body.items.every((t: { tenant_id: string }) => t.tenant_id === 'tools-other'));
    expectError(
      await server.call('GET', '/v1/tools/fast__fine', { key: other }),
      404,
      'TOOL_NOT_FOUND',
    );
    expectError(
      await server.call('POST', '/v1/tools/fast__fine/invoke', { key: other, body: {} }),
      404,
      'TOOL_NOT_FOUND',
    );
    const calls = await server.call('GET', '/v1/tool-calls', { key: other });
    assert.deepEqual(calls.body.items, []);
    const mine = await server.call('GET', '/v1/tool-calls?limit=1');
    expectError(
      await server.call('GET', `/v1/tool-calls/${mine.body.items[0].id}`, { key: other }),
      404,
      'TOOL_CALL_NOT_FOUND',
    );
    // The same name is free in the other tenant.
    const own = await server.call('POST', '/v1/tools', {
      key: other,
      body: {
        name: 'fast__fine',
        annotations: { readOnlyHint: true },
        source: { type: 'http', method: 'GET', url: `${upstream.url}/fine` },
      },
    });
    assert.equal(own.status, 201);
  });
});
