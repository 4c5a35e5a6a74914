import { ENV_PATTERN, SERVICE_NAME_PATTERN } from '@orchestra/protocol';
import { ApiError } from '../platform/errors.ts';

/**
 * Topic names, patterns and where each topic's history lives in the event log.
 * docs/protocol.md, "Topics", is the contract.
 */
export const TOPIC_MAX_LENGTH = 200;
const MAX_SEGMENTS = 16;
const SEGMENT = /^[A-Za-z0-9_\-:@=+]+$/;

/** For request schemas; the segment count and reserved names are checked by `parseTopic`. */
export const TOPIC_PATTERN = '^[A-Za-z0-9_\\-:@=+]+(\\.[A-Za-z0-9_\\-:@=+]+)*$';
export const TOPIC_OR_PATTERN_PATTERN =
  '^([A-Za-z0-9_\\-:@=+]+|\\*)(\\.([A-Za-z0-9_\\-:@=+]+|\\*))*(\\.>)?$|^>$';

const ENV = new RegExp(ENV_PATTERN);
const SERVICE_NAME = new RegExp(SERVICE_NAME_PATTERN);

/**
 * First segments the server publishes under; clients can read them but not publish. Each
 * module declares its own namespaces (`topics` in its declaration); the server reserves them
 * here at start. `system` is realtime's own.
 */
const RESERVED = new Set(['system']);
/** Namespaces that are one topic per tenant (`agents`, `tool-calls`): its event-log stream. */
const TENANT_WIDE = new Set<string>();

/**
 * Reserves namespaces that modules publish under (idempotent). A tenant-wide one is a
 * single topic whose messages are the tenant's event-log stream `<name>:<tenant>`.
 */
export function reserveTopicNamespaces(
  namespaces: Iterable<{ name: string; tenantWide?: boolean | undefined }>,
): void {
  for (const { name, tenantWide } of namespaces) {
    RESERVED.add(name);
    if (tenantWide === true) TENANT_WIDE.add(name);
  }
}

/** The event-log stream of a tenant-wide topic. */
export const tenantWideStream = (name: string, tenantId: string) => `${name}:${tenantId}`;

/** The tenant-wide topic whose stream `stream` is, if it is one. */
export function tenantWideTopicOf(stream: string, tenantId: string): string | undefined {
  const at = stream.indexOf(':');
  const name = stream.slice(0, at);
  return at > 0 && TENANT_WIDE.has(name) && stream === tenantWideStream(name, tenantId)
    ? name
    : undefined;
}

export type Topic =
  | { kind: 'user'; name: string }
  | { kind: 'task'; name: string; id: string }
  | { kind: 'session'; name: string; id: string }
  /** The one topic of a tenant-wide namespace (`agents`, `tool-calls`). */
  | { kind: 'tenant'; name: string }
  /** Changes of the config keys of one environment (relayed from the KV by the leader). */
  | { kind: 'config'; name: string; env: string }
  /** Membership changes of one service in the registry. */
  | { kind: 'service'; name: string; service: string }
  /** Reserved for later features: nothing is published there yet. */
  | { kind: 'reserved'; name: string };

function invalid(field: string, message: string): ApiError {
  return new ApiError('VALIDATION_FAILED', `${field}: ${message}`, {
    details: { fields: [{ field, message }] },
  });
}

/** Parses a topic name (not a pattern); throws VALIDATION_FAILED naming `field`. */
export function parseTopic(name: string, field = 'topic'): Topic {
  if (name.length === 0 || name.length > TOPIC_MAX_LENGTH) {
    throw invalid(field, `must be 1 to ${TOPIC_MAX_LENGTH} characters`);
  }
  const segments = name.split('.');
  if (segments.length > MAX_SEGMENTS)
    throw invalid(field, `has more than ${MAX_SEGMENTS} segments`);
  for (const s of segments) {
    if (!SEGMENT.test(s)) {
      throw invalid(
        field,
        'must be segments of A-Z a-z 0-9 _ - : @ = + separated by dots (patterns are not allowed here)',
      );
    }
  }
  const [first, second] = segments;
  if (first === undefined || !RESERVED.has(first)) return { kind: 'user', name };
  if (first === 'tasks' && second !== undefined && segments.length === 2)
    return { kind: 'task', name, id: second };
  if (first === 'sessions' && second !== undefined && segments.length === 2)
    return { kind: 'session', name, id: second };
  if (TENANT_WIDE.has(first) && segments.length === 1) return { kind: 'tenant', name };
  if (first === 'config' && second !== undefined && segments.length === 2 && ENV.test(second))
    return { kind: 'config', name, env: second };
  if (first === 'services' && second !== undefined) {
    const service = segments.slice(1).join('.');
    if (SERVICE_NAME.test(service)) return { kind: 'service', name, service };
  }
  return { kind: 'reserved', name };
}

