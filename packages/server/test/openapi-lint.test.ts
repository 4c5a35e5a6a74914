// Issue 19: an independent linter found 16 errors and 73 warnings in /openapi.json (no
// operationId anywhere, `/v1/config/{*}` with a parameter no client could fill, streams
// without their media types, routes without security), and a client generated from it sent
// `GET /v1/config/%7B*%7D`. These tests hold the document to a linter and to a generated client.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import createClient from 'openapi-fetch';
import openapiTS, { astToString } from 'openapi-typescript';
import { ApiError } from '../src/platform/errors.ts';
import { installHttpPlatform } from '../src/platform/http.ts';
import { Metrics } from '../src/platform/metrics.ts';
import { startTestServer, type TestServer, tempDir } from './helpers.ts';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** A package's file, found from the repository root (the linter, the TypeScript 7 compiler). */
function packageFile(name: string, file: (manifest: any) => string): string {
  const manifest = createRequire(join(REPO, 'package.json')).resolve(`${name}/package.json`);
  return join(dirname(manifest), file(JSON.parse(readFileSync(manifest, 'utf8'))));
}

function run(
  args: string[],
  options: { cwd: string; env?: Record<string, string> },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      args,
      { cwd: options.cwd, env: { ...process.env, ...options.env }, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/**
 * Warnings of the recommended rules that the document keeps, because it is right: the
 * WebSocket routes answer 101 (or an error), never a 2xx; the probes have no 4xx to give.
 */
const ACCEPTED_WARNINGS = [
  'operation-2xx-response #/paths/~1v1~1agents~1connect/get/responses',
  'operation-2xx-response #/paths/~1v1~1instances~1{instance}~1terminals~1{terminal}~1attach/get/responses',
  'operation-2xx-response #/paths/~1v1~1realtime/get/responses',
  'operation-4xx-response #/paths/~1healthz/get/responses',
  'operation-4xx-response #/paths/~1metrics/get/responses',
];

describe('the OpenAPI document', () => {
  let server: TestServer;
  let doc: any;
  const dir = tempDir('orchestra-openapi-');
  before(async () => {
    server = await startTestServer();
    const res = await fetch(`${server.url}/openapi.json`);
    assert.equal(res.status, 200);
    doc = await res.json();
  });
  after(async () => {
    await server.stop();
    dir.remove();
  });

  test('Redocly’s recommended rules find no error', async (t) => {
    const file = join(dir.path, 'openapi.json');
    writeFileSync(file, JSON.stringify(doc, null, 2));
    const redocly = packageFile('@redocly/cli', (m) => m.bin.redocly);
    // In the temporary directory: no redocly.yaml of anyone's can change the rules.
    const result = await run([redocly, 'lint', file, '--extends=recommended', '--format=json'], {
      cwd: dir.path,
      env: { REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_NOTIFICATIONS: 'true', NO_COLOR: '1' },
    });
    const report = JSON.parse(result.stdout) as {
      totals: { errors: number; warnings: number };
      problems: { ruleId: string; severity: string; message: string; location: any[] }[];
    };
    const problems = report.problems.map(
      (p) =>
        `${p.ruleId} ${p.location[0]?.pointer ?? ''}${p.severity === 'error' ? ' (error)' : ''}`,
    );
    t.diagnostic(`Redocly: ${report.totals.errors} errors, ${report.totals.warnings} warnings`);
    assert.equal(report.totals.errors, 0, problems.join('\n'));
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(
      problems.sort(),
      ACCEPTED_WARNINGS,
      'a new warning: fix it, or accept it here',
    );
  });

  test('every operation has a unique camelCase operationId and states its security', () => {
    const ids = new Set<string>();
    for (const [path, item] of Object.entries<Record<string, any>>(doc.paths)) {
      for (const [method, operation] of Object.entries<any>(item)) {
        const name = `${method.toUpperCase()} ${path}`;
        assert.match(operation.operationId ?? '', /^[a-z][A-Za-z0-9]*$/, name);
        assert.ok(!ids.has(operation.operationId), `${name}: ${operation.operationId} twice`);
        ids.add(operation.operationId);
        assert.ok(Array.isArray(operation.security), `${name} states its security`);
        if (path.startsWith('/v1/')) assert.ok(operation.security.length > 0, name);
        else assert.deepEqual(operation.security, [], `${name} is public`);
      }
    }
    for (const operation of ['streamTopicEvents', 'publishTopicMessage']) {
      const found = Object.values<any>(doc.paths)
        .flatMap((item) => Object.values<any>(item))
        .find((o) => o.operationId === operation);
      assert.ok(
        found.security.some((s: object) => 'realtimeToken' in s),
        `${operation} takes a realtime token`,
      );
    }
  });

  test('every streaming route documents its SSE and NDJSON 200', () => {
    const streaming = [
      '/v1/tasks/{id}/events',
      '/v1/sessions/{id}/events',
      '/v1/topics/{topic}/events',
      '/v1/config/watch',
      '/v1/services/{name}/watch',
    ];
    for (const path of streaming) {
      const operation = doc.paths[path].get;
      const content = operation.responses['200']?.content ?? {};
      assert.deepEqual(Object.keys(content).sort(), ['application/x-ndjson', 'text/event-stream']);
      assert.equal(content['application/x-ndjson'].schema.type, 'array', path);
      // Errors before the stream starts are JSON, whatever the stream's type.
      assert.deepEqual(Object.keys(operation.responses['4XX'].content), ['application/json']);
    }
  });

  test('a client generated by openapi-typescript and openapi-fetch calls a route of every tag', async () => {
    const urls: string[] = [];
    const client = createClient<any>({
      baseUrl: server.url,
      headers: { authorization: `Bearer ${server.adminKey}` },
      fetch: (request) => {
        urls.push(`${request.method} ${request.url.slice(server.url.length)}`);
        return fetch(request);
      },
    });
    const operations = new Map<string, { tags: string[]; responses: string[] }>();
    for (const [path, item] of Object.entries<Record<string, any>>(doc.paths)) {
      for (const [method, operation] of Object.entries<any>(item)) {
        const responses = Object.keys(operation.responses);
        operations.set(`${method.toUpperCase()} ${path}`, { tags: operation.tags, responses });
      }
    }
    const called = new Set<string>();
    /** Calls one operation through the client; its status must be one the document lists. */
    const call = async (
      method: 'GET' | 'POST' | 'PUT' | 'DELETE',
      path: string,
      init: Record<string, unknown> = {},
    ) => {
      const operation = operations.get(`${method} ${path}`);
      assert.ok(operation, `${method} ${path} is in the document`);
      called.add(`${method} ${path}`);
      const result = await client[method](path, init);
      const status = String(result.response.status);
      assert.ok(
        operation.responses.includes(status) || operation.responses.includes(`${status[0]}XX`),
        `${method} ${path} answered ${status}, which the document does not list`,
      );
      assert.ok(result.response.ok, `${method} ${path}: ${status} ${JSON.stringify(result.error)}`);
      return result as { data: any; response: Response };
    };

    assert.equal((await call('GET', '/healthz')).data.status, 'ok');
    assert.equal((await call('GET', '/v1/whoami')).data.role, 'admin');
    await call('POST', '/v1/api-keys', { body: { name: 'generated', role: 'viewer' } });
    await call('GET', '/v1/tenants/{id}', { params: { path: { id: 'default' } } });
    await call('POST', '/v1/templates', { body: { name: 'generated' } });
    const task = await call('POST', '/v1/tasks', { body: { template: 'generated', input: {} } });
    assert.equal(task.data.state, 'queued');
    const events = await call('GET', '/v1/tasks/{id}/events', {
      params: { path: { id: task.data.id } },
      headers: { accept: 'application/x-ndjson' },
      parseAs: 'stream',
    });
    assert.match(events.response.headers.get('content-type') ?? '', /^application\/x-ndjson/);
    const reader = (events.data as ReadableStream<Uint8Array>).getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    assert.equal(JSON.parse(first.split('\n')[0] ?? '').type, 'task.queued');
    await call('POST', '/v1/sessions', { body: { name: 'generated' } });
    await call('GET', '/v1/agents');
    await call('POST', '/v1/tools', {
      body: {
        name: 'generated__tool',
        annotations: { readOnlyHint: true },
        source: { type: 'http', method: 'GET', url: `${server.url}/healthz` },
      },
    });
    const invoked = await call('POST', '/v1/tools/{tool}/invoke', {
      params: { path: { tool: 'generated__tool' } },
      body: { arguments: {} },
    });
    assert.equal(invoked.data.call.status, 'succeeded');
    assert.equal(invoked.data.result.structured_content.status, 'ok');
    const catalog = await call('GET', '/v1/mcp/catalog');
    assert.ok(catalog.data.items.some((e: { id: string }) => e.id === 'filesystem'));
    await call('POST', '/v1/leases', { body: { ttl_seconds: 60 } });
    const token = await call('POST', '/v1/realtime/tokens', {
      body: { topics: ['generated.topic'], publish: true },
    });
    await call('POST', '/v1/topics/{topic}/messages', {
      params: { path: { topic: 'generated.topic' } },
      headers: { authorization: `Bearer ${token.data.token}` },
      body: { data: { hello: 1 } },
    });

    // A key with slashes: the client percent-encodes them, the server takes that form.
    const key = { params: { path: { key: 'generated/client/flag' } } };
    const put = await call('PUT', '/v1/config/{key}', { ...key, body: { value: { on: true } } });
    assert.equal(put.response.status, 201);
    await call('PUT', '/v1/config/{key}', { ...key, body: { value: { on: false } } });
    const got = await call('GET', '/v1/config/{key}', key);
    assert.deepEqual(
      [got.data.key, got.data.value, got.data.version],
      ['generated/client/flag', { on: false }, 2],
    );
    const history = await call('GET', '/v1/config/{key}/history', key);
    assert.deepEqual(
      history.data.items.map((h: any) => h.version),
      [2, 1],
    );
    const diff = await call('GET', '/v1/config/{key}/diff', {
      params: { ...key.params, query: { from: 1 } },
    });
    assert.deepEqual(diff.data.changes, [
      { op: 'replace', path: '/on', old_value: true, value: false },
    ]);
    const secret = { params: { path: { name: 'GENERATED_SECRET' } } };
    const created = await call('PUT', '/v1/secrets/{name}', { ...secret, body: { value: 's' } });
    assert.equal(created.response.status, 201);
    assert.equal(created.data.version, 1);
    assert.equal((await call('GET', '/v1/secrets/{name}', secret)).data.name, 'GENERATED_SECRET');
    await call('POST', '/v1/workspace-templates', { body: { name: 'generated-ws' } });
    const instance = await call('POST', '/v1/instances', {
      body: { template: 'generated-ws', labels: { from: 'generated' } },
    });
    assert.equal(instance.data.state, 'running');
    const found = await call('GET', '/v1/instances', {
      params: { query: { label: ['from=generated'] } },
    });
    assert.deepEqual(
      found.data.items.map((i: { id: string }) => i.id),
      [instance.data.id],
    );
    const provider = await call('POST', '/v1/model-providers', {
      body: {
        name: 'generated',
        kind: 'anthropic',
        base_url: 'http://127.0.0.1:9',
        models: [{ name: 'm', price: { input: 3, output: 15 } }],
      },
    });
    assert.equal(provider.response.status, 201);
    assert.equal(provider.data.models[0].price.output, 15);
    // A hosted agent whose provider does not answer: the completion is a 502 in the unified format.
    await call('POST', '/v1/templates', {
      body: {
        name: 'generated-llm',
        kind: 'llm',
        llm: { model: { provider: 'generated', model: 'm' } },
        default_max_attempts: 1,
      },
    });
    const completion = await client.POST('/v1/chat/completions', {
      body: { model: 'generated-llm', messages: [{ role: 'user', content: 'hi' }] },
    });
    called.add('POST /v1/chat/completions');
    assert.equal(completion.response.status, 502);
    assert.equal((completion.error as { error: { code: string } }).error.code, 'AGENT_RUN_FAILED');
    const usage = await call('GET', '/v1/usage', { params: { query: { group_by: 'template' } } });
    assert.deepEqual(usage.data.rows, []);
    await call('PUT', '/v1/config-schemas/{prefix}', {
      params: { path: { prefix: 'generated/' } },
      body: { schema: { type: 'object' } },
    });
    assert.ok(urls.includes('GET /v1/config/generated%2Fclient%2Fflag'), urls.join('\n'));
    assert.ok(urls.includes('GET /v1/config/generated%2Fclient%2Fflag/history'));
    // The same key with raw slashes, as the SDK, the CLI and the console send it.
    assert.equal((await server.call('GET', '/v1/config/generated/client/flag')).body.version, 2);

    const tags = new Set([...operations.values()].flatMap((o) => o.tags));
    const covered = new Set([...called].flatMap((c) => operations.get(c)?.tags ?? []));
    assert.deepEqual(
      [...tags].filter((tag) => !covered.has(tag)),
      [],
      'a tag without a call',
    );
  });

  test('the generated types check a typed client’s calls', async () => {
    const project = join(dir.path, 'typed');
    const source = astToString(await openapiTS(doc));
    mkdirSync(project);
    writeFileSync(join(project, 'orchestra.d.ts'), source);
    symlinkSync(join(REPO, 'node_modules'), join(project, 'node_modules'), 'dir');
    writeFileSync(
      join(project, 'client.ts'),
      `import Fastify from 'fastify';
import createClient from 'openapi-fetch';
import type { paths } from './orchestra.js';

const client = createClient<paths>({ baseUrl: 'http://127.0.0.1:1' });
export async function use(): Promise<void> {
  const item = await client.GET('/v1/config/{key}', { params: { path: { key: 'a/b' } } });
  const version: number | undefined = item.data?.version;
  // One response shape per status: a diff is a diff, not a union with an item.
  const diff = await client.GET('/v1/config/{key}/diff', {
    params: { path: { key: 'a/b' }, query: { from: 1 } },
  });
  const changes: number | undefined = diff.data?.changes.length;
  // @ts-expect-error: a diff needs \`from\`
  await client.GET('/v1/config/{key}/diff', { params: { path: { key: 'a/b' }, query: {} } });
  // @ts-expect-error: the old catch-all path is gone
  await client.GET('/v1/config/{*}', {});
  const task = await client.POST('/v1/tasks', { body: { template: 't', input: {} } });
  const state: string | undefined = task.data?.state;
  console.log(version, changes, state);
}
`,
    );
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          module: 'nodenext',
          target: 'es2022',
          lib: ['es2022', 'dom'],
          types: [],
        },
        files: ['client.ts'],
      }),
    );
    const tsc = packageFile('typescript', (m) => m.bin.tsc);
    const result = await run([tsc, '-p', project], { cwd: project });
    assert.equal(result.code, 0, result.stdout + result.stderr);
  });
});

