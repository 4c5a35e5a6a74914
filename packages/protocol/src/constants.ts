// `@orchestra/protocol/constants`: the wire contract's plain values (codes, states, names,
// bounds, patterns), without TypeBox, so that the SDK and the CLI can load them at run time
// cheaply. The schemas (`@orchestra/protocol`) are built from them.

export {
  CLOSE_CODES,
  type CloseCodeName,
  ERROR_CATALOGUE,
  type ErrorCode,
  isErrorCode,
} from './errors.ts';
export {
  AGENT_STATUSES,
  type AgentStatus,
  INSTANCE_STATES,
  isRetryableState,
  isTerminalState,
  stateEventType,
  TASK_STATES,
  type TaskState,
  TERMINAL_EVENT_TYPES,
  TOOL_APPROVAL_STATUSES,
  TOOL_CALL_STATUSES,
  TOOL_STATES,
} from './states.ts';

/**
 * The capability of Orchestra's hosted runners: tasks of `llm` templates need it, and only
 * hosted runners offer it.
 */
export const HOSTED_CAPABILITY = 'orchestra:llm';

/** Template kinds: `agent` (your agents run its tasks) or `llm` (Orchestra runs them). */
export const TEMPLATE_KINDS = ['agent', 'llm'] as const;

/** The version of the envelope every WebSocket frame carries in `header.version`. */
export const PROTOCOL_VERSION = 1;

/** The envelope's `header.type`. */
export const MESSAGE_TYPES = ['REQUEST', 'RESPONSE', 'EVENT', 'STREAM'] as const;
export type MessageType = (typeof MESSAGE_TYPES)[number];

/** What a credential may do (README, "Roles"). */
export const ROLES = ['admin', 'operator', 'agent', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

/** The tenant created at first start, whose admins manage the others. */
export const SYSTEM_TENANT_ID = 'default';

/**
 * The strategies of docs/load-balancing.md: how a task chooses an agent and a service
 * resolution an instance.
 */
export const STRATEGY_NAMES = [
  'round_robin',
  'weighted',
  'least_connections',
  'latency',
  'resource',
  'consistent_hash',
] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

/** What happens to a task submitted while another task of the session is unfinished. */
export const MULTITASK_STRATEGIES = ['reject', 'enqueue', 'interrupt'] as const;
export type MultitaskStrategy = (typeof MULTITASK_STRATEGIES)[number];

/** The longest window `GET /v1/stats` summarizes, in minutes. */
export const MAX_STATS_MINUTES = 60;

/** Versions (of templates) are stored as 32-bit integers. */
export const MAX_VERSION = 2_147_483_647;

/** Most tasks in one `POST /v1/tasks/batch`. */
export const MAX_BATCH_TASKS = 500;

/** An agent's id, chosen by the agent. */
export const AGENT_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$';

/** A config environment's name. */
export const ENV_PATTERN = '^[a-z0-9][a-z0-9_-]{0,31}$';

/** A registered service's name: also the second part of the topic `services.<name>`. */
export const SERVICE_NAME_PATTERN = '^[a-z0-9][a-z0-9_.-]{0,62}$';

/** A service instance's id, chosen by whoever registers it. */
export const INSTANCE_ID_PATTERN = '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$';

/** The longest topic name or pattern. */
export const TOPIC_MAX_LENGTH = 200;

/** A topic name; its segment count and reserved names are checked by the server. */
export const TOPIC_PATTERN = '^[A-Za-z0-9_\\-:@=+]+(\\.[A-Za-z0-9_\\-:@=+]+)*$';

/** A topic name, or a pattern with `*` for one segment and a final `>` for the rest. */
export const TOPIC_OR_PATTERN_PATTERN =
  '^([A-Za-z0-9_\\-:@=+]+|\\*)(\\.([A-Za-z0-9_\\-:@=+]+|\\*))*(\\.>)?$|^>$';

/** A realtime message's `event` name. */
export const EVENT_NAME_PATTERN = '^[A-Za-z0-9._-]{1,100}$';

/** The most bytes of presence `info`, as JSON. */
export const MAX_INFO_BYTES = 1024;
