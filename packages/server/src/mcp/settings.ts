import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The MCP hub's settings (its slice of the node's settings). */
export const MCP_SETTINGS = {
  mcpReconcileMs: {
    env: 'ORCHESTRA_MCP_RECONCILE_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 100, maximum: 600_000 }),
    allowed: 'an integer from 100 to 600000',
    description:
      'How often each node looks for MCP servers to run (whose claim is free, such as those of a node that died) and lets go of removed ones. Changes through the API apply at once on the node that takes them.',
    default: 5000,
  },
  mcpSandbox: {
    env: 'ORCHESTRA_MCP_SANDBOX',
    kind: 'string',
    schema: Type.Enum(['auto', 'off']),
    allowed: '`auto` or `off`',
    description:
      '`auto`: stdio MCP servers run in bubblewrap where it works (no network unless the server allows it, only its own directory writable); `off`: they run as plain processes.',
    default: 'auto',
  },
  mcpHealthIntervalMs: {
    env: 'ORCHESTRA_MCP_HEALTH_INTERVAL_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 3_600_000 }),
    allowed: 'an integer from 0 (no checks) to 3600000',
    description:
      'How often the hub pings each MCP server it runs; a failed ping marks it degraded and reconnects.',
    default: 30_000,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof MCP_SETTINGS> {}
}
