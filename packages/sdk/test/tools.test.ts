import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { echoUpstream, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { type CreateToolInput, Orchestra } from '../src/index.ts';
import { collect, rejection } from './support.ts';

// `orchestra.tools`, `toolPolicies`, `toolCalls` and `approvals` against a real server, whose
// HTTP tools call a real upstream on loopback.

describe('orchestra.tools and friends', () => {
  let server: TestServer;
  let upstream: Awaited<ReturnType<typeof echoUpstream>>;
  let admin: Orchestra;

  const readOnlyTool = (name: string, path = '/echo'): CreateToolInput => ({
    name,
    description: `Echoes for ${name}`,
    annotations: { readOnlyHint: true },
    labels: { team: 'sdk' },
    input_schema: { type: 'object', properties: { word: { type: 'string' } } },
    source: { type: 'http', method: 'POST', url: `${upstream.url}${path}` },
  });

  before(async () => {
    upstream = await echoUpstream();
    server = await startTestServer();
    admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
  });
  after(async () => {
    await server.stop();
    await upstream.close();
  });

  test('create, get, list, update, versions, invoke and delete an HTTP tool', async () => {
    const created = await admin.tools.create(readOnlyTool('sdk-echo'));
    assert.match(created.id, /^tool_/);
    assert.deepEqual([created.version, created.latest_version], [1, 1]);
    assert.equal(created.state, 'active');
    assert.equal(created.destructive, false);
    assert.deepEqual(await admin.tools.get('sdk-echo'), created);
    assert.deepEqual(await admin.tools.get(created.id), created);
    const twice = await rejection(() => admin.tools.create(readOnlyTool('sdk-echo')));
    assert.equal(twice.code, 'TOOL_ALREADY_EXISTS');

    await admin.tools.create({ ...readOnlyTool('sdk-other'), labels: { team: 'other' } });
    const names = async (options: Parameters<typeof admin.tools.list>[0]) =>
      (await collect(admin.tools.listAll(options))).map((t) => t.name).sort();
    assert.deepEqual(await names({ name_prefix: 'sdk-' }), ['sdk-echo', 'sdk-other']);
    assert.deepEqual(await names({ labels: { team: 'sdk' } }), ['sdk-echo']);
    assert.deepEqual(await names({ q: 'sdk-other' }), ['sdk-other']);
    assert.deepEqual(await names({ source: 'mcp' }), []);
    const page = await admin.tools.list({ limit: 1, name_prefix: 'sdk-' });
    assert.equal(page.items.length, 1);
    assert.equal(typeof page.next_cursor, 'string');

    const { name: _name, ...definition } = readOnlyTool('sdk-echo');
    const updated = await admin.tools.update('sdk-echo', {
      ...definition,
      description: 'Echoes, version 2',
    });
    assert.equal(updated.version, 2);
    assert.equal(updated.description, 'Echoes, version 2');
    assert.equal((await admin.tools.getVersion('sdk-echo', 1)).description, 'Echoes for sdk-echo');
    const versions = await collect(admin.tools.versionsAll('sdk-echo', { limit: 1 }));
    assert.deepEqual(
      versions.map((v) => [v.version, v.latest]),
      [
        [2, true],
        [1, false],
      ],
    );
    assert.equal((await admin.tools.versions('sdk-echo')).items.length, 2);
    const missing = await rejection(() => admin.tools.getVersion('sdk-echo', 9));
    assert.equal(missing.code, 'TOOL_VERSION_NOT_FOUND');

    const invocation = await admin.tools.invoke('sdk-echo', { word: 'hi' });
    assert.equal(invocation.call.status, 'succeeded');
    assert.equal(invocation.call.tool_version, 2);
    assert.deepEqual(invocation.result?.structured_content, { got: { word: 'hi' } });
    assert.deepEqual(invocation.result?.content, [
      { type: 'text', text: JSON.stringify({ got: { word: 'hi' } }) },
    ]);
    assert.deepEqual(await admin.toolCalls.get(invocation.call.id), invocation.call);

    const bad = await rejection(() => admin.tools.invoke('sdk-echo', { word: 7 }));
    assert.equal(bad.code, 'TOOL_INVALID_ARGUMENTS');
    assert.equal(bad.status, 400);

    // An HTTP tool has no definition waiting for an approval.
    const notHeld = await rejection(() =>
      admin.tools.approveDefinition('sdk-echo', 'a'.repeat(64)),
    );
    assert.equal(notHeld.code, 'TOOL_NOT_HELD');

    await admin.tools.delete('sdk-other');
    assert.equal((await rejection(() => admin.tools.get('sdk-other'))).code, 'TOOL_NOT_FOUND');
  });

  test('a tool-level error resolves with is_error; toolCalls lists and filters the record', async () => {
    await admin.tools.create(readOnlyTool('sdk-missing', '/missing'));
    const invocation = await admin.tools.invoke('sdk-missing', {});
    assert.equal(invocation.call.status, 'succeeded');
    assert.equal(invocation.result?.is_error, true);
    assert.equal(invocation.call.is_error, true);
    assert.match(JSON.stringify(invocation.result?.content), /HTTP 404/);

    const calls = await collect(admin.toolCalls.listAll({ tool: 'sdk-missing', limit: 1 }));
    assert.deepEqual(
      calls.map((c) => c.id),
      [invocation.call.id],
    );
    const succeeded = await admin.toolCalls.list({ tool: 'sdk-missing', status: 'succeeded' });
    assert.equal(succeeded.items.length, 1);
    assert.equal(
      (await admin.toolCalls.list({ tool: 'sdk-missing', status: 'denied' })).items.length,
      0,
    );
    const gone = await rejection(() => admin.toolCalls.get('tc_nothing'));
    assert.equal(gone.code, 'TOOL_CALL_NOT_FOUND');
  });

  test('policies: a deny refuses the call; an approval policy makes it wait for approve or reject', async () => {
    await admin.tools.create({
      ...readOnlyTool('ops__deploy'),
      annotations: { destructiveHint: true },
    });
    const deny = await admin.toolPolicies.create({
      name: 'no-deploys',
      effect: 'deny',
      tools: ['ops__*'],
    });
    assert.match(deny.id, /^tpol_/);
    assert.deepEqual(await admin.toolPolicies.get('no-deploys'), deny);
    const denied = await rejection(() => admin.tools.invoke('ops__deploy', { word: 'x' }));
    assert.equal(denied.code, 'TOOL_CALL_DENIED');
    await admin.toolPolicies.delete(deny.id);
    assert.equal(
      (await rejection(() => admin.toolPolicies.get('no-deploys'))).code,
      'TOOL_POLICY_NOT_FOUND',
    );

    await admin.toolPolicies.create({ name: 'deploys', effect: 'allow', tools: ['ops__*'] });
    const required = await admin.toolPolicies.update('deploys', {
      effect: 'allow',
      tools: ['ops__*'],
      approval: 'required',
      description: 'Deploys need a second pair of eyes',
    });
    assert.equal(required.approval, 'required');
    assert.deepEqual(
      (await collect(admin.toolPolicies.listAll())).map((p) => p.name),
      ['deploys'],
    );

    const waiting = await admin.tools.invoke('ops__deploy', { word: 'billing' });
    assert.equal(waiting.call.status, 'awaiting_approval');
    assert.equal(waiting.result, null);
    const pending = await admin.approvals.list({ status: 'pending', tool: 'ops__deploy' });
    assert.deepEqual(
      pending.items.map((a) => a.call_id),
      [waiting.call.id],
    );
    const approval = await admin.approvals.get(waiting.call.approval_id ?? '');
    assert.deepEqual(approval.arguments, { word: 'billing' });
    assert.equal(approval.policy, 'deploys');

    const mismatch = await rejection(() => admin.approvals.approve(approval.id, '0'.repeat(64)));
    assert.equal(mismatch.code, 'TOOL_APPROVAL_ARGUMENTS_MISMATCH');
    const decision = await admin.approvals.approve(approval.id, approval.arguments_hash, 'ok');
    assert.equal(decision.approval.status, 'approved');
    assert.equal(decision.approval.reason, 'ok');
    assert.equal(decision.call.status, 'succeeded');
    assert.deepEqual(decision.result?.structured_content, { got: { word: 'billing' } });
    assert.equal((await admin.toolCalls.get(waiting.call.id)).status, 'succeeded');
    const again = await rejection(() =>
      admin.approvals.approve(approval.id, approval.arguments_hash),
    );
    assert.equal(again.code, 'TOOL_APPROVAL_NOT_PENDING');

    const second = await admin.tools.invoke('ops__deploy', { word: 'search' });
    const rejected = await admin.approvals.reject(second.call.approval_id ?? '', 'not today');
    assert.equal(rejected.approval.status, 'rejected');
    assert.equal(rejected.call.status, 'rejected');
    assert.equal(rejected.result, null);
    assert.deepEqual(
      (await collect(admin.approvals.listAll({ tool: 'ops__deploy' }))).map((a) => a.status),
      ['rejected', 'approved'],
    );
  });
});
