import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Orchestra, OrchestraError } from '@orchestra/sdk';
import { sql } from 'kysely';
import pino from 'pino';
import {
  keyIdOf,
  loadKeyring,
  parseSecretKey,
  SecretBox,
  SecretKeyMismatchError,
} from '../src/platform/secret-box.ts';
import { SettingsError } from '../src/platform/settings.ts';
import { redact, SecretService, secretReferences } from '../src/secrets/index.ts';
import { createLogger, type RunningServer, startServer } from '../src/server.ts';
import {
  expectError,
  STORE_VARIANTS,
  startTestServer,
  TEST_SECRET_KEY,
  type TestServer,
  tempDir,
  testSettings,
} from './helpers.ts';

const silent = pino({ level: 'silent' });
const KEY_A = Buffer.alloc(32, 0xa1).toString('base64');
const KEY_B = Buffer.alloc(32, 0xb2).toString('hex');
const KEY_C = Buffer.alloc(32, 0xc3).toString('base64');
const keyOf = (text: string) => parseSecretKey(text) as Buffer;

/** A service over a server's store with `keys` (current first): what other modules reach. */
function serviceOn(store: RunningServer['store'], ...keys: string[]): SecretService {
  const [current, ...previous] = keys.map(keyOf);
  return new SecretService({
    store,
    box: new SecretBox(current as Buffer, previous),
    log: silent,
  });
}

/** Starts a server on `dataDir` (SQLite) with extra settings; collects its log lines. */
async function startOn(dataDir: string, env: Record<string, string>, logTo?: unknown[]) {
  const settings = testSettings(dataDir, { ORCHESTRA_LOG_LEVEL: 'info', ...env });
  let adminKey: string | undefined;
  const server = await startServer(settings, {
    log: logTo
      ? createLogger(settings, { write: (line: string) => logTo.push(JSON.parse(line)) })
      : silent,
    onAdminKey: (key) => {
      adminKey = key.secret;
    },
  });
  return { server, adminKey };
}

