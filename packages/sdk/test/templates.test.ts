import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { Orchestra, type Template } from '../src/index.ts';
import { collect, rejection } from './support.ts';

// `orchestra.templates` against a real server: every call goes over HTTP to the routes
// users reach.

const INPUT_SCHEMA = {
  type: 'object',
  properties: { ticket: { type: 'string' } },
  required: ['ticket'],
};

describe('orchestra.templates', () => {
  let server: TestServer;
  let admin: Orchestra;

  before(async () => {
    server = await startTestServer();
    admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
  });
  after(async () => {
    await server.stop();
  });

  test('create returns version 1 with defaults filled in; get finds it by name and by id', async () => {
    const created = await admin.templates.create({
      name: 'sdk-triage',
      description: 'Sorts tickets',
      labels: { team: 'support' },
      capabilities: ['llm:chat'],
      input_schema: INPUT_SCHEMA,
    });
    assert.match(created.id, /^tpl_/);
    assert.equal(created.name, 'sdk-triage');
    assert.deepEqual([created.version, created.latest_version, created.highest_version], [1, 1, 1]);
    assert.deepEqual(created.labels, { team: 'support' });
    assert.deepEqual(created.capabilities, ['llm:chat']);
    assert.deepEqual(created.input_schema, INPUT_SCHEMA);
    assert.equal(created.output_schema, null);
    assert.deepEqual(created.config, {});
    assert.equal(created.default_timeout_ms, 300_000);
    assert.equal(created.default_max_attempts, 3);
    assert.equal(created.default_priority, 0);
    assert.equal(created.strategy, 'least_connections');

    assert.deepEqual(await admin.templates.get('sdk-triage'), created);
    assert.deepEqual(await admin.templates.get(created.id), created);

    const twice = await rejection(() => admin.templates.create({ name: 'sdk-triage' }));
    assert.equal(twice.code, 'TEMPLATE_ALREADY_EXISTS');
    assert.equal(twice.status, 409);
  });

  test('list filters by every label given and by name prefix', async () => {
    // The value holds "=", "&" and a space: the label must reach the server as one parameter.
    const odd = 'a=b&c d';
    await admin.templates.create({ name: 'lbl-both', labels: { env: 'prod', tier: odd } });
    await admin.templates.create({ name: 'lbl-env', labels: { env: 'prod' } });
    await admin.templates.create({ name: 'lbl-other', labels: { env: 'dev', tier: odd } });
    const names = (page: { items: Template[] }) => page.items.map((t) => t.name).sort();

    assert.deepEqual(names(await admin.templates.list({ labels: { env: 'prod' } })), [
      'lbl-both',
      'lbl-env',
    ]);
    assert.deepEqual(names(await admin.templates.list({ labels: { env: 'prod', tier: odd } })), [
      'lbl-both',
    ]);
    assert.deepEqual(names(await admin.templates.list({ labels: { tier: odd } })), [
      'lbl-both',
      'lbl-other',
    ]);
    assert.deepEqual(names(await admin.templates.list({ labels: { env: 'staging' } })), []);

    assert.deepEqual(names(await admin.templates.list({ name_prefix: 'lbl-' })), [
      'lbl-both',
      'lbl-env',
      'lbl-other',
    ]);
    assert.deepEqual(
      names(await admin.templates.list({ name_prefix: 'lbl-', labels: { env: 'dev' } })),
      ['lbl-other'],
    );
  });

  test('listAll walks every page exactly once', async () => {
    const expected = [];
    for (let i = 0; i < 5; i += 1) {
      expected.push((await admin.templates.create({ name: `page-${i}` })).id);
    }
    const first = await admin.templates.list({ name_prefix: 'page-', limit: 2 });
    assert.equal(first.items.length, 2);
    assert.notEqual(first.next_cursor, null, 'five templates in pages of two need a cursor');

    const seen = await collect(admin.templates.listAll({ name_prefix: 'page-', limit: 2 }));
    assert.deepEqual(seen.map((t) => t.id).sort(), expected.sort());
  });

  test('update replaces the whole definition and creates a new version', async () => {
    const created = await admin.templates.create({
      name: 'sdk-replace',
      description: 'first',
      capabilities: ['a'],
      default_priority: 5,
    });
    const updated = await admin.templates.update(created.id, { description: 'second' });
    assert.deepEqual([updated.version, updated.latest_version], [2, 2]);
    assert.equal(updated.description, 'second');
    // Left out: back to the defaults, not kept from version 1.
    assert.deepEqual(updated.capabilities, []);
    assert.equal(updated.default_priority, 0);
    assert.equal(updated.created_at, created.created_at);
    assert.deepEqual(await admin.templates.get('sdk-replace'), updated);
  });

  test('update with ifVersion succeeds on the latest version and rejects a stale one with 412', async () => {
    const created = await admin.templates.create({ name: 'sdk-concurrent', description: 'v1' });
    const mine = await admin.templates.update(
      'sdk-concurrent',
      { description: 'v2' },
      { ifVersion: created.latest_version },
    );
    assert.equal(mine.latest_version, 2);

    // A second writer still holding version 1 must not overwrite version 2.
    const stale = await rejection(() =>
      admin.templates.update('sdk-concurrent', { description: 'lost' }, { ifVersion: 1 }),
    );
    assert.equal(stale.code, 'PRECONDITION_FAILED');
    assert.equal(stale.status, 412);
    const current = await admin.templates.get('sdk-concurrent');
    assert.equal(current.description, 'v2');
    assert.equal(current.highest_version, 2);
  });

  test('versions lists newest first; versionsAll pages; get pins a version', async () => {
    await admin.templates.create({ name: 'sdk-history', description: 'one' });
    await admin.templates.update('sdk-history', { description: 'two' });
    await admin.templates.update('sdk-history', { description: 'three' });
    const me = await admin.whoami();
    assert.ok(me.credential.type === 'api_key');
    const keyId = me.credential.id;

    const page = await admin.templates.versions('sdk-history', { limit: 2 });
    assert.deepEqual(
      page.items.map((v) => [v.version, v.latest]),
      [
        [3, true],
        [2, false],
      ],
    );
    assert.notEqual(page.next_cursor, null);
    const rest = await admin.templates.versions('sdk-history', {
      limit: 2,
      cursor: String(page.next_cursor),
    });
    assert.deepEqual(
      rest.items.map((v) => v.version),
      [1],
    );
    assert.equal(rest.next_cursor, null);
    for (const v of [...page.items, ...rest.items]) {
      assert.equal(v.created_by, keyId);
      assert.ok(!Number.isNaN(Date.parse(v.created_at)), v.created_at);
    }

    const all = await collect(admin.templates.versionsAll('sdk-history', { limit: 1 }));
    assert.deepEqual(
      all.map((v) => v.version),
      [3, 2, 1],
    );

    const pinned = await admin.templates.get('sdk-history', { version: 1 });
    assert.equal(pinned.description, 'one');
    assert.deepEqual([pinned.version, pinned.latest_version, pinned.highest_version], [1, 3, 3]);

    const missing = await rejection(() => admin.templates.get('sdk-history', { version: 9 }));
    assert.equal(missing.code, 'TEMPLATE_VERSION_NOT_FOUND');
    assert.equal(missing.status, 404);
  });

  test('rollback points latest at an earlier version; the next update still numbers from the highest', async () => {
    await admin.templates.create({ name: 'sdk-rollback', labels: { stage: 'one' } });
    await admin.templates.update('sdk-rollback', { labels: { stage: 'two' } });

    const rolled = await admin.templates.rollback('sdk-rollback', 1);
    assert.deepEqual([rolled.version, rolled.latest_version, rolled.highest_version], [1, 1, 2]);
    assert.deepEqual(rolled.labels, { stage: 'one' });
    assert.deepEqual(
      (await admin.templates.get('sdk-rollback')).labels,
      { stage: 'one' },
      'get follows latest',
    );
    // Label filters follow `latest` too.
    const byLabel = await admin.templates.list({ labels: { stage: 'one' } });
    assert.deepEqual(
      byLabel.items.map((t) => t.name),
      ['sdk-rollback'],
    );
    const versions = await admin.templates.versions('sdk-rollback');
    assert.deepEqual(
      versions.items.map((v) => [v.version, v.latest]),
      [
        [2, false],
        [1, true],
      ],
    );

    // The rolled-back-to version is what `latest` is now, so it is the valid precondition.
    const next = await admin.templates.update(
      'sdk-rollback',
      { labels: { stage: 'three' } },
      { ifVersion: 1 },
    );
    assert.deepEqual([next.version, next.latest_version, next.highest_version], [3, 3, 3]);

    const missing = await rejection(() => admin.templates.rollback('sdk-rollback', 7));
    assert.equal(missing.code, 'TEMPLATE_VERSION_NOT_FOUND');
    assert.equal(missing.status, 404);
    assert.equal((await admin.templates.get('sdk-rollback')).latest_version, 3);
  });

  test('delete resolves to undefined; afterwards the template is TEMPLATE_NOT_FOUND', async () => {
    const created = await admin.templates.create({ name: 'sdk-doomed' });
    await admin.templates.update('sdk-doomed', { description: 'v2' });

    assert.equal(await admin.templates.delete(created.id), undefined);

    for (const call of [
      () => admin.templates.get('sdk-doomed'),
      () => admin.templates.get(created.id, { version: 1 }),
      () => admin.templates.versions('sdk-doomed'),
      () => admin.templates.update('sdk-doomed', {}),
      () => admin.templates.rollback('sdk-doomed', 1),
      () => admin.templates.delete('sdk-doomed'),
    ]) {
      const err = await rejection(call);
      assert.equal(err.code, 'TEMPLATE_NOT_FOUND');
      assert.equal(err.status, 404);
    }
    const names = (await collect(admin.templates.listAll())).map((t) => t.name);
    assert.ok(!names.includes('sdk-doomed'), names.join(', '));

    // The name is free again, and starts over at version 1.
    const again = await admin.templates.create({ name: 'sdk-doomed' });
    assert.notEqual(again.id, created.id);
    assert.equal(again.highest_version, 1);
  });

  test('an invalid JSON Schema rejects with VALIDATION_FAILED naming body.input_schema', async () => {
    const err = await rejection(() =>
      admin.templates.create({ name: 'sdk-bad-schema', input_schema: { type: 'nope' } }),
    );
    assert.equal(err.code, 'VALIDATION_FAILED');
    assert.equal(err.status, 400);
    const fields = err.details?.fields as { field: string; message: string }[];
    assert.ok(Array.isArray(fields), JSON.stringify(err.details));
    assert.deepEqual(
      fields.map((f) => f.field),
      ['body.input_schema'],
    );
    assert.match(String(fields[0]?.message), /not a valid JSON Schema/);

    const missing = await rejection(() => admin.templates.get('sdk-bad-schema'));
    assert.equal(missing.code, 'TEMPLATE_NOT_FOUND');

    await admin.templates.create({ name: 'sdk-good-schema' });
    const update = await rejection(() =>
      admin.templates.update('sdk-good-schema', { output_schema: { type: 'nope' } }),
    );
    assert.equal(update.code, 'VALIDATION_FAILED');
    const updateFields = update.details?.fields as { field: string }[] | undefined;
    assert.deepEqual(
      updateFields?.map((f) => f.field),
      ['body.output_schema'],
    );
    assert.equal((await admin.templates.get('sdk-good-schema')).highest_version, 1);
  });

  test('a viewer can read templates but not change them', async () => {
    await admin.templates.create({ name: 'sdk-readonly' });
    const key = await admin.apiKeys.create({ name: 'sdk-template-viewer', role: 'viewer' });
    const viewer = new Orchestra({ url: server.url, apiKey: key.secret });

    assert.equal((await viewer.templates.get('sdk-readonly')).name, 'sdk-readonly');
    const err = await rejection(() => viewer.templates.update('sdk-readonly', {}));
    assert.equal(err.code, 'PERMISSION_DENIED');
    assert.equal(err.status, 403);
    const denied = await rejection(() => viewer.templates.delete('sdk-readonly'));
    assert.equal(denied.code, 'PERMISSION_DENIED');
    assert.equal((await admin.templates.get('sdk-readonly')).highest_version, 1);
  });
});
