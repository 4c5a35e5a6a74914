import { defineModule } from '../module.ts';
import { EmbeddedKv } from './embedded.ts';
import { EtcdKv } from './etcd.ts';
import type { KvStore } from './kv.ts';
import { kvMigrations } from './migrations.ts';
import { KV_SETTINGS } from './settings.ts';
import { KvTopicRelay, type RelayRoute } from './topic-relay.ts';

export interface KvInterface {
  kv: KvStore;
  relay: KvTopicRelay;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    kv: KvInterface;
  }
}

/**
 * The key-value store of config and the registry (etcd, or tables in the relational store),
 * and the relay that turns its changes into topic messages, for the modules that declare a
 * relayed topic namespace.
 */
export const kvModule = defineModule({
  name: 'kv',
  needs: ['events', 'gateway'],
  // The relay runs on the node that holds the registry's claim.
  later: ['registry'],
  migrations: kvMigrations,
  tables: ['kv_entries', 'kv_leases', 'kv_relay_cursors'],
  settings: KV_SETTINGS,
  jobs: ['kv-lease-expiry', 'kv-compaction', 'kv-watch-poll', 'topic-relay'],
  create({ store, bus, log, jobs, settings, need, later, declarations }, lifecycle) {
    const { events } = need('events');
    const kv: KvStore = settings.etcdEndpoints
      ? new EtcdKv({
          endpoints: settings.etcdEndpoints.split(',').map((e) => e.trim()),
          prefix: settings.etcdPrefix,
        })
      : new EmbeddedKv({
          jobs,
          store,
          events,
          bus,
          log,
          retainedRevisions: settings.kvRetainedRevisions,
        });
    lifecycle.add('config store', () => kv.close());
    if (kv instanceof EmbeddedKv) kv.start();
    log.info({ backend: kv.backend }, 'config store ready');
    const registry = later('registry');
    const relay = new KvTopicRelay({
      kv,
      events,
      store,
      claim: (key) => registry().nodes.claim(key),
      log,
      tenants: need('gateway').tenantIds,
      routes: declarations.flatMap((d) =>
        (d.topics ?? []).flatMap((t): RelayRoute[] => (t.relay ? [t.relay] : [])),
      ),
      jobs,
    });
    return { kv, relay };
  },
  start: ({ relay }) => relay.start(),
  stop: ({ relay }) => relay.stop(),
});
