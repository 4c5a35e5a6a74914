import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';
import { MCP_GATEWAY_DEFAULTS } from './gateway-routes.ts';

/** The MCP gateway's settings (its slice of the node's settings). */
export const MCP_GATEWAY_SETTINGS = {
  mcpMaxSessions: {
    env: 'ORCHESTRA_MCP_MAX_SESSIONS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
    allowed: 'an integer from 1 to 1000000',
    description:
      'Stateful MCP sessions (the 2025-11-25 generation) one node keeps at /mcp; at the bound the least recently used idle one is closed.',
    default: MCP_GATEWAY_DEFAULTS.maxSessions,
  },
  mcpMaxSessionsPerTenant: {
    env: 'ORCHESTRA_MCP_MAX_SESSIONS_PER_TENANT',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
    allowed: 'an integer from 1 to 1000000',
    description: 'Stateful MCP sessions one tenant may keep on one node.',
    default: MCP_GATEWAY_DEFAULTS.maxSessionsPerTenant,
  },
  mcpSessionIdleMs: {
    env: 'ORCHESTRA_MCP_SESSION_IDLE_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1000, maximum: 86_400_000 }),
    allowed: 'an integer from 1000 to 86400000',
    description: 'A stateful MCP session without a request for this long is closed.',
    default: MCP_GATEWAY_DEFAULTS.sessionIdleMs,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof MCP_GATEWAY_SETTINGS> {}
}
