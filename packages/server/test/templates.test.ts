import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

const INPUT_SCHEMA = {
  type: 'object',
  required: ['path'],
  properties: { path: { type: 'string', minLength: 1 } },
  additionalProperties: false,
};

/** Agent templates as a client sees them, on every store. */
for (const store of STORE_VARIANTS) {
  describe(`templates API on ${store}`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ store });
    });
    after(() => server.stop());

    const create = (body: Record<string, unknown>, key?: string) =>
      server.call('POST', '/v1/templates', { body, ...(key ? { key } : {}) });

    async function createKey(role: string) {
      const res = await server.call('POST', '/v1/api-keys', { body: { name: role, role } });
      assert.equal(res.status, 201);
      return res.body.secret as string;
    }

    test('creates version 1 with defaults filled in, readable by id and by name', async () => {
      const res = await create({
        name: 'code-stats',
        description: 'Counts lines per file',
        labels: { team: 'ml', tier: 'gold' },
        capabilities: ['fs.read', 'lang:ts'],
        input_schema: INPUT_SCHEMA,
      });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.headers.get('etag'), '"1"');
      const t = res.body;
      assert.match(t.id, /^tpl_/);
      assert.deepEqual(
        [t.version, t.latest_version, t.highest_version, t.tenant_id],
        [1, 1, 1, 'default'],
      );
      assert.deepEqual(
        [t.default_timeout_ms, t.default_max_attempts, t.default_priority, t.strategy],
        [300_000, 3, 0, 'least_connections'],
      );
      assert.deepEqual(t.config, {});
      assert.equal(t.output_schema, null);
      assert.deepEqual(t.input_schema, INPUT_SCHEMA);
      const byName = await server.call('GET', '/v1/templates/code-stats');
      const byId = await server.call('GET', `/v1/templates/${t.id}`);
      assert.deepEqual(byName.body, t);
      assert.deepEqual(byId.body, t);
      assert.equal(byName.headers.get('etag'), '"1"');
    });

    test('every update is a new immutable version; old versions stay readable', async () => {
      await create({ name: 'versioned', description: 'one', labels: { stage: 'a' } });
      const two = await server.call('PUT', '/v1/templates/versioned', {
        body: { description: 'two', default_priority: 5 },
      });
      assert.equal(two.status, 200);
      assert.deepEqual(
        [two.body.version, two.body.latest_version, two.body.highest_version],
        [2, 2, 2],
      );
      assert.equal(two.headers.get('etag'), '"2"');
      // An update replaces the whole definition: unset fields go back to their defaults.
      assert.deepEqual(two.body.labels, {});
      assert.equal(two.body.default_priority, 5);
      const one = await server.call('GET', '/v1/templates/versioned/versions/1');
      assert.equal(one.body.description, 'one');
      assert.deepEqual(one.body.labels, { stage: 'a' });
      assert.deepEqual([one.body.version, one.body.latest_version], [1, 2]);
      expectError(
        await server.call('GET', '/v1/templates/versioned/versions/9'),
        404,
        'TEMPLATE_VERSION_NOT_FOUND',
      );
      const versions = await server.call('GET', '/v1/templates/versioned/versions');
      assert.deepEqual(
        versions.body.items.map((v: { version: number; latest: boolean }) => [v.version, v.latest]),
        [
          [2, true],
          [1, false],
        ],
      );
    });

    test('rollback moves latest back without creating a version; the next update numbers on', async () => {
      await create({ name: 'rollme', description: 'v1', labels: { color: 'blue' } });
      await server.call('PUT', '/v1/templates/rollme', {
        body: { description: 'v2', labels: { color: 'red' } },
      });
      const rolled = await server.call('POST', '/v1/templates/rollme/rollback', {
        body: { version: 1 },
      });
      assert.equal(rolled.status, 200);
      assert.deepEqual(
        [
          rolled.body.version,
          rolled.body.latest_version,
          rolled.body.highest_version,
          rolled.body.description,
        ],
        [1, 1, 2, 'v1'],
      );
      assert.equal((await server.call('GET', '/v1/templates/rollme')).body.description, 'v1');
      // Label filters follow what latest points to.
      const blue = await server.call('GET', '/v1/templates?label=color=blue');
      assert.deepEqual(
        blue.body.items.map((t: { name: string }) => t.name),
        ['rollme'],
      );
      assert.equal(
        (await server.call('GET', '/v1/templates?label=color=red')).body.items.length,
        0,
      );
      const three = await server.call('PUT', '/v1/templates/rollme', {
        body: { description: 'v3' },
      });
      assert.deepEqual([three.body.version, three.body.highest_version], [3, 3]);
      expectError(
        await server.call('POST', '/v1/templates/rollme/rollback', { body: { version: 7 } }),
        404,
        'TEMPLATE_VERSION_NOT_FOUND',
      );
    });

    test('If-Match refuses an update based on a stale version (412), and must be well-formed', async () => {
      await create({ name: 'guarded' });
      const first = await server.call('PUT', '/v1/templates/guarded', {
        headers: { 'if-match': '"1"' },
        body: { description: 'mine' },
      });
      assert.equal(first.status, 200);
      const stale = await server.call('PUT', '/v1/templates/guarded', {
        headers: { 'if-match': '"1"' },
        body: { description: 'theirs' },
      });
      expectError(stale, 412, 'PRECONDITION_FAILED');
      assert.equal((await server.call('GET', '/v1/templates/guarded')).body.description, 'mine');
      expectError(
        await server.call('PUT', '/v1/templates/guarded', {
          headers: { 'if-match': 'two' },
          body: {},
        }),
        400,
        'BAD_REQUEST',
      );
    });

    test('concurrent updates get distinct versions; none is lost', async () => {
      await create({ name: 'busy' });
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          server.call('PUT', '/v1/templates/busy', { body: { description: `writer ${i}` } }),
        ),
      );
      assert.ok(results.every((r) => r.status === 200));
      const numbers = results.map((r) => r.body.version).sort((a: number, b: number) => a - b);
      assert.deepEqual(numbers, [2, 3, 4, 5, 6, 7, 8, 9]);
      const versions = await server.call('GET', '/v1/templates/busy/versions?limit=200');
      assert.equal(versions.body.items.length, 9);
    });

    test('lists page by page with name-prefix and label filters', async () => {
      for (const name of ['list-a', 'list-b', 'list-c', 'other-d']) {
        await create({
          name,
          labels: { suite: 'list', group: name.startsWith('list') ? 'x' : 'y' },
        });
      }
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
        const res = await server.call('GET', `/v1/templates?label=suite=list&limit=2${query}`);
        assert.equal(res.status, 200);
        seen.push(...res.body.items.map((t: { name: string }) => t.name));
        cursor = res.body.next_cursor;
        pages += 1;
      } while (cursor !== null && pages < 10);
      assert.deepEqual(seen, ['list-a', 'list-b', 'list-c', 'other-d']);
      assert.equal(pages, 2);
      const prefixed = await server.call('GET', '/v1/templates?name_prefix=list-&label=suite=list');
      assert.deepEqual(
        prefixed.body.items.map((t: { name: string }) => t.name),
        ['list-a', 'list-b', 'list-c'],
      );
      const both = await server.call('GET', '/v1/templates?label=suite=list&label=group=y');
      assert.deepEqual(
        both.body.items.map((t: { name: string }) => t.name),
        ['other-d'],
      );
      expectError(await server.call('GET', '/v1/templates?label=nokey'), 400, 'VALIDATION_FAILED');
    });

    test('delete removes the template and its versions; the name can be used again', async () => {
      const created = await create({ name: 'short-lived' });
      await server.call('PUT', '/v1/templates/short-lived', { body: {} });
      const deleted = await server.call('DELETE', `/v1/templates/${created.body.id}`);
      assert.equal(deleted.status, 204);
      expectError(await server.call('GET', '/v1/templates/short-lived'), 404, 'TEMPLATE_NOT_FOUND');
      expectError(
        await server.call('DELETE', '/v1/templates/short-lived'),
        404,
        'TEMPLATE_NOT_FOUND',
      );
      const versions = await server.store.db
        .selectFrom('template_versions')
        .select('version')
        .where('template_id', '=', created.body.id)
        .execute();
      assert.deepEqual(versions, []);
      const again = await create({ name: 'short-lived' });
      assert.equal(again.status, 201);
      assert.notEqual(again.body.id, created.body.id);
    });

    test('names are unique per tenant and well-formed', async () => {
      await create({ name: 'unique-one' });
      expectError(await create({ name: 'unique-one' }), 409, 'TEMPLATE_ALREADY_EXISTS');
      for (const name of ['Upper', 'has space', 'tpl_looks-like-an-id', '-leading', '']) {
        const res = await create({ name });
        assert.equal(
          expectError(res, 400, 'VALIDATION_FAILED').details.fields[0].field,
          'body.name',
          name,
        );
      }
    });

    test('invalid definitions are refused with a 400 naming the field', async () => {
      const cases: [Record<string, unknown>, string, RegExp][] = [
        [{ input_schema: { type: 'bogus' } }, 'body.input_schema', /not a valid JSON Schema/],
        [{ output_schema: { properties: 3 } }, 'body.output_schema', /not a valid JSON Schema/],
        [
          { input_schema: { $ref: 'https://schemas.invalid/x.json' } },
          'body.input_schema',
          /cannot be compiled/,
        ],
        [{ input_schema: { type: 'array', uniqueItems: true } }, 'body.input_schema', /not safe/],
        [
          { config_schema: { type: 'object', required: ['model'] }, config: { temperature: 1 } },
          'body.config',
          /does not match config_schema: .*model/,
        ],
        [{ capabilities: ['Bad Cap'] }, 'body.capabilities.0', /pattern/],
        [{ capabilities: ['a', 'a'] }, 'body.capabilities', /duplicate/],
        [{ default_timeout_ms: 10 }, 'body.default_timeout_ms', />= 1000/],
        [{ strategy: 'random' }, 'body.strategy', /least_connections/],
        [{ labels: { 'Bad Key': 'x' } }, 'body.labels.Bad Key', /not allowed/],
        [{ surprise: true }, 'body.surprise', /not allowed/],
      ];
      for (const [definition, field, message] of cases) {
        const res = await create({ name: 'invalid', ...definition });
        const error = expectError(res, 400, 'VALIDATION_FAILED');
        assert.equal(error.details.fields[0].field, field, JSON.stringify(definition));
        assert.match(error.details.fields[0].message, message, JSON.stringify(definition));
      }
      expectError(await server.call('GET', '/v1/templates/invalid'), 404, 'TEMPLATE_NOT_FOUND');
      // Updates are checked the same way and leave the template as it was.
      await create({ name: 'stays-valid', description: 'ok' });
      const bad = await server.call('PUT', '/v1/templates/stays-valid', {
        body: { input_schema: { type: 'bogus' } },
      });
      expectError(bad, 400, 'VALIDATION_FAILED');
      const still = await server.call('GET', '/v1/templates/stays-valid');
      assert.deepEqual([still.body.version, still.body.description], [1, 'ok']);
    });

    test('patterns RE2 cannot run (lookaround, backreferences) are refused at write time, naming the field', async () => {
      const text = (pattern: string) => ({ type: 'string', maxLength: 50, pattern });
      const cases: [Record<string, unknown>, string, RegExp][] = [
        [
          { input_schema: { type: 'object', properties: { name: text('^(?!admin)') } } },
          'body.input_schema.properties.name.pattern',
          /lookahead/,
        ],
        [{ output_schema: text('(?<=a)b') }, 'body.output_schema.pattern', /lookbehind/],
        [
          {
            config_schema: {
              type: 'object',
              patternProperties: { '^(x)\\1$': {} },
              propertyNames: { maxLength: 20 },
            },
          },
          'body.config_schema.patternProperties.^(x)\\1$',
          /backreference/,
        ],
        [
          { input_schema: { type: 'array', maxItems: 2, items: [text('(?<w>a)\\k<w>')] } },
          'body.input_schema.items.0.pattern',
          /backreference/,
        ],
      ];
      for (const [definition, field, message] of cases) {
        const res = await create({ name: 'no-lookaround', ...definition });
        const error = expectError(res, 400, 'VALIDATION_FAILED');
        assert.equal(error.details.fields[0].field, field, JSON.stringify(definition));
        assert.match(error.details.fields[0].message, message, JSON.stringify(definition));
      }
      await create({ name: 'no-lookaround' });
      const update = await server.call('PUT', '/v1/templates/no-lookaround', {
        body: { input_schema: text('(?=x)') },
      });
      assert.equal(
        expectError(update, 400, 'VALIDATION_FAILED').details.fields[0].field,
        'body.input_schema.pattern',
      );
      // A `pattern` that is data, not a keyword, is not a pattern.
      const data = await create({
        name: 'pattern-as-data',
        input_schema: { const: { pattern: '(?=x)' }, default: { pattern: '\\1' } },
      });
      assert.equal(data.status, 201, JSON.stringify(data.body));
    });

    // Found by the OpenAPI fuzzer: Ajv throws for a `$schema` it does not know.
    test('a schema with an unknown or non-string $schema gets 400 naming it, not 500', async () => {
      for (const $schema of ['http://example.com/unknown-draft', 42]) {
        const res = await create({ name: 'unknown-draft', input_schema: { $schema } });
        const error = expectError(res, 400, 'VALIDATION_FAILED');
        assert.equal(error.details.fields[0].field, 'body.input_schema.$schema');
      }
    });

    // Found by the OpenAPI fuzzer: validating against a self-referring schema overflowed the stack.
    test('a schema that refers to itself without end gets 400, not 500, at write and at use', async () => {
      const endless: Record<string, unknown>[] = [
        { $ref: '#' },
        { $schema: 'https://json-schema.org/draft/2020-12/schema', $dynamicRef: '#meta' },
      ];
      for (const schema of endless) {
        for (const field of ['input_schema', 'config_schema']) {
          const error = expectError(
            await create({ name: 'endless', [field]: schema }),
            400,
            'VALIDATION_FAILED',
          );
          assert.equal(error.details.fields[0].field, `body.${field}`);
          assert.match(error.message, /refers to itself/);
        }
      }
      // Endless only for some data: accepted, and such data is refused when it comes.
      const created = await create({
        name: 'endless-for-some',
        input_schema: { anyOf: [{ not: { type: 'object', required: ['a'] } }, { $ref: '#' }] },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const task = await server.call('POST', '/v1/tasks', {
        body: { template: 'endless-for-some', input: { a: 1 } },
      });
      assert.match(expectError(task, 400, 'VALIDATION_FAILED').message, /refers to itself/);
    });

    test('ordinary patterns keep their ECMAScript meaning (anchors, classes, \\d, \\s, ., unicode)', async () => {
      const text = (pattern: string) => ({ type: 'string', maxLength: 50, pattern });
      const config_schema = {
        type: 'object',
        properties: {
          id: text('^[a-z][a-z0-9._-]*$'),
          phone: text('^\\d{3}-\\d{4}$'),
          word: text('^\\p{L}+$'),
          pair: text('^\\S+\\s\\S+$'),
          accent: text('caf\\u00e9'),
          line: text('^.+$'),
          emoji: text('^\\u{1F600}{2}$'),
        },
        patternProperties: { '^x-[a-z]+$': { type: 'integer' } },
        propertyNames: { maxLength: 20 },
      };
      const good = {
        id: 'web-1.a_b',
        phone: '123-4567',
        word: 'Ωμέγα',
        pair: 'a\u00a0b',
        accent: 'un café',
        line: 'tab\there',
        emoji: '😀😀',
        'x-retries': 3,
      };
      const accepted = await create({ name: 'ordinary-patterns', config_schema, config: good });
      assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
      const bad: Record<string, unknown>[] = [
        { id: 'Web' },
        { id: 'web!' },
        { phone: '123-45678' },
        { phone: '١٢٣-٤٥٦٧' },
        { word: 'abc1' },
        { pair: 'ab' },
        { accent: 'cafe' },
        // ECMAScript's `.` stops at \r and \u2028, not only at \n.
        { line: 'a\rb' },
        { line: 'a\u2028b' },
        { emoji: '😀' },
        { 'x-retries': 'three' },
      ];
      for (const config of bad) {
        const res = await create({ name: 'ordinary-bad', config_schema, config });
        const error = expectError(res, 400, 'VALIDATION_FAILED');
        assert.equal(error.details.fields[0].field, 'body.config', JSON.stringify(config));
      }
    });

    test('accepts draft-07 and 2020-12 schemas, and config that matches its schema', async () => {
      const res = await create({
        name: 'modern',
        input_schema: {
          $schema: 'https://json-schema.org/draft/2020-12/schema',
          type: 'object',
          properties: { items: { type: 'array', prefixItems: [{ type: 'string' }] } },
        },
        output_schema: { type: 'object', definitions: { n: { type: 'number' } } },
        config_schema: {
          type: 'object',
          properties: { model: { type: 'string' }, temperature: { type: 'number', maximum: 2 } },
          required: ['model'],
        },
        config: { model: 'small', temperature: 0.2 },
      });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.deepEqual(res.body.config, { model: 'small', temperature: 0.2 });
    });

    test('out-of-range versions, foreign cursors and unprintable labels are 400s, not 500s', async () => {
      await create({ name: 'edges-a' });
      await create({ name: 'edges-b' });
      await server.call('PUT', '/v1/templates/edges-a', { body: {} });
      expectError(
        await server.call('GET', '/v1/templates/edges-a/versions/99999999999'),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('POST', '/v1/templates/edges-a/rollback', {
          body: { version: 99999999999 },
        }),
        400,
        'VALIDATION_FAILED',
      );
      const listCursor = (await server.call('GET', '/v1/templates?limit=1')).body.next_cursor;
      assert.ok(listCursor);
      expectError(
        await server.call(
          'GET',
          `/v1/templates/edges-a/versions?cursor=${encodeURIComponent(listCursor)}`,
        ),
        400,
        'INVALID_CURSOR',
      );
      const versionCursor = (await server.call('GET', '/v1/templates/edges-a/versions?limit=1'))
        .body.next_cursor;
      assert.ok(versionCursor);
      expectError(
        await server.call('GET', `/v1/templates?cursor=${encodeURIComponent(versionCursor)}`),
        400,
        'INVALID_CURSOR',
      );
      const multiline = expectError(
        await create({ name: 'edges-c', labels: { k: 'a\nb' } }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(multiline.details.fields[0].field, 'body.labels.k');
    });

    test('roles: viewers read, operators and admins write, agents do neither', async () => {
      await create({ name: 'role-check' });
      const viewer = await createKey('viewer');
      const operator = await createKey('operator');
      const agent = await createKey('agent');
      assert.equal(
        (await server.call('GET', '/v1/templates/role-check', { key: viewer })).status,
        200,
      );
      assert.equal((await server.call('GET', '/v1/templates', { key: viewer })).status, 200);
      expectError(await create({ name: 'by-viewer' }, viewer), 403, 'PERMISSION_DENIED');
      expectError(
        await server.call('DELETE', '/v1/templates/role-check', { key: viewer }),
        403,
        'PERMISSION_DENIED',
      );
      assert.equal((await create({ name: 'by-operator' }, operator)).status, 201);
      expectError(
        await server.call('GET', '/v1/templates', { key: agent }),
        403,
        'PERMISSION_DENIED',
      );
      const created = await server.call('GET', '/v1/templates/by-operator');
      assert.match(created.body.version_created_by, /^key_/);
    });

    test('tenant isolation: another tenant never sees or touches these templates', async () => {
      const original = await create({ name: 'isolated', description: 'tenant default' });
      const other = await server.call('POST', '/v1/tenants', { body: { id: `tpl-iso-${store}` } });
      const b = other.body.admin_key.secret as string;
      expectError(
        await server.call('GET', '/v1/templates/isolated', { key: b }),
        404,
        'TEMPLATE_NOT_FOUND',
      );
      expectError(
        await server.call('GET', `/v1/templates/${original.body.id}`, { key: b }),
        404,
        'TEMPLATE_NOT_FOUND',
      );
      expectError(
        await server.call('PUT', `/v1/templates/${original.body.id}`, { key: b, body: {} }),
        404,
        'TEMPLATE_NOT_FOUND',
      );
      expectError(
        await server.call('DELETE', '/v1/templates/isolated', { key: b }),
        404,
        'TEMPLATE_NOT_FOUND',
      );
      expectError(
        await server.call('POST', '/v1/templates/isolated/rollback', {
          key: b,
          body: { version: 1 },
        }),
        404,
        'TEMPLATE_NOT_FOUND',
      );
      assert.deepEqual(
        (await server.call('GET', '/v1/templates?limit=200', { key: b })).body.items,
        [],
      );
      // The same name is free in another tenant.
      const theirs = await create({ name: 'isolated', description: 'tenant b' }, b);
      assert.equal(theirs.status, 201);
      assert.equal(
        (await server.call('GET', '/v1/templates/isolated')).body.description,
        'tenant default',
      );
    });
  });
}
