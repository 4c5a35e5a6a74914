import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The kv module's settings (its slice of the node's settings). */
export const KV_SETTINGS = {
  etcdEndpoints: {
    env: 'ORCHESTRA_ETCD_ENDPOINTS',
    kind: 'string',
    schema: Type.String({
      pattern: '^\\s*https?://[^,\\s]+\\s*(,\\s*https?://[^,\\s]+\\s*)*$',
    }),
    allowed: 'comma-separated http:// or https:// URLs, such as http://10.0.0.5:2379',
    description:
      'etcd v3 endpoints for the config center and service registry. Unset: they live in the relational store.',
  },
  etcdPrefix: {
    env: 'ORCHESTRA_ETCD_PREFIX',
    kind: 'string',
    schema: Type.String({ pattern: '^/[A-Za-z0-9_./-]{0,126}/$' }),
    allowed: 'a path that starts and ends with /, such as /orchestra/',
    description:
      'Where in etcd Orchestra keeps its keys; several installations can share one etcd.',
    default: '/orchestra/',
  },
  kvRetainedRevisions: {
    env: 'ORCHESTRA_KV_RETAINED_REVISIONS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 100_000_000 }),
    allowed: 'an integer from 1 to 100000000',
    description:
      'Without etcd: how many of a tenant’s newest config and registry revisions a watch can resume from (older ones resync). With etcd, its own compaction decides.',
    default: 10_000,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof KV_SETTINGS> {}
}
