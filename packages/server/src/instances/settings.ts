import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The instances module's settings (its slice of the node's settings). */
export const INSTANCES_SETTINGS = {
  instancePortRange: {
    env: 'ORCHESTRA_INSTANCE_PORT_RANGE',
    kind: 'string',
    schema: Type.String({ pattern: '^[0-9]{1,5}-[0-9]{1,5}$' }),
    allowed: 'FIRST-LAST, two port numbers from 1024 to 65535',
    description:
      'The numbers instances’ declared ports get (each unique in the cluster, recorded in the store).',
    default: '20000-29999',
  },
  instanceSourceRoots: {
    env: 'ORCHESTRA_INSTANCE_SOURCE_ROOTS',
    kind: 'string',
    schema: Type.String({ pattern: '^(/[^:]*)?(:/[^:]*)*$' }),
    allowed: 'absolute directory paths separated by ":", or empty',
    description:
      'Directories of this machine that workspace templates may copy or clone a base from (`base.type` `directory` or `git`); nothing else on the disk can be read that way. Empty: none.',
    default: '',
  },
  instanceStopGraceMs: {
    env: 'ORCHESTRA_INSTANCE_STOP_GRACE_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 600_000 }),
    allowed: 'an integer from 0 to 600000',
    description:
      'How long a stopped instance’s service has after SIGTERM before it is killed (SIGKILL).',
    default: 10_000,
  },
  instanceUploadMaxBytes: {
    env: 'ORCHESTRA_INSTANCE_UPLOAD_MAX_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 68_719_476_736 }),
    allowed: 'an integer from 1024 to 68719476736 (64 GiB)',
    description:
      'Largest file written, or tar archive uploaded, in one request to an instance’s files API, and largest base uploaded to /v1/workspace-uploads; larger ones get 413.',
    default: 268_435_456,
  },
  instanceSweepMs: {
    env: 'ORCHESTRA_INSTANCE_SWEEP_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 100, maximum: 600_000 }),
    allowed: 'an integer from 100 to 600000',
    description:
      'How often each node stops its idle instances, deletes those past their TTL and records their last activity.',
    default: 5000,
  },
  instancePlacement: {
    env: 'ORCHESTRA_INSTANCE_PLACEMENT',
    kind: 'string',
    schema: Type.Enum(['least_connections', 'resource', 'round_robin', 'local']),
    allowed: '`least_connections`, `resource`, `round_robin` or `local`',
    description:
      'Which node of a cluster a new instance goes to, among the live nodes that have its driver: `least_connections`, the one running the fewest instances; `resource`, the one whose CPU or memory is least used; `round_robin`, each in turn; `local`, the node that took the request. A batch goes to one node. On SQLite (one node) every instance is local.',
    default: 'least_connections',
  },
  instanceLostAfterMs: {
    env: 'ORCHESTRA_INSTANCE_LOST_AFTER_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 3_600_000 }),
    allowed: 'an integer from 0 to 3600000',
    description:
      'In a cluster, how long a node must be gone from the registry (its lease ended: about 10 s without renewing) before its instances become `lost` and, if their template says `restart_elsewhere`, start on another node. Longer rides out a node’s short trouble.',
    default: 20_000,
  },
  dockerHost: {
    env: 'ORCHESTRA_DOCKER_HOST',
    kind: 'string',
    schema: Type.String({ pattern: '^((unix://)?/.*)?$', maxLength: 107 }),
    allowed: 'the path of a Unix socket (`/var/run/docker.sock` or `unix:///…`), or empty',
    description:
      'The Docker engine of this machine that runs instances of `driver: docker` templates. It must be local: instances’ directories are bind-mounted into their containers. Empty: no docker driver on this node (such templates are refused).',
    default: '',
  },
  instanceLimits: {
    env: 'ORCHESTRA_INSTANCE_LIMITS',
    kind: 'string',
    schema: Type.Enum(['auto', 'cgroup', 'prlimit', 'off']),
    allowed: '`auto`, `cgroup`, `prlimit` or `off`',
    description:
      'How instances’ CPU, memory and processes are limited to their template’s `resources`: `auto` uses cgroups (v2, else v1) where the server may make them, else prlimit (memory only); `cgroup` or `prlimit` asks for one (falling back as `auto` does when it cannot); `off` limits nothing. Each instance reports what it got (`resource_limits`).',
    default: 'auto',
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof INSTANCES_SETTINGS> {}
}

/** `20000-29999` → [20000, 29999]. */
export function parsePortRange(text: string): [number, number] {
  const [first = 0, last = 0] = text.split('-').map(Number);
  return [first, last];
}

/** The port range must be FIRST-LAST within 1024-65535. */
export function checkInstancesSettings(values: { instancePortRange: string }): string[] {
  const [first, last] = parsePortRange(values.instancePortRange);
  if (first < 1024 || last > 65_535 || first > last) {
    return [
      `ORCHESTRA_INSTANCE_PORT_RANGE must be FIRST-LAST with 1024 <= FIRST <= LAST <= 65535, got "${values.instancePortRange}"`,
    ];
  }
  return [];
}
