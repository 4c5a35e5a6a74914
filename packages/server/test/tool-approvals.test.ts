import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { startServer } from '../src/server.ts';
import { expectError, startTestServer, type TestServer, tempDir, testSettings } from './helpers.ts';

/** A loopback upstream that answers every request with what it was sent. */
async function echoServer(): Promise<{ url: string; hits: string[]; server: Server }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      hits.push(body);
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ got: JSON.parse(body || 'null') }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits, server };
}

const deployTool = (url: string) => ({
  name: 'ops__deploy',
  description: 'Deploy a service',
  annotations: { destructiveHint: true },
  input_schema: {
    type: 'object',
    properties: { service: { type: 'string' } },
    required: ['service'],
  },
  source: { type: 'http', method: 'POST', url: `${url}/deploy` },
});

const approvalPolicy = (timeoutMs = 3_600_000) => ({
  name: 'deploys-need-approval',
  effect: 'allow',
  tools: ['ops__*'],
  approval: 'required',
  approval_timeout_ms: timeoutMs,
});

describe('tool approvals', () => {
  let server: TestServer;
  let upstream: Awaited<ReturnType<typeof echoServer>>;
  before(async () => {
    upstream = await echoServer();
    server = await startTestServer();
    assert.equal(
      (await server.call('POST', '/v1/tools', { body: deployTool(upstream.url) })).status,
      201,
    );
    assert.equal(
      (await server.call('POST', '/v1/tool-policies', { body: approvalPolicy() })).status,
      201,
    );
  });
  after(async () => {
    await server.stop();
    upstream.server.close();
  });

  const invoke = (args: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    server.call('POST', '/v1/tools/ops__deploy/invoke', { body: { arguments: args, ...extra } });

  test('a call that needs approval waits (202); approving the reviewed arguments runs it', async () => {
    const before = upstream.hits.length;
    const pending = await invoke({ service: 'billing' });
    assert.equal(pending.status, 202, JSON.stringify(pending.body));
    assert.equal(pending.body.call.status, 'awaiting_approval');
    assert.equal(pending.body.result, null);
    assert.match(pending.body.call.approval_id, /^apr_/);
    assert.equal(upstream.hits.length, before, 'nothing ran yet');

    const list = await server.call('GET', '/v1/tool-approvals?status=pending');
    const approval = list.body.items.find(
      (a: { call_id: string }) => a.call_id === pending.body.call.id,
    );
    assert.ok(approval, JSON.stringify(list.body));
    assert.deepEqual(approval.arguments, { service: 'billing' });
    assert.equal(approval.policy, 'deploys-need-approval');
    assert.match(approval.arguments_hash, /^[0-9a-f]{64}$/);

    const wrong = expectError(
      await server.call('POST', `/v1/tool-approvals/${approval.id}/approve`, {
        body: { arguments_hash: '0'.repeat(64) },
      }),
      409,
      'TOOL_APPROVAL_ARGUMENTS_MISMATCH',
    );
    assert.equal(wrong.details.arguments_hash, approval.arguments_hash);
    const approved = await server.call('POST', `/v1/tool-approvals/${approval.id}/approve`, {
      body: { arguments_hash: approval.arguments_hash, reason: 'looks fine' },
    });
    assert.equal(approved.status, 200, JSON.stringify(approved.body));
    assert.equal(approved.body.approval.status, 'approved');
    assert.equal(approved.body.call.status, 'succeeded');
    assert.deepEqual(approved.body.result.structured_content, { got: { service: 'billing' } });
    assert.equal(upstream.hits.length, before + 1);
    const call = await server.call('GET', `/v1/tool-calls/${pending.body.call.id}`);
    assert.equal(call.body.status, 'succeeded');
    expectError(
      await server.call('POST', `/v1/tool-approvals/${approval.id}/approve`, {
        body: { arguments_hash: approval.arguments_hash },
      }),
      409,
      'TOOL_APPROVAL_NOT_PENDING',
    );
  });

  test('a caller that waits gets the result once an operator approves meanwhile', async () => {
    const waiting = invoke({ service: 'search' }, { wait_ms: 120_000 });
    let approval: { id: string; arguments_hash: string } | undefined;
    async function findApproval() {
      for (let i = 0; i < 200 && approval === undefined; i++) {
        const list = await server.call('GET', '/v1/tool-approvals?status=pending&tool=ops__deploy');
        approval = list.body.items.find(
          (a: { arguments: { service: string } }) => a.arguments.service === 'search',
        );
        if (approval === undefined) await new Promise((r) => setTimeout(r, 50));
      }
    }
    await findApproval();
    assert.ok(approval);
    const operator = await server.call('POST', '/v1/api-keys', {
      body: { name: 'approver', role: 'operator' },
    });
    const approved = await server.call('POST', `/v1/tool-approvals/${approval.id}/approve`, {
      key: operator.body.secret,
      body: { arguments_hash: approval.arguments_hash },
    });
    assert.equal(approved.status, 200);
    const done = await waiting;
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(done.body.call.status, 'succeeded');
    assert.deepEqual(done.body.result.structured_content, { got: { service: 'search' } });
  });

  test('a rejected call never runs; viewers may not decide', async () => {
    const before = upstream.hits.length;
    const pending = await invoke({ service: 'payments' });
    const id = pending.body.call.approval_id as string;
    const viewer = await server.call('POST', '/v1/api-keys', {
      body: { name: 'v', role: 'viewer' },
    });
    expectError(
      await server.call('POST', `/v1/tool-approvals/${id}/reject`, {
        key: viewer.body.secret,
        body: {},
      }),
      403,
      'PERMISSION_DENIED',
    );
    const rejected = await server.call('POST', `/v1/tool-approvals/${id}/reject`, {
      body: { reason: 'not during the freeze' },
    });
    assert.equal(rejected.status, 200, JSON.stringify(rejected.body));
    assert.equal(rejected.body.approval.status, 'rejected');
    assert.equal(rejected.body.call.status, 'rejected');
    assert.equal(rejected.body.call.error.code, 'TOOL_CALL_REJECTED');
    assert.match(rejected.body.call.error.message, /not during the freeze/);
    assert.equal(upstream.hits.length, before);
    expectError(
      await server.call('GET', '/v1/tool-approvals/apr_nope'),
      404,
      'TOOL_APPROVAL_NOT_FOUND',
    );
    expectError(
      await server.call('POST', `/v1/tool-approvals/${id}/approve`, { body: {} }),
      400,
      'VALIDATION_FAILED',
    );
  });

  test('another tenant sees none of the approvals', async () => {
    const tenant = await server.call('POST', '/v1/tenants', { body: { id: 'approvals-other' } });
    const other = tenant.body.admin_key.secret as string;
    assert.deepEqual(
      (await server.call('GET', '/v1/tool-approvals', { key: other })).body.items,
      [],
    );
    const mine = await server.call('GET', '/v1/tool-approvals?limit=1');
    expectError(
      await server.call('POST', `/v1/tool-approvals/${mine.body.items[0].id}/reject`, {
        key: other,
        body: {},
      }),
      404,
      'TOOL_APPROVAL_NOT_FOUND',
    );
  });
});

describe('tool approvals over time', () => {
  test('an approval past its deadline expires, and its call with it', async () => {
    const upstream = await echoServer();
    const server = await startTestServer();
    try {
      await server.call('POST', '/v1/tools', { body: deployTool(upstream.url) });
      await server.call('POST', '/v1/tool-policies', { body: approvalPolicy(1000) });
      const pending = await server.call('POST', '/v1/tools/ops__deploy/invoke', {
        body: { arguments: { service: 'late' } },
      });
      assert.equal(pending.status, 202);
      let status = '';
      for (let i = 0; i < 600 && status !== 'expired'; i++) {
        status = (await server.call('GET', `/v1/tool-calls/${pending.body.call.id}`)).body.status;
        if (status !== 'expired') await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(status, 'expired');
      const approval = await server.call(
        'GET',
        `/v1/tool-approvals/${pending.body.call.approval_id}`,
      );
      assert.equal(approval.body.status, 'expired');
      expectError(
        await server.call('POST', `/v1/tool-approvals/${approval.body.id}/approve`, {
          body: { arguments_hash: approval.body.arguments_hash },
        }),
        409,
        'TOOL_APPROVAL_NOT_PENDING',
      );
      assert.equal(upstream.hits.length, 0);
    } finally {
      await server.stop();
      upstream.server.close();
    }
  });

  test('a waiting call survives a restart and runs once approved after it', async () => {
    const upstream = await echoServer();
    const dir = tempDir();
    const settings = testSettings(dir.path);
    const log = pino({ level: 'silent' });
    try {
      const first = await startServer(settings, { log });
      const key = readFileSync(join(dir.path, 'admin-key'), 'utf8').trim();
      const call = async (url: string, method: string, path: string, body?: unknown) => {
        const res = await fetch(url + path, {
          method,
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return { status: res.status, body: (await res.json()) as any };
      };
      await call(first.url, 'POST', '/v1/tools', deployTool(upstream.url));
      await call(first.url, 'POST', '/v1/tool-policies', approvalPolicy());
      const pending = await call(first.url, 'POST', '/v1/tools/ops__deploy/invoke', {
        arguments: { service: 'after-restart' },
      });
      assert.equal(pending.status, 202);
      await first.close();

      const second = await startServer(settings, { log });
      try {
        const approval = await call(
          second.url,
          'GET',
          `/v1/tool-approvals/${pending.body.call.approval_id}`,
        );
        assert.equal(approval.body.status, 'pending');
        const approved = await call(
          second.url,
          'POST',
          `/v1/tool-approvals/${approval.body.id}/approve`,
          {
            arguments_hash: approval.body.arguments_hash,
          },
        );
        assert.equal(approved.status, 200, JSON.stringify(approved.body));
        assert.deepEqual(approved.body.result.structured_content, {
          got: { service: 'after-restart' },
        });
      } finally {
        await second.close();
      }
    } finally {
      dir.remove();
      upstream.server.close();
    }
  });
});
