import Type from 'typebox';
import type { SettingSpec, SettingsCheck, SettingsOf } from '../platform/settings.ts';

/** The agents module's settings (its slice of the node's settings). */
export const AGENTS_SETTINGS = {
  agentHeartbeatIntervalMs: {
    env: 'ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 100, maximum: 600_000 }),
    allowed: 'an integer from 100 to 600000',
    description: 'How often connected agents must send a heartbeat; the server tells them.',
    default: 5000,
  },
  agentHeartbeatTimeoutMs: {
    env: 'ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 200, maximum: 3_600_000 }),
    allowed: 'an integer from 200 to 3600000, more than the heartbeat interval',
    description:
      'How long after its last heartbeat an agent keeps its tasks (its lease). Then it counts as gone and its tasks are dispatched again; an agent that reconnects sooner resumes them.',
    default: 15000,
  },
  agentRetentionMs: {
    env: 'ORCHESTRA_AGENT_RETENTION_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 31_536_000_000 }),
    allowed: 'an integer from 0 (keep forever) to 31536000000 (a year)',
    description:
      'How long an agent that is offline (or in error) stays listed. Then it is forgotten, as by DELETE /v1/agents/{id}; it comes back when it connects again. 0 keeps agents forever.',
    default: 7 * 24 * 3_600_000,
  },
  agentMaxFrameBytes: {
    env: 'ORCHESTRA_AGENT_MAX_FRAME_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 104857600 }),
    allowed: 'an integer from 1024 to 104857600',
    description: 'Largest frame an agent may send; a larger one closes its connection with 1009.',
    default: 1048576,
  },
  agentMaxToolCalls: {
    env: 'ORCHESTRA_AGENT_MAX_TOOL_CALLS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 10_000 }),
    allowed: 'an integer from 1 to 10000',
    description:
      'Tool calls (tool.call frames) one agent connection may have in flight at once; one more is answered at once with AGENT_TOOL_CALLS_LIMITED, without being made.',
    default: 64,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof AGENTS_SETTINGS> {}
}

/** A heartbeat must be able to go missing once without ending the lease. */
export const checkAgentsSettings: SettingsCheck = (values) =>
  values.agentHeartbeatTimeoutMs <= values.agentHeartbeatIntervalMs
    ? [
        `${AGENTS_SETTINGS.agentHeartbeatTimeoutMs.env} must be more than ${AGENTS_SETTINGS.agentHeartbeatIntervalMs.env} (${values.agentHeartbeatIntervalMs}), or one missed heartbeat would end an agent's lease`,
      ]
    : [];
