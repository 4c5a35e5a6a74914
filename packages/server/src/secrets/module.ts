import { defineModule } from '../module.ts';
import type { Job } from '../platform/jobs.ts';
import { secretsMigrations } from './migrations.ts';
import { secretRoutes } from './routes.ts';
import { SecretService } from './secret-service.ts';

/** How often the rotation job looks for secrets sealed with a previous key. */
const RESEAL_INTERVAL_MS = 60_000;
/** The leader claim that picks the one node of a cluster that re-seals. */
const RESEAL_LEADER_KEY = 'cluster/secrets-reseal';

/** What other modules use: a tenant's secret values, to fill in configs. */
export interface SecretsInterface {
  /** Value of the tenant's named secret. Throws the catalogued SECRET_NOT_FOUND error. */
  resolve(tenantId: string, name: string): Promise<string>;
  /**
   * Replaces every `${secret:NAME}` reference in `text`; returns the expanded text and the
   * values used, so callers can redact them. Unknown names throw SECRET_NOT_FOUND naming the
   * secret (name only).
   */
  expand(tenantId: string, text: string): Promise<{ text: string; values: string[] }>;
  /** The module's own: its service (routes) and its rotation job. */
  service: SecretService;
  reseal: Job;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    secrets: SecretsInterface;
  }
}

/** Named secrets of each tenant, encrypted at rest with the node's keyring (decision 0016). */
export const secretsModule = defineModule({
  name: 'secrets',
  // The gateway has the tenants' limits. The rotation job runs on the node holding a
  // registry claim; the registry starts first.
  needs: ['gateway', 'registry'],
  migrations: secretsMigrations,
  tables: ['secrets'],
  errors: ['SECRET_NOT_FOUND', 'SECRET_UNREADABLE'],
  jobs: ['secrets-reseal'],
  create({ store, secrets: box, log, jobs, need }) {
    const service = new SecretService({ store, box, log, limits: need('gateway').limits });
    const { nodes } = need('registry');
    const reseal = jobs.job({
      name: 'secrets-reseal',
      intervalMs: RESEAL_INTERVAL_MS,
      runAtStart: true,
      leader: {
        key: RESEAL_LEADER_KEY,
        claim: (key) => nodes.claim(key),
        role: 'seals stored secrets again after a key rotation',
      },
      run: async (signal) => {
        const report = await service.resealAll(signal);
        if (report.resealed > 0 || report.unreadable > 0) {
          log.info(
            { ...report, key_id: box.keyId },
            'sealed stored secrets again with the current key',
          );
        }
      },
    });
    return {
      resolve: (tenantId, name) => service.resolve(tenantId, name),
      expand: (tenantId, text) => service.expand(tenantId, text),
      service,
      reseal,
    };
  },
  routes: (self) => async (app) => {
    await app.register(secretRoutes, { secrets: self.service });
  },
  start: (self) => self.reseal.start(),
  stop: (self) => self.reseal.stop(),
});