/** Polls `check` every 50 ms, at most `limit` times. */
async function until(what: string, check: () => boolean | Promise<boolean>, limit = 1200) {
  for (let i = 0; i < limit; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('secret references and redaction (pure)', () => {
  test('secretReferences lists each name once, in order; malformed references are not names', () => {
    assert.deepEqual(
      secretReferences(`Bearer \${secret:API_TOKEN} \${secret:_x1} \${secret:API_TOKEN}`),
      ['API_TOKEN', '_x1'],
    );
    assert.deepEqual(
      secretReferences(`\${secret:1BAD} \${secret:} $secret:A \${SECRET:A} \${env:B}`),
      [],
    );
  });

  test('redact hides every occurrence, longer values first, and ignores empty ones', () => {
    assert.equal(
      redact('a=abc123 b=abc123xyz c=abc123', ['abc123', 'abc123xyz', '']),
      'a=[redacted] b=[redacted] c=[redacted]',
    );
    assert.equal(redact('nothing here', []), 'nothing here');
  });
});

describe('the keyring (SecretBox)', () => {
  test('values carry the key id; previous keys still open; reseal moves them to the current key', () => {
    const a = new SecretBox(keyOf(KEY_A));
    const sealed = a.seal('hunter2', 'ctx');
    assert.match(sealed, new RegExp(`^sealed:v2:${keyIdOf(keyOf(KEY_A))}:`));
    assert.equal(SecretBox.keyIdOf(sealed), a.keyId);
    const b = new SecretBox(keyOf(KEY_B), [keyOf(KEY_A)]);
    assert.equal(b.open(sealed, 'ctx'), 'hunter2');
    assert.equal(b.isCurrent(sealed), false);
    const moved = b.reseal(sealed, 'ctx');
    assert.equal(b.isCurrent(moved), true);
    assert.equal(new SecretBox(keyOf(KEY_B)).open(moved, 'ctx'), 'hunter2');
    assert.throws(() => new SecretBox(keyOf(KEY_B)).open(sealed, 'ctx'), SecretKeyMismatchError);
    assert.throws(() => b.open(sealed, 'another row'), SecretKeyMismatchError);
  });

  test('the first format (sealed:v1:, no key id) still opens, with the current or a previous key', () => {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', keyOf(KEY_A), iv);
    cipher.setAAD(Buffer.from('ctx'));
    const body = Buffer.concat([cipher.update('old value', 'utf8'), cipher.final()]);
    const v1 = `sealed:v1:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
    assert.ok(SecretBox.isSealed(v1));
    assert.equal(new SecretBox(keyOf(KEY_A)).open(v1, 'ctx'), 'old value');
    const ring = new SecretBox(keyOf(KEY_B), [keyOf(KEY_A)]);
    assert.equal(ring.open(v1, 'ctx'), 'old value');
    assert.equal(ring.isCurrent(v1), false);
    assert.throws(() => new SecretBox(keyOf(KEY_C)).open(v1, 'ctx'), SecretKeyMismatchError);
  });

  test('ORCHESTRA_SECRETS_KEY and its deprecated name: the same key is fine, different keys refuse to start', () => {
    const dir = tempDir();
    try {
      const warned: unknown[] = [];
      const log = pino({ level: 'info' }, { write: (l: string) => warned.push(JSON.parse(l)) });
      const ring = loadKeyring({ secretKey: KEY_A, dataDir: dir.path }, log);
      assert.equal(ring.keyId, keyIdOf(keyOf(KEY_A)));
      assert.match(JSON.stringify(warned), /ORCHESTRA_SECRET_KEY is deprecated/);
      assert.equal(
        loadKeyring({ secretsKey: KEY_A, secretKey: KEY_A, dataDir: dir.path }, silent).keyId,
        keyIdOf(keyOf(KEY_A)),
      );
      assert.throws(
        () => loadKeyring({ secretsKey: KEY_A, secretKey: KEY_B, dataDir: dir.path }, silent),
        (err: Error) =>
          err instanceof SettingsError &&
          /ORCHESTRA_SECRETS_KEY and ORCHESTRA_SECRET_KEY/.test(err.message) &&
          !err.message.includes(KEY_A) &&
          !err.message.includes(KEY_B),
      );
      const bad = 'not-a-key-but-a-secret-looking-thing';
      assert.throws(
        () =>
          loadKeyring(
            { secretsKey: KEY_B, secretsPreviousKeys: `${KEY_A},${bad}`, dataDir: dir.path },
            silent,
          ),
        (err: Error) =>
          /ORCHESTRA_SECRETS_PREVIOUS_KEYS \(key 2\)/.test(err.message) &&
          !err.message.includes(bad),
      );
      assert.equal(existsSync(join(dir.path, 'node-key')), false, 'no key file when a key is set');
    } finally {
      dir.remove();
    }
  });

  test('a node with both names set to different keys refuses to start, naming both', async () => {
    const dir = tempDir();
    try {
      await assert.rejects(
        startOn(dir.path, { ORCHESTRA_SECRETS_KEY: KEY_A, ORCHESTRA_SECRET_KEY: KEY_B }),
        /ORCHESTRA_SECRETS_KEY and ORCHESTRA_SECRET_KEY \(its deprecated name\) are both set/,
      );
    } finally {
      dir.remove();
    }
  });
});

for (const store of STORE_VARIANTS) {
  describe(`secrets API on ${store}`, () => {
    let server: TestServer;
    let sdk: Orchestra;
    before(async () => {
      server = await startTestServer({ store });
      sdk = new Orchestra({ url: server.url, apiKey: server.adminKey });
    });
    after(() => server.stop());

    const put = (name: string, body: unknown, key?: string) =>
      server.call('PUT', `/v1/secrets/${name}`, { body, ...(key ? { key } : {}) });

    async function createKey(role: string, key?: string) {
      const res = await server.call('POST', '/v1/api-keys', {
        body: { name: role, role },
        ...(key ? { key } : {}),
      });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.secret as string;
    }

    test('PUT creates version 1 (201), replaces as version n + 1 (200); no response holds the value', async () => {
      const created = await put('GITHUB_TOKEN', { value: 'ghp_first', description: 'CI token' });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.deepEqual(Object.keys(created.body).sort(), [
        'created_at',
        'description',
        'name',
        'updated_at',
        'version',
      ]);
      assert.equal(created.body.name, 'GITHUB_TOKEN');
      assert.equal(created.body.version, 1);
      assert.equal(created.body.description, 'CI token');

      const replaced = await put('GITHUB_TOKEN', { value: 'ghp_second' });
      assert.equal(replaced.status, 200);
      assert.equal(replaced.body.version, 2);
      assert.equal(replaced.body.created_at, created.body.created_at);
      assert.equal(replaced.body.description, 'CI token', 'a PUT without description keeps it');

      const got = await server.call('GET', '/v1/secrets/GITHUB_TOKEN');
      assert.equal(got.status, 200);
      assert.deepEqual(got.body, replaced.body);
      assert.ok(!JSON.stringify(got.body).includes('ghp_'));

      // Only the current value is kept, and it is what other modules resolve.
      const service = serviceOn(server.store, TEST_SECRET_KEY);
      assert.equal(await service.resolve('default', 'GITHUB_TOKEN'), 'ghp_second');
    });

    test('list: names and versions only, filtered by name prefix (case-sensitive), paginated', async () => {
      for (const name of ['LIST_A', 'LIST_B', 'LIST_C', 'list_lower', 'OTHER']) {
        assert.equal((await put(name, { value: `v-${name}` })).status, 201);
      }
      const page = await server.call('GET', '/v1/secrets?name_prefix=LIST_&limit=2');
      assert.equal(page.status, 200);
      assert.deepEqual(
        page.body.items.map((s: { name: string }) => s.name),
        ['LIST_A', 'LIST_B'],
      );
      assert.ok(page.body.next_cursor);
      const next = await server.call(
        'GET',
        `/v1/secrets?name_prefix=LIST_&limit=2&cursor=${page.body.next_cursor}`,
      );
      assert.deepEqual(
        next.body.items.map((s: { name: string }) => s.name),
        ['LIST_C'],
      );
      assert.equal(next.body.next_cursor, null);
      assert.ok(!JSON.stringify([page.body, next.body]).includes('v-LIST'));
      expectError(await server.call('GET', '/v1/secrets?cursor=nonsense'), 400, 'INVALID_CURSOR');
    });

    test('DELETE answers 204, then the secret is gone (404 SECRET_NOT_FOUND naming it)', async () => {
      await put('TO_DELETE', { value: 'bye' });
      const deleted = await server.call('DELETE', '/v1/secrets/TO_DELETE');
      assert.equal(deleted.status, 204);
      const error = expectError(
        await server.call('GET', '/v1/secrets/TO_DELETE'),
        404,
        'SECRET_NOT_FOUND',
      );
      assert.match(error.message, /TO_DELETE/);
      expectError(await server.call('DELETE', '/v1/secrets/TO_DELETE'), 404, 'SECRET_NOT_FOUND');
      // Created again: version 1.
      assert.equal((await put('TO_DELETE', { value: 'again' })).body.version, 1);
    });

    test('bad input on every route gets a 4xx in the unified format', async () => {
      for (const name of ['1STARTS_WITH_DIGIT', 'has-dash', 'has.dot', 'a'.repeat(129), 'ÄNDERN']) {
        expectError(await put(encodeURIComponent(name), { value: 'x' }), 400, 'VALIDATION_FAILED');
        expectError(
          await server.call('GET', `/v1/secrets/${encodeURIComponent(name)}`),
          400,
          'VALIDATION_FAILED',
        );
        expectError(
          await server.call('DELETE', `/v1/secrets/${encodeURIComponent(name)}`),
          400,
          'VALIDATION_FAILED',
        );
      }
      for (const body of [
        {},
        { value: '' },
        { value: 42 },
        { value: null },
        { value: 'x', extra: true },
        { value: 'x', description: 'd'.repeat(501) },
        [],
      ]) {
        expectError(await put('VALID_NAME', body), 400, 'VALIDATION_FAILED');
      }
      expectError(
        await server.call('PUT', '/v1/secrets/VALID_NAME', {
          body: '{"value":',
          headers: { 'content-type': 'application/json' },
        }),
        400,
        'INVALID_JSON',
      );
      // 65536 characters may be more than 65536 bytes of UTF-8.
      const tooLarge = expectError(
        await put('VALID_NAME', { value: 'é'.repeat(40_000) }),
        413,
        'VALUE_TOO_LARGE',
      );
      assert.equal(tooLarge.details.max_bytes, 65_536);
      expectError(await put('VALID_NAME', { value: 'x'.repeat(65_537) }), 400, 'VALIDATION_FAILED');
      assert.equal((await put('VALID_NAME', { value: 'x'.repeat(65_536) })).status, 201);
      for (const query of ['limit=0', 'limit=201', `name_prefix=${'a'.repeat(129)}`, 'other=1']) {
        expectError(await server.call('GET', `/v1/secrets?${query}`), 400, 'VALIDATION_FAILED');
      }
      expectError(await server.call('GET', '/v1/secrets', { key: null }), 401, 'UNAUTHENTICATED');
    });

    test('roles: viewers read metadata, operators and admins write, agents do neither', async () => {
      await put('ROLE_CHECK', { value: 'r' });
      const viewer = await createKey('viewer');
      const operator = await createKey('operator');
      const agent = await createKey('agent');
      assert.equal(
        (await server.call('GET', '/v1/secrets/ROLE_CHECK', { key: viewer })).status,
        200,
      );
      assert.equal((await server.call('GET', '/v1/secrets', { key: viewer })).status, 200);
      expectError(await put('ROLE_CHECK', { value: 'v' }, viewer), 403, 'PERMISSION_DENIED');
      expectError(
        await server.call('DELETE', '/v1/secrets/ROLE_CHECK', { key: viewer }),
        403,
        'PERMISSION_DENIED',
      );
      assert.equal((await put('ROLE_CHECK', { value: 'o' }, operator)).status, 200);
      assert.equal(
        (await server.call('DELETE', '/v1/secrets/ROLE_CHECK', { key: operator })).status,
        204,
      );
      expectError(
        await server.call('GET', '/v1/secrets', { key: agent }),
        403,
        'PERMISSION_DENIED',
      );
      expectError(await put('ROLE_CHECK', { value: 'a' }, agent), 403, 'PERMISSION_DENIED');
    });

    test('tenant isolation: another tenant’s secrets are invisible and untouchable', async () => {
      await put('SHARED_NAME', { value: 'tenant-a-value' });
      const created = await server.call('POST', '/v1/tenants', {
        body: { id: `secrets-b-${store}` },
      });
      assert.equal(created.status, 201);
      const b = created.body.admin_key.secret as string;
      const bList = await server.call('GET', '/v1/secrets?limit=200', { key: b });
      assert.deepEqual(bList.body.items, []);
      expectError(
        await server.call('GET', '/v1/secrets/SHARED_NAME', { key: b }),
        404,
        'SECRET_NOT_FOUND',
      );
      expectError(
        await server.call('DELETE', '/v1/secrets/SHARED_NAME', { key: b }),
        404,
        'SECRET_NOT_FOUND',
      );
      // The same name in B is B's own secret, version 1; A's is untouched.
      const bPut = await put('SHARED_NAME', { value: 'tenant-b-value' }, b);
      assert.equal(bPut.status, 201);
      assert.equal(bPut.body.version, 1);
      const service = serviceOn(server.store, TEST_SECRET_KEY);
      assert.equal(await service.resolve('default', 'SHARED_NAME'), 'tenant-a-value');
      assert.equal(await service.resolve(`secrets-b-${store}`, 'SHARED_NAME'), 'tenant-b-value');
      assert.equal(
        (await server.call('DELETE', '/v1/secrets/SHARED_NAME', { key: b })).status,
        204,
      );
      assert.equal((await server.call('GET', '/v1/secrets/SHARED_NAME')).status, 200);
      await assert.rejects(service.resolve(`secrets-b-${store}`, 'SHARED_NAME'), {
        code: 'SECRET_NOT_FOUND',
      });
    });

    test('resolve and expand (the interface other modules use)', async () => {
      await put('EXP_USER', { value: 'alice' });
      await put('EXP_PASS', { value: 'p@ss' });
      const service = serviceOn(server.store, TEST_SECRET_KEY);
      const expanded = await service.expand(
        'default',
        `postgres://\${secret:EXP_USER}:\${secret:EXP_PASS}@db/\${secret:EXP_USER}`,
      );
      assert.equal(expanded.text, 'postgres://alice:p@ss@db/alice');
      assert.deepEqual(expanded.values.sort(), ['alice', 'p@ss']);
      assert.equal(
        redact(expanded.text, expanded.values),
        'postgres://[redacted]:[redacted]@db/[redacted]',
      );
      assert.deepEqual(await service.expand('default', 'no references'), {
        text: 'no references',
        values: [],
      });
      await assert.rejects(
        service.expand('default', `x \${secret:EXP_USER} \${secret:MISSING_ONE}`),
        (err: Error & { code?: string }) =>
          err.code === 'SECRET_NOT_FOUND' &&
          /MISSING_ONE/.test(err.message) &&
          !/alice/.test(err.message),
      );
    });

    test('SDK: client.secrets.put/list/listAll/get/delete', async () => {
      const first = await sdk.secrets.put('SDK_SECRET', 'one', { description: 'from the SDK' });
      assert.equal(first.version, 1);
      const second = await sdk.secrets.put('SDK_SECRET', 'two');
      assert.equal(second.version, 2);
      assert.deepEqual(await sdk.secrets.get('SDK_SECRET'), second);
      const page = await sdk.secrets.list({ name_prefix: 'SDK_' });
      assert.deepEqual(
        page.items.map((s) => s.name),
        ['SDK_SECRET'],
      );
      const all: string[] = [];
      for await (const s of sdk.secrets.listAll({ limit: 1 })) all.push(s.name);
      assert.ok(all.includes('SDK_SECRET') && all.length > 3);
      await sdk.secrets.delete('SDK_SECRET');
      await assert.rejects(
        sdk.secrets.get('SDK_SECRET'),
        (err: unknown) => err instanceof OrchestraError && err.code === 'SECRET_NOT_FOUND',
      );
      await assert.rejects(
        sdk.secrets.put('bad-name', 'x'),
        (err: unknown) => err instanceof OrchestraError && err.code === 'VALIDATION_FAILED',
      );
    });

    if (store === 'sqlite') {
      test('encrypted at rest: the value is nowhere in the database files', async () => {
        const value = `at-rest-${randomBytes(12).toString('hex')}`;
        await put('AT_REST', { value });
        const row = await server.store.db
          .selectFrom('secrets')
          .select(['id', 'value', 'key_id'])
          .where('name', '=', 'AT_REST')
          .executeTakeFirstOrThrow();
        assert.match(row.value, /^sealed:v2:[0-9a-f]{8}:/);
        assert.equal(row.key_id, keyIdOf(keyOf(TEST_SECRET_KEY)));
        const dir = server.settings.dataDir;
        const files = ['orchestra.db', 'orchestra.db-wal']
          .map((file) => join(dir, file))
          .filter((path) => existsSync(path));
        const bytes = Buffer.concat(files.map((path) => readFileSync(path)));
        assert.equal(bytes.includes(Buffer.from(value)), false, 'the files hold the value');
        assert.equal(bytes.includes(Buffer.from('AT_REST')), true, 'the files hold the name');
        // Copied into another row, the sealed value does not open (bound to its row).
        await put('AT_REST_COPY', { value: 'other' });
        await server.store.db
          .updateTable('secrets')
          .set({ value: row.value })
          .where('name', '=', 'AT_REST_COPY')
          .execute();
        await assert.rejects(
          serviceOn(server.store, TEST_SECRET_KEY).resolve('default', 'AT_REST_COPY'),
          {
            code: 'SECRET_UNREADABLE',
          },
        );
      });
    }
  });
}

