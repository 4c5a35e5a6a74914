import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { defineModule } from '../module.ts';
import { JwtVerifier } from '../platform/jwt.ts';
import { limitDefaults } from '../platform/tenant-limits.ts';
import { ADMIN_KEY_FILE } from '../version.ts';
import { IdentityService } from './identity-service.ts';
import { gatewayMigrations } from './migrations.ts';
import { gatewayRoutes } from './routes.ts';
import { TenantLimitStore } from './tenant-limit-store.ts';

/** What the gateway offers the other modules: who is calling, and the tenants' limits. */
export interface GatewayInterface {
  identity: IdentityService;
  limits: TenantLimitStore;
  /** The system tenant, made by the first start. */
  systemTenantId: string;
  /** Every tenant's id, for leaders that work per tenant. */
  tenantIds: () => Promise<string[]>;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    gateway: GatewayInterface;
  }
}

/** Tenants, API keys and authentication; makes the system tenant and its key at first start. */
export const gatewayModule = defineModule({
  name: 'gateway',
  migrations: gatewayMigrations,
  tables: ['tenants', 'api_keys'],
  errors: [
    'INVALID_API_KEY',
    'API_KEY_REVOKED',
    'API_KEY_EXPIRED',
    'TENANT_NOT_FOUND',
    'API_KEY_NOT_FOUND',
    'TENANT_ALREADY_EXISTS',
    'LAST_ADMIN_KEY',
  ],
  async create({ store, settings, log, onAdminKey }) {
    // A tenant's limits are cached as long as its keys: a change reaches other nodes
    // within the same TTL as a revocation.
    const limits = new TenantLimitStore({
      store,
      defaults: limitDefaults(settings),
      ttlMs: settings.authCacheTtlMs,
    });
    const identity = new IdentityService({
      store,
      jwt: new JwtVerifier(settings),
      log,
      keyCacheTtlMs: settings.authCacheTtlMs,
      limits,
    });
    const boot = await identity.bootstrap();
    const keyFile = join(settings.dataDir, ADMIN_KEY_FILE);
    if (boot.adminKey) {
      log.info(
        { tenant_id: boot.tenant.id, key_id: boot.adminKey.id },
        'created the system tenant and its admin key',
      );
      // Saved whether or not anyone listens (`?.` would skip evaluating the arguments),
      // and handed over before anything else can fail: the key exists from now on.
      const file = saveAdminKey(keyFile, boot.adminKey.secret, log);
      onAdminKey?.({ ...boot.adminKey, file });
    } else if (existsSync(keyFile)) {
      log.info({ file: keyFile }, 'the first-start admin key is in the data directory');
    }
    return {
      identity,
      limits,
      systemTenantId: boot.tenant.id,
      tenantIds: () => identity.tenantIds(),
    };
  },
  routes:
    ({ identity }) =>
    async (app) => {
      await app.register(gatewayRoutes, { identity });
    },
});

/** Writes the key readable by the owner only; returns the path, or undefined on failure. */
function saveAdminKey(file: string, secret: string, log: Logger): string | undefined {
  try {
    writeFileSync(file, `${secret}\n`, { mode: 0o600 });
    chmodSync(file, 0o600); // the mode above is ignored when the file already existed
    return file;
  } catch (err) {
    log.error({ err, file }, 'could not save the admin key file; the key is printed only');
    return undefined;
  }
}
