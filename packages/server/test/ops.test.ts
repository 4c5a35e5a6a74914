import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { expectError, startTestServer, type TestServer } from './helpers.ts';

/** Runs `promtool check metrics` on the text, as Prometheus' own linter would. */
function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    child.on('error', (err) =>
      reject(
        new Error(
          `promtool is needed (Debian package prometheus; .ci/run installs it): ${err.message}`,
        ),
      ),
    );
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

describe('operational endpoints', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  test('/healthz answers without credentials', async () => {
    const res = await server.call('GET', '/healthz', { key: null });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { status: 'ok' });
  });

  test('/readyz reports the store, version and node', async () => {
    const res = await server.call('GET', '/readyz', { key: null });
    assert.equal(res.status, 200);
    assert.equal(res.body.status, 'ready');
    assert.equal(res.body.store, 'sqlite');
    assert.equal(res.body.checks.store.status, 'ok');
    // A single node: its bus is in the process, its rate limits in memory.
    assert.deepEqual(res.body.checks.bus, { status: 'ok', backend: 'in-process' });
    assert.equal(res.body.checks.rate_limit.status, 'ok');
    assert.match(res.body.checks.rate_limit.backend, /^(memory|off)$/);
    assert.match(res.body.version, /^\d+\.\d+\.\d+/);
  });

  test('/metrics counts requests by route template and status, and passes promtool', async () => {
    await server.call('GET', '/v1/whoami');
    await server.call('GET', '/v1/api-keys/key_nope');
    await server.call('GET', '/v1/whoami', { key: 'ork_wrong' });
    const res = await server.call('GET', '/metrics', { key: null });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const text = res.body as string;
    assert.match(
      text,
      /orchestra_http_requests_total\{method="GET",route="\/v1\/whoami",status_code="200"\} 1/,
    );
    assert.match(
      text,
      /orchestra_http_requests_total\{method="GET",route="\/v1\/whoami",status_code="401"\} 1/,
    );
    assert.match(
      text,
      /orchestra_http_requests_total\{method="GET",route="\/v1\/api-keys\/:id",status_code="404"\} 1/,
    );
    assert.match(
      text,
      /orchestra_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/v1\/whoami"/,
    );
    assert.match(text, /process_resident_memory_bytes \d+/);
    // Background jobs report their runs: the retention sweep ran once at start.
    assert.match(text, /orchestra_job_runs_total\{job="event-retention",outcome="done"\} [1-9]/);
    assert.match(
      text,
      /orchestra_build_info\{version="[^"]+",instance_id="[^"]+",store="sqlite"\} 1/,
    );
    const check = await promtoolCheck(text);
    assert.equal(check.code, 0, check.output);
    assert.equal(check.output.trim(), '', `promtool found problems:\n${check.output}`);
  });

  test('/openapi.json is a valid OpenAPI 3.1 document covering every /v1 route', async () => {
    const res = await server.call('GET', '/openapi.json', { key: null });
    assert.equal(res.status, 200);
    const doc = res.body;
    assert.equal(doc.openapi, '3.1.0');
    const validator = new Validator();
    const result = await validator.validate(doc);
    assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
    assert.equal(validator.version, '3.1');
    const operations = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(
      ([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`),
    );
    for (const expected of [
      'GET /v1/whoami',
      'POST /v1/api-keys',
      'GET /v1/api-keys',
      'GET /v1/api-keys/{id}',
      'DELETE /v1/api-keys/{id}',
      'POST /v1/tenants',
      'GET /v1/tenants',
      'GET /v1/tenants/{id}',
      'POST /v1/templates',
      'GET /v1/templates',
      'GET /v1/templates/{template}',
      'PUT /v1/templates/{template}',
      'DELETE /v1/templates/{template}',
      'GET /v1/templates/{template}/versions',
      'GET /v1/templates/{template}/versions/{version}',
      'POST /v1/templates/{template}/rollback',
      'POST /v1/tasks',
      'GET /v1/tasks',
      'GET /v1/tasks/{id}',
      'POST /v1/tasks/{id}/cancel',
      'POST /v1/tasks/{id}/retry',
      'GET /v1/tasks/{id}/events',
      'GET /healthz',
      'GET /readyz',
      'GET /metrics',
    ]) {
      assert.ok(operations.includes(expected), `${expected} missing from the OpenAPI document`);
    }
    const createKey = doc.paths['/v1/api-keys'].post;
    assert.deepEqual(createKey.security, [{ bearerAuth: [] }, { apiKeyHeader: [] }]);
    assert.equal(doc.components.securitySchemes.apiKeyHeader.name, 'X-API-Key');
    assert.match(createKey.description, /Roles: admin/);
    assert.ok(doc.components.schemas.ErrorResponse, 'the error format is documented');
    // Public routes say so: no security, explicitly.
    assert.deepEqual(doc.paths['/healthz'].get.security, []);
    // Parameters with defaults are optional for clients generated from the document.
    const listKeys = doc.paths['/v1/api-keys'].get.parameters as {
      name: string;
      required?: boolean;
    }[];
    for (const name of ['limit', 'cursor', 'role', 'include_revoked']) {
      const parameter = listKeys.find((p) => p.name === name);
      assert.ok(parameter, `${name} is documented`);
      assert.notEqual(parameter.required, true, `${name} must not be required`);
    }
  });

  test('/docs serves the interactive API docs', async () => {
    const res = await fetch(`${server.url}/docs`, { redirect: 'follow' });
    assert.equal(res.status, 200);
    const html = await res.text();
    assert.match(html, /swagger-ui/i);
    const init = await fetch(`${server.url}/docs/static/swagger-initializer.js`);
    assert.equal(init.status, 200);
  });

  test('/ serves the console page, which names the docs for browsers without JavaScript', async () => {
    const res = await fetch(`${server.url}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    const html = await res.text();
    assert.match(html, /<title>Orchestra console<\/title>/);
    assert.match(html, /<noscript>[^<]*\/docs/);
    assert.match(html, /<script type="module" crossorigin src="\/assets\/[\w-]+\.js"><\/script>/);
  });

  test('the console page, its assets and the docs need no credential, but /v1 does', async () => {
    expectError(await server.call('GET', '/v1/tenants', { key: null }), 401, 'UNAUTHENTICATED');
    const html = await (await fetch(`${server.url}/`)).text();
    const asset = /src="(\/assets\/[^"]+)"/.exec(html)?.[1] ?? '';
    assert.equal((await fetch(server.url + asset)).status, 200);
    assert.equal((await fetch(`${server.url}/docs`)).status, 200);
    // The page is served through `/` (with its headers), not as a file.
    assert.equal((await fetch(`${server.url}/index.html`)).status, 404);
  });
});

