// The SDK's wire types and codes come from @orchestra/protocol, the package the server
// validates with (decision 0014): these tests fail when the two drift apart again.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as protocol from '@orchestra/protocol';
import type { Static } from 'typebox';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import {
  type Agent,
  type AssignedTask,
  CLIENT_ERROR_CODES,
  type ConfigActor,
  type ConfigChange,
  type ConfigDeleted,
  type ConfigDiff,
  type ConfigEnvironment,
  type ConfigHistoryEntry,
  type ConfigHistoryPage,
  type ConfigItem,
  type ConfigPage,
  type ConfigSchema,
  type ErrorCode,
  type HealthCheckSpec,
  type InstanceLoad,
  type InstanceMetadata,
  type Lease,
  Orchestra,
  OrchestraError,
  type PresenceMember,
  type RealtimeToken,
  type RealtimeTokenInput,
  type RegisterInstanceInput,
  type ServiceEvent,
  type ServiceInstance,
  type ServiceSummary,
  TASK_STATES,
  type Task,
  type TaskState,
  type Tenant,
  type Topic,
  type TopicHistory,
  type TopicMessage,
} from '../src/index.ts';

// Type-level checks, compiled by `npm run typecheck`: a wrong one fails the type check.
type Equal<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const sameType = <A, B>(proof: Equal<A, B>) => proof;
sameType<Task, Static<typeof protocol.Task>>(true);
sameType<Agent, Static<typeof protocol.Agent>>(true);
sameType<AssignedTask, Static<typeof protocol.AssignedTask>>(true);
sameType<Tenant, Static<typeof protocol.Tenant>>(true);
sameType<TaskState, (typeof protocol.TASK_STATES)[number]>(true);
sameType<OrchestraError['code'], ErrorCode | (typeof CLIENT_ERROR_CODES)[number]>(true);
// @ts-expect-error: a code that is not in the catalogue is not an `OrchestraError` code
const misspelt: OrchestraError['code'] = 'RATE_LIMTED';
// @ts-expect-error: the same misspelling in a comparison does not compile either
const compared = (err: OrchestraError) => err.code === 'RATE_LIMTED';
void misspelt;
void compared;

// The config center's and the registry's types (`T = unknown` is the wire type itself).
sameType<ConfigActor, Static<typeof protocol.ConfigActor>>(true);
sameType<ConfigItem, Static<typeof protocol.ConfigItem>>(true);
sameType<ConfigPage, protocol.ConfigPage>(true);
sameType<ConfigDeleted, Static<typeof protocol.ConfigDeleted>>(true);
sameType<ConfigHistoryEntry, Static<typeof protocol.ConfigHistoryEntry>>(true);
sameType<ConfigHistoryPage, Static<typeof protocol.ConfigHistoryPage>>(true);
sameType<ConfigDiff, Static<typeof protocol.ConfigDiff>>(true);
sameType<ConfigSchema, Static<typeof protocol.ConfigSchema>>(true);
sameType<ConfigEnvironment, Static<typeof protocol.ConfigEnvironment>>(true);
sameType<ConfigChange, protocol.ConfigWatchEvent>(true);
sameType<Lease, Static<typeof protocol.Lease>>(true);
sameType<ServiceInstance, Static<typeof protocol.ServiceInstance>>(true);
sameType<InstanceMetadata, Static<typeof protocol.InstanceMetadata>>(true);
sameType<InstanceLoad, Static<typeof protocol.InstanceLoad>>(true);
sameType<ServiceSummary, Static<typeof protocol.ServiceSummary>>(true);
sameType<ServiceEvent, protocol.ServiceWatchEvent>(true);
type Flag = { on: boolean };
// Realtime: topics, their messages and history, presence, tokens.
sameType<Topic, Static<typeof protocol.Topic>>(true);
sameType<TopicMessage, Static<typeof protocol.TopicMessage>>(true);
sameType<TopicMessage<Flag>['data'], Flag>(true);
sameType<TopicHistory['messages'], TopicMessage[]>(true);
sameType<Omit<TopicHistory, 'messages'>, Omit<protocol.TopicHistory, 'messages'>>(true);
sameType<PresenceMember, Static<typeof protocol.PresenceMember>>(true);
sameType<RealtimeToken, Static<typeof protocol.RealtimeToken>>(true);
sameType<RealtimeTokenInput, Static<typeof protocol.CreateRealtimeToken>>(true);
// A value type reaches every place a key's value appears.
sameType<ConfigItem<Flag>['value'], Flag>(true);
sameType<ConfigPage<Flag>['items'], ConfigItem<Flag>[]>(true);
sameType<ConfigHistoryPage<Flag>['items'], ConfigHistoryEntry<Flag>[]>(true);
sameType<Extract<ConfigChange<Flag>, { type: 'put' }>['prev_value'], Flag | null>(true);
sameType<Extract<ConfigChange<Flag>, { type: 'resync' }>['items'], ConfigItem<Flag>[]>(true);
// What a registration takes: the wire body, with the health check's defaulted fields optional.
type Extends<A, B> = [A] extends [B] ? true : false;
const assignable = <A, B>(proof: Extends<A, B>) => proof;
assignable<protocol.RegisterInstance, RegisterInstanceInput>(true);
assignable<RegisterInstanceInput, Omit<protocol.RegisterInstance, 'health_check'>>(true);
assignable<protocol.HealthCheck, HealthCheckSpec>(true);
assignable<{ type: 'tcp' }, HealthCheckSpec>(true);
sameType<Required<HealthCheckSpec>['interval_ms'], protocol.HealthCheck['interval_ms']>(true);