describe('ORCHESTRA_TENANT_MAX_SECRETS', () => {
  test('creating one more than the limit is refused; replacing goes on; a tenant’s own limit applies', async () => {
    const server = await startTestServer({ env: { ORCHESTRA_TENANT_MAX_SECRETS: '2' } });
    try {
      for (const name of ['LIMIT_A', 'LIMIT_B']) {
        assert.equal(
          (await server.call('PUT', `/v1/secrets/${name}`, { body: { value: 'v' } })).status,
          201,
        );
      }
      const refused = expectError(
        await server.call('PUT', '/v1/secrets/LIMIT_C', { body: { value: 'v' } }),
        409,
        'TENANT_LIMIT_REACHED',
      );
      assert.equal(refused.details.limit, 'max_secrets');
      assert.equal(refused.details.setting, 'ORCHESTRA_TENANT_MAX_SECRETS');
      assert.equal(
        (await server.call('PUT', '/v1/secrets/LIMIT_A', { body: { value: 'w' } })).status,
        200,
      );
      const raised = await server.call('PATCH', '/v1/tenants/default', {
        body: { limits: { max_secrets: 3 } },
      });
      assert.equal(raised.status, 200, JSON.stringify(raised.body));
      assert.equal(
        (await server.call('PUT', '/v1/secrets/LIMIT_C', { body: { value: 'v' } })).status,
        201,
      );
    } finally {
      await server.stop();
    }
  });
});

