import type { Caller, Principal, Role } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { grantOf, type RealtimeGrant } from './tokens.ts';
import {
  isPattern,
  matches,
  parsePattern,
  parseTopic,
  type Topic,
  type TopicPattern,
} from './topics.ts';

/** Who is on a realtime route or connection: a credential, or a realtime token. */
export interface RealtimeIdentity {
  tenantId: string;
  role: Role | 'token';
  /** Shown in presence. */
  clientId: string;
  /** Rate limits are counted per credential. */
  rateKey: string;
  principal?: Principal;
  grant?: RealtimeGrant;
}

export function identityOfPrincipal(principal: Principal): RealtimeIdentity {
  const clientId =
    principal.type === 'api_key' ? `key:${principal.keyId}` : `jwt:${principal.subject}`;
  return {
    tenantId: principal.tenant.id,
    role: principal.role,
    clientId,
    rateKey:
      principal.type === 'api_key'
        ? principal.keyId
        : `jwt:${principal.tenant.id}:${principal.subject}`,
    principal,
  };
}

/** Who the request pipeline admitted: a credential, or a realtime token. */
export function identityOfCaller(caller: Caller): RealtimeIdentity {
  return caller.principal !== undefined
    ? identityOfPrincipal(caller.principal)
    : identityOfGrant(grantOf(caller.token));
}

export function identityOfGrant(grant: RealtimeGrant): RealtimeIdentity {
  return {
    tenantId: grant.tenantId,
    role: 'token',
    clientId: grant.clientId ?? `token:${grant.id}`,
    rateKey: `token:${grant.id}`,
    grant,
  };
}

/** Agents (and the services that register with agent keys) read config and membership too. */
const AGENT_READABLE = new Set<Topic['kind']>(['user', 'config', 'service']);

function denied(message: string): ApiError {
  return new ApiError('PERMISSION_DENIED', message);
}

function grantCovers(grant: RealtimeGrant, topic: string): boolean {
  for (const entry of grant.topics) {
    if (entry === topic) return true;
    if (isPattern(entry) && matches(parsePattern(entry), topic)) return true;
  }
  return false;
}

/** Throws PERMISSION_DENIED unless the identity may read (subscribe, history, presence) `topic`. */
export function assertCanRead(identity: RealtimeIdentity, topic: Topic): void {
  if (identity.grant) {
    if (!grantCovers(identity.grant, topic.name))
      throw denied(`The realtime token does not grant the topic ${topic.name}`);
    return;
  }
  if (identity.role === 'agent' && !AGENT_READABLE.has(topic.kind))
    throw denied('An agent credential reads user, config and service topics only');
}

/** Throws PERMISSION_DENIED unless the identity may subscribe to the pattern. */
export function assertCanReadPattern(identity: RealtimeIdentity, pattern: TopicPattern): void {
  if (identity.grant) {
    if (!identity.grant.topics.includes(pattern.source))
      throw denied(`The realtime token does not grant the pattern ${pattern.source}`);
    return;
  }
  if (identity.role === 'agent') {
    const first = pattern.segments[0];
    if (
      first === undefined ||
      first === '*' ||
      (parseTopic(first).kind !== 'user' && first !== 'config' && first !== 'services')
    )
      throw denied(
        'An agent credential reads user, config and service topics only: start the pattern with a user topic segment, config or services',
      );
  }
}

/** Throws PERMISSION_DENIED unless the identity may publish to `topic`. */
export function assertCanPublish(identity: RealtimeIdentity, topic: Topic): void {
  if (topic.kind !== 'user')
    throw denied(`${topic.name} is a system topic: only the server publishes there`);
  if (identity.grant) {
    if (!identity.grant.publish) throw denied('The realtime token does not allow publishing');
    assertCanRead(identity, topic);
    return;
  }
  if (identity.role === 'viewer') throw denied('A viewer credential cannot publish');
}