const root = new URL('../../../', import.meta.url);

test('the SDK knows exactly the task states of the server’s schema, in its order', () => {
  assert.equal(TASK_STATES, protocol.TASK_STATES);
  assert.deepEqual(protocol.Task.properties.state.enum, [...TASK_STATES]);
});

test('every code of the catalogue and every client-side code is documented, none twice', () => {
  const doc = readFileSync(new URL('docs/errors.md', root), 'utf8');
  for (const code of Object.keys(protocol.ERROR_CATALOGUE)) {
    assert.match(doc, new RegExp(`^\\|\\s*\`${code}\`\\s*\\|`, 'm'), `${code} in docs/errors.md`);
  }
  const clientSection = doc.slice(doc.indexOf('Client-side codes of the SDK'));
  for (const code of CLIENT_ERROR_CODES) {
    assert.ok(clientSection.includes(`\`${code}\``), `${code} among the client-side codes`);
    assert.ok(!protocol.isErrorCode(code), `${code} is not also a server code`);
  }
});

describe('what the server says is what the SDK types', () => {
  let server: TestServer;
  let document: {
    components: { schemas: Record<string, { properties: Record<string, { enum?: unknown }> }> };
  };
  before(async () => {
    server = await startTestServer();
    document = (await (await fetch(`${server.url}/openapi.json`)).json()) as typeof document;
  });
  after(() => server?.stop());

  test('the OpenAPI document lists the protocol’s task states and agent statuses', () => {
    const { Task: task, Agent: agent } = document.components.schemas;
    assert.deepEqual(task?.properties.state?.enum, [...protocol.TASK_STATES]);
    assert.deepEqual(agent?.properties.status?.enum, [...protocol.AGENT_STATUSES]);
  });

  test('an error answered by the server carries a catalogued code', async () => {
    const client = new Orchestra({ url: server.url, apiKey: 'ork_not_a_key' });
    const err = await client.whoami().then(
      () => assert.fail('a bad key was accepted'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OrchestraError);
    assert.ok(protocol.isErrorCode(err.code), `${err.code} is catalogued`);
  });
});

test('a code newer than the SDK reaches the caller unchanged', async () => {
  // A server of a later release, with a code this SDK's catalogue does not have.
  const newer = createServer((_req, res) => {
    res.writeHead(409, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        success: false,
        error: {
          code: 'SOME_FUTURE_CODE',
          message: 'Added after this SDK was built',
          timestamp: new Date().toISOString(),
          request_id: 'req_1',
          service: 'orchestra',
        },
      }),
    );
  });
  await new Promise<void>((resolve) => newer.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = newer.address() as AddressInfo;
    const client = new Orchestra({ url: `http://127.0.0.1:${port}`, apiKey: 'ork_x' });
    const err = await client.whoami().then(
      () => assert.fail('the error was swallowed'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OrchestraError);
    assert.equal(err.status, 409);
    assert.equal(String(err.code), 'SOME_FUTURE_CODE');
  } finally {
    newer.close();
  }
});