/** A Fastify instance with only the request pipeline, to register routes on. */
function platformOnly() {
  const app = Fastify();
  installHttpPlatform(app, {
    service: 'orchestra',
    instanceId: 'test',
    metrics: new Metrics({ version: 'test', instanceId: 'test', store: 'sqlite' }),
    rateLimiter: undefined,
    bytesPerToken: 0,
    authenticate: async () => {
      throw new ApiError('UNAUTHENTICATED');
    },
    isClosing: () => false,
  });
  return app;
}

test('a route the document would list without an operationId is refused at registration', async () => {
  const app = platformOnly();
  const config = { auth: ['admin' as const] };
  assert.throws(
    () => app.get('/v1/things', { schema: { summary: 'List things' }, config }, async () => []),
    /GET \/v1\/things must declare schema.operationId/,
  );
  assert.throws(
    () => app.get('/v1/snake', { schema: { operationId: 'list_snake' }, config }, async () => []),
    /camelCase/,
  );
  app.get('/v1/things', { schema: { operationId: 'listThings' }, config }, async () => []);
  assert.throws(
    () => app.post('/v1/things', { schema: { operationId: 'listThings' }, config }, async () => []),
    /reuses the operationId listThings of GET \/v1\/things/,
  );
  // Hidden routes are not in the document and need none.
  app.get('/v1/hidden/*', { schema: { hide: true }, config }, async () => []);
  await app.close();
});

test('a /v1 route cannot be public: one that authenticated by itself would escape the pipeline', async () => {
  const app = platformOnly();
  const schema = { operationId: 'selfAuthenticated' };
  assert.throws(
    () => app.get('/v1/self', { schema, config: { auth: 'public' } }, async () => ({})),
    /must declare config.auth roles/,
  );
  await app.close();
});