/** A topic pattern: `*` matches one segment, a last `>` one or more. */
export interface TopicPattern {
  source: string;
  segments: string[];
  tail: boolean;
}

export function isPattern(text: string): boolean {
  return text.split('.').some((s) => s === '*' || s === '>');
}

export function parsePattern(text: string, field = 'topic'): TopicPattern {
  if (text.length === 0 || text.length > TOPIC_MAX_LENGTH) {
    throw invalid(field, `must be 1 to ${TOPIC_MAX_LENGTH} characters`);
  }
  const segments = text.split('.');
  if (segments.length > MAX_SEGMENTS)
    throw invalid(field, `has more than ${MAX_SEGMENTS} segments`);
  const tail = segments.at(-1) === '>';
  if (tail) segments.pop();
  for (const s of segments) {
    if (s !== '*' && !SEGMENT.test(s)) {
      throw invalid(
        field,
        "must be segments of A-Z a-z 0-9 _ - : @ = + or '*' separated by dots, optionally ending in '.>'",
      );
    }
  }
  return { source: text, segments, tail };
}

export function matches(pattern: TopicPattern, topic: string): boolean {
  const parts = topic.split('.');
  const n = pattern.segments.length;
  if (pattern.tail ? parts.length <= n : parts.length !== n) return false;
  for (let i = 0; i < n; i++) {
    const s = pattern.segments[i];
    if (s !== '*' && s !== parts[i]) return false;
  }
  return true;
}

export const configStream = (tenantId: string, env: string) => `config:${tenantId}:${env}`;
export const serviceStream = (tenantId: string, service: string) =>
  `services:${tenantId}:${service}`;

/** The event-log stream holding a topic's messages. */
export function topicStream(tenantId: string, topic: Topic): string {
  switch (topic.kind) {
    case 'task':
      return `task:${topic.id}`;
    case 'session':
      return `session:${topic.id}`;
    case 'tenant':
      return tenantWideStream(topic.name, tenantId);
    case 'config':
      return configStream(tenantId, topic.env);
    case 'service':
      return serviceStream(tenantId, topic.service);
    default:
      return `topic:${tenantId}:${topic.name}`;
  }
}

/** How much history a topic keeps. */
export interface HistoryLimit {
  maxMessages: number;
  maxAgeMs: number;
}

/**
 * The history bounds of topics, from `ORCHESTRA_TOPIC_HISTORY` rules (first match wins)
 * and the defaults. Task and session topics are bounded only by the event log's retention.
 */
export class HistoryRules {
  readonly #rules: { pattern: TopicPattern; limit: HistoryLimit }[];
  readonly #fallback: HistoryLimit;
  readonly #retentionMs: number;

  constructor(options: {
    rules: string | undefined;
    maxMessages: number;
    maxAgeMs: number;
    retentionMs: number;
  }) {
    this.#retentionMs = options.retentionMs;
    this.#fallback = {
      maxMessages: options.maxMessages,
      maxAgeMs: Math.min(options.maxAgeMs, options.retentionMs),
    };
    this.#rules = HistoryRules.parse(options.rules ?? '').map((r) => ({
      pattern: r.pattern,
      limit: { maxMessages: r.maxMessages, maxAgeMs: Math.min(r.maxAgeMs, options.retentionMs) },
    }));
  }

  /** Parses `pattern=max_messages/max_age_ms,…`; throws an Error naming the bad rule. */
  static parse(text: string): { pattern: TopicPattern; maxMessages: number; maxAgeMs: number }[] {
    if (text.trim() === '') return [];
    return text.split(',').map((raw) => {
      const rule = raw.trim();
      const match = /^([^=]+)=(\d{1,9})\/(\d{1,12})$/.exec(rule);
      if (!match) throw new Error(`"${rule}" is not pattern=max_messages/max_age_ms`);
      const [, pattern = '', count = '', age = ''] = match;
      return {
        pattern: parsePattern(pattern),
        maxMessages: Math.max(1, Number(count)),
        maxAgeMs: Math.max(1000, Number(age)),
      };
    });
  }

  /** The bounds of a topic, or undefined when only the event log's retention applies. */
  limitOf(topic: Topic): HistoryLimit | undefined {
    if (topic.kind === 'task' || topic.kind === 'session') return undefined;
    for (const rule of this.#rules) if (matches(rule.pattern, topic.name)) return rule.limit;
    return this.#fallback;
  }

  get retentionMs(): number {
    return this.#retentionMs;
  }
}