describe('keys on disk and rotation', () => {
  test('without a configured key, the key file is created with mode 0600 and opens the secrets after a restart', async () => {
    const dir = tempDir();
    try {
      const env = { ORCHESTRA_SECRETS_KEY: '' };
      const first = await startOn(dir.path, env);
      try {
        const file = join(dir.path, 'node-key');
        assert.equal(`0${(statSync(file).mode & 0o777).toString(8)}`, '0600');
        const res = await fetch(`${first.server.url}/v1/secrets/FILE_KEYED`, {
          method: 'PUT',
          headers: {
            authorization: `Bearer ${first.adminKey}`,
            'content-type': 'application/json',
          },
          body: JSON.stringify({ value: 'from-the-key-file' }),
        });
        assert.equal(res.status, 201);
      } finally {
        await first.server.close();
      }
      const key = readFileSync(join(dir.path, 'node-key'), 'utf8');
      const second = await startOn(dir.path, env);
      try {
        assert.equal(
          await serviceOn(second.server.store, key).resolve('default', 'FILE_KEYED'),
          'from-the-key-file',
        );
      } finally {
        await second.server.close();
      }
    } finally {
      dir.remove();
    }
  });

  test('rotation: key A, then B with A as previous (the job re-seals everything), then B alone still opens', async () => {
    const dir = tempDir();
    try {
      const first = await startOn(dir.path, { ORCHESTRA_SECRETS_KEY: KEY_A });
      let tenantB: string;
      try {
        const call = (path: string, body: unknown, key = first.adminKey) =>
          fetch(`${first.server.url}${path}`, {
            method: path.startsWith('/v1/tenants') ? 'POST' : 'PUT',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify(body),
          });
        for (let i = 0; i < 5; i++) {
          assert.equal(
            (await call(`/v1/secrets/ROT_${i}`, { value: `rot-value-${i}` })).status,
            201,
          );
        }
        const tenant = (await (await call('/v1/tenants', { id: 'rot-b' })).json()) as {
          admin_key: { secret: string };
        };
        tenantB = tenant.admin_key.secret;
        assert.equal(
          (await call('/v1/secrets/ROT_0', { value: 'rot-b-value' }, tenantB)).status,
          201,
        );
      } finally {
        await first.server.close();
      }

      const logs: Record<string, unknown>[] = [];
      const second = await startOn(
        dir.path,
        { ORCHESTRA_SECRETS_KEY: KEY_B, ORCHESTRA_SECRETS_PREVIOUS_KEYS: ` ${KEY_A} ` },
        logs,
      );
      try {
        await until('the re-seal log line', () =>
          logs.some((l) => l.msg === 'sealed stored secrets again with the current key'),
        );
        const line = logs.find((l) => l.msg === 'sealed stored secrets again with the current key');
        assert.equal(line?.resealed, 6);
        assert.equal(line?.unreadable, 0);
        const keyIds = await second.server.store.db
          .selectFrom('secrets')
          .select('key_id')
          .execute();
        assert.deepEqual([...new Set(keyIds.map((r) => r.key_id))], [keyIdOf(keyOf(KEY_B))]);
        assert.ok(!JSON.stringify(logs).includes('rot-value'));
      } finally {
        await second.server.close();
      }

      // B alone: the server starts (its realtime signing key was re-sealed too) and opens all.
      const third = await startOn(dir.path, { ORCHESTRA_SECRETS_KEY: KEY_B });
      try {
        const service = serviceOn(third.server.store, KEY_B);
        for (let i = 0; i < 5; i++) {
          assert.equal(await service.resolve('default', `ROT_${i}`), `rot-value-${i}`);
        }
        assert.equal(await service.resolve('rot-b', 'ROT_0'), 'rot-b-value');
        const realtime = await third.server.store.db
          .selectFrom('realtime_keys')
          .select('secret')
          .execute();
        for (const r of realtime) assert.equal(SecretBox.keyIdOf(r.secret), keyIdOf(keyOf(KEY_B)));
      } finally {
        await third.server.close();
      }
    } finally {
      dir.remove();
    }
  });

  test('a secret no key opens is logged and unreadable (SECRET_UNREADABLE); the server keeps serving', async () => {
    const dir = tempDir();
    try {
      const logs: Record<string, unknown>[] = [];
      const { server, adminKey } = await startOn(dir.path, { ORCHESTRA_SECRETS_KEY: KEY_A }, logs);
      try {
        const put = (name: string) =>
          fetch(`${server.url}/v1/secrets/${name}`, {
            method: 'PUT',
            headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
            body: JSON.stringify({ value: 'lost-value' }),
          });
        assert.equal((await put('LOST')).status, 201);
        assert.equal((await put('FINE')).status, 201);
        // As if sealed by a node with a key this one was never given.
        const row = await server.store.db
          .selectFrom('secrets')
          .select('id')
          .where('name', '=', 'LOST')
          .executeTakeFirstOrThrow();
        const foreign = new SecretBox(keyOf(KEY_C));
        await server.store.db
          .updateTable('secrets')
          .set({
            value: foreign.seal('lost-value', `secrets.value:${row.id}`),
            key_id: foreign.keyId,
          })
          .where('id', '=', row.id)
          .execute();
        const secrets = serviceOn(server.store, KEY_A);
        const report = await secrets.resealAll();
        assert.deepEqual(report, { resealed: 0, unreadable: 1 });
        await assert.rejects(
          secrets.resolve('default', 'LOST'),
          (err: Error & { code?: string }) =>
            err.code === 'SECRET_UNREADABLE' &&
            /LOST/.test(err.message) &&
            /[0-9a-f]{8}/.test(err.message),
        );
        assert.equal(await secrets.resolve('default', 'FINE'), 'lost-value');
        const meta = await fetch(`${server.url}/v1/secrets/LOST`, {
          headers: { authorization: `Bearer ${adminKey}` },
        });
        assert.equal(meta.status, 200, 'its metadata stays readable');
        assert.equal((await put('LOST')).status, 200, 'putting it again repairs it');
        assert.equal(await secrets.resolve('default', 'LOST'), 'lost-value');
      } finally {
        await server.close();
      }
    } finally {
      dir.remove();
    }
  });
});