describe('logs', () => {
  test('every access line is JSON with the request id; probes stay out of the info log', async () => {
    const lines: Record<string, any>[] = [];
    const server = await startTestServer({ logTo: lines });
    try {
      await server.call('GET', '/healthz', { key: null });
      await server.call('GET', '/metrics', { key: null });
      await server.call('GET', '/v1/whoami', { headers: { 'x-request-id': 'log-check-1' } });
      await server.call('GET', '/v1/whoami', {
        key: 'ork_wrong',
        headers: { 'x-request-id': 'log-check-2' },
      });
      const access = lines.filter((l) => l.msg === 'request completed');
      assert.deepEqual(
        access.map((l) => [l.request_id, l.route, l.status, l.level]),
        [
          ['log-check-1', '/v1/whoami', 200, 'info'],
          ['log-check-2', '/v1/whoami', 401, 'info'],
        ],
      );
      const ok = access[0];
      assert.equal(ok?.tenant_id, 'default');
      assert.equal(ok?.service, 'orchestra');
      assert.equal(typeof ok?.duration_ms, 'number');
      assert.ok(!JSON.stringify(lines).includes(server.adminKey), 'the key must never be logged');
      assert.ok(lines.every((l) => typeof l.time === 'string' && typeof l.level === 'string'));
    } finally {
      await server.stop();
    }
  });

  test('a realtime token sent as ?token= is written in full to the access log when its request fails (issue 18)', async () => {
    const lines: Record<string, any>[] = [];
    const server = await startTestServer({ logTo: lines });
    const secret = 'ort_thisIsNotARealTokenButLooksLikeOne1234';
    try {
      const refused = await server.call('GET', `/v1/topics/news/events?after=0&token=${secret}`, {
        key: null,
        headers: { 'x-request-id': 'log-token-1' },
      });
      assert.equal(refused.status, 401);
      const line = lines.find(
        (l) => l.request_id === 'log-token-1' && l.msg === 'request completed',
      );
      assert.ok(line, 'the refused request has an access line');
      assert.equal(line.url, '/v1/topics/news/events?after=0&token=[redacted]');
      assert.ok(!JSON.stringify(lines).includes('thisIsNotARealToken'), 'no log holds the token');
    } finally {
      await server.stop();
    }
  });

  test('an event stream closed by the client gets no access-log line (issue 18)', async () => {
    const lines: Record<string, any>[] = [];
    const server = await startTestServer({ logTo: lines });
    try {
      await server.call('POST', '/v1/templates', { body: { name: 'logged', capabilities: ['x'] } });
      const task = await server.call('POST', '/v1/tasks', { body: { template: 'logged' } });
      assert.equal(task.status, 201);
      const controller = new AbortController();
      const response = await fetch(`${server.url}/v1/tasks/${task.body.id}/events`, {
        headers: { authorization: `Bearer ${server.adminKey}`, 'x-request-id': 'log-stream-1' },
        signal: controller.signal,
      });
      assert.equal(response.status, 200);
      await response.body?.getReader().read(); // the stream is open and has sent something
      controller.abort();
      const deadline = Date.now() + 60_000;
      let line: Record<string, any> | undefined;
      while (line === undefined && Date.now() < deadline) {
        line = lines.find((l) => l.request_id === 'log-stream-1' && l.msg === 'request completed');
        if (line === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(line, 'the stream has its access line once the client closed it');
      assert.equal(line.route, '/v1/tasks/:id/events');
      assert.equal(line.status, 200);
      assert.equal(line.aborted, true);
      assert.equal(line.tenant_id, 'default');
    } finally {
      await server.stop();
    }
  });
});
