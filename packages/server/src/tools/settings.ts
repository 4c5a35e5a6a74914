import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The tools module's settings (its slice of the node's settings). */
export const TOOLS_SETTINGS = {
  toolResultMaxBytes: {
    env: 'ORCHESTRA_TOOL_RESULT_MAX_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 100 * 1024 * 1024 }),
    allowed: 'an integer from 1024 to 104857600',
    description:
      'The largest answer a tool’s source may give, in bytes; a larger one fails the call (TOOL_RESULT_TOO_LARGE).',
    default: 4 * 1024 * 1024,
  },
  toolBulkheadLimit: {
    env: 'ORCHESTRA_TOOL_BULKHEAD_LIMIT',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 10_000 }),
    allowed: 'an integer from 1 to 10000',
    description:
      'Tool calls one node runs at once against one upstream (an MCP server or HTTP host); more wait in its queue.',
    default: 64,
  },
  toolBulkheadQueue: {
    env: 'ORCHESTRA_TOOL_BULKHEAD_QUEUE',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000 }),
    allowed: 'an integer from 0 to 100000',
    description:
      'Tool calls that wait for one upstream beyond the bulkhead limit; more fail at once (TOOL_UPSTREAM_BUSY).',
    default: 256,
  },
  toolBreakerFailures: {
    env: 'ORCHESTRA_TOOL_BREAKER_FAILURES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 1000 }),
    allowed: 'an integer from 1 to 1000',
    description:
      'Consecutive failed calls (timeouts, errors of the upstream) that open an upstream’s circuit breaker.',
    default: 5,
  },
  toolBreakerHalfOpenMs: {
    env: 'ORCHESTRA_TOOL_BREAKER_HALF_OPEN_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 100, maximum: 3_600_000 }),
    allowed: 'an integer from 100 to 3600000',
    description:
      'How long an open breaker fails calls fast before it lets one call through to test the upstream.',
    default: 10_000,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof TOOLS_SETTINGS> {}
}