describe('a secret value never leaks', () => {
  test('not in a response, a log line, an event, an error or a metric', async () => {
    const logs: Record<string, unknown>[] = [];
    const server = await startTestServer({ logTo: logs, env: { ORCHESTRA_LOG_LEVEL: 'trace' } });
    const canary = `canary-${randomBytes(16).toString('hex')}`;
    const seen: string[] = [];
    const call = async (
      method: string,
      path: string,
      options: { key?: string | null; body?: unknown; headers?: Record<string, string> } = {},
    ) => {
      const res = await server.call(method, path, options);
      seen.push(`${res.status} ${JSON.stringify([...res.headers])} ${JSON.stringify(res.body)}`);
      return res;
    };
    try {
      const viewer = (await call('POST', '/v1/api-keys', { body: { name: 'v', role: 'viewer' } }))
        .body.secret as string;
      assert.equal(
        (await call('PUT', '/v1/secrets/CANARY', { body: { value: canary } })).status,
        201,
      );
      assert.equal(
        (await call('PUT', '/v1/secrets/CANARY', { body: { value: canary } })).status,
        200,
      );
      const refused: [number, Parameters<typeof call>[1], Parameters<typeof call>[2]][] = [
        [400, '/v1/secrets/CANARY', { body: { value: canary, extra: canary } }],
        [400, '/v1/secrets/CANARY', { body: { value: canary, description: 5 } }],
        [400, '/v1/secrets/bad-name', { body: { value: canary } }],
        [400, '/v1/secrets/CANARY', { body: { value: canary.repeat(3000) } }],
        [413, '/v1/secrets/CANARY', { body: { value: `é${canary}`.repeat(1630) } }],
        [400, '/v1/secrets/CANARY', { body: `{"value":"${canary}"` }],
        [403, '/v1/secrets/CANARY', { body: { value: canary }, key: viewer }],
        [401, '/v1/secrets/CANARY', { body: { value: canary }, key: null }],
        [
          415,
          '/v1/secrets/CANARY',
          { body: { value: canary }, headers: { 'content-type': 'text/plain' } },
        ],
      ];
      for (const [status, path, options] of refused) {
        const res = await call('PUT', path, options);
        assert.equal(res.status, status, `PUT ${path} answers ${status}`);
      }
      await call('GET', '/v1/secrets');
      await call('GET', '/v1/secrets?name_prefix=CAN');
      await call('GET', '/v1/secrets/CANARY');
      await call('GET', '/v1/secrets/MISSING');
      await call('DELETE', '/v1/secrets/MISSING');
      const service = serviceOn(server.store, TEST_SECRET_KEY);
      await assert.rejects(
        service.expand('default', `\${secret:CANARY} \${secret:NOPE}`),
        (err: Error) => {
          seen.push(String(err), JSON.stringify(err), String(err.stack));
          return true;
        },
      );
      assert.ok((await service.expand('default', `\${secret:CANARY}`)).text === canary);
      await service.resealAll();
      await call('GET', '/metrics', { key: null });
      await call('GET', '/openapi.json', { key: null });
      await call('PUT', '/v1/secrets/CANARY_2', { body: { value: canary } });
      assert.equal((await call('DELETE', '/v1/secrets/CANARY_2')).status, 204);
      await call('GET', '/v1/secrets/CANARY_2');

      // Every table, the event log among them.
      const tables = await sql<{
        name: string;
      }>`select name from sqlite_master where type = 'table'`.execute(server.store.db);
      const stored: string[] = [];
      for (const { name } of tables.rows) {
        const rows = await sql`select * from ${sql.table(name)}`.execute(server.store.db);
        stored.push(JSON.stringify(rows.rows));
      }
      assert.ok(stored.join('').includes('CANARY'), 'the dump holds what was written');
      assert.ok(logs.length > 10, 'the log was captured');
      assert.ok(JSON.stringify(logs).includes('/v1/secrets/CANARY'), 'requests were logged');
      for (const [where, text] of [
        ['responses', seen.join('\n')],
        ['log lines', JSON.stringify(logs)],
        ['stored rows and events', stored.join('\n')],
      ] as const) {
        assert.equal(text.includes(canary), false, `the value appears in ${where}`);
      }
    } finally {
      await server.stop();
    }
  });
});
