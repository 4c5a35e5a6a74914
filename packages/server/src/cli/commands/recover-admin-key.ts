import { SYSTEM_TENANT_ID } from '@orchestra/protocol/constants';
import { loadSettingsWithFlags, STORE_FLAGS } from '../settings-flags.ts';
import { command, print, single, UsageError } from '../spec.ts';

export const group = single({
  name: 'recover-admin-key',
  summary: 'Create an admin key directly in the store (lost keys)',
  command: command({
    name: 'recover-admin-key',
    description:
      'Creates a new admin key directly in the store, without a server or a credential: for when every admin key of a tenant is lost, revoked or expired. It needs what the server needs to open the store (the data directory, or the PostgreSQL URL), so run it where the server runs. Safe while the server runs.',
    options: {
      tenant: {
        type: 'string',
        value: 'ID',
        default: SYSTEM_TENANT_ID,
        description: `Tenant to add the key to (default: ${SYSTEM_TENANT_ID}, the system tenant)`,
      },
      ...STORE_FLAGS,
    },
    common: {
      json: { type: 'boolean', default: false, description: 'Print JSON' },
    },
    async run({ values }) {
      const settings = await loadSettingsWithFlags(values);
      // The store and the identity service: what this command is for, loaded only now.
      const [
        { openStore },
        { migrations },
        { createLogger },
        { IdentityService, TenantLimitStore },
        { JwtVerifier },
        { limitDefaults },
        { ApiError },
      ] = await Promise.all([
        import('../../store/store.ts'),
        import('../../modules.ts'),
        import('../../server.ts'),
        import('../../gateway/index.ts'),
        import('../../platform/jwt.ts'),
        import('../../platform/tenant-limits.ts'),
        import('../../platform/errors.ts'),
      ]);
      const tenantId = values.tenant;
      const store = await openStore({
        databaseUrl: settings.databaseUrl,
        dataDir: settings.dataDir,
        poolSize: 1,
        preparedStatements: settings.databasePreparedStatements,
      });
      try {
        await store.migrate(migrations);
        const log = createLogger({ ...settings, logLevel: 'warn' }, process.stderr);
        const identity = new IdentityService({
          store,
          jwt: new JwtVerifier(settings),
          log,
          limits: new TenantLimitStore({ store, defaults: limitDefaults(settings), ttlMs: 0 }),
        });
        let key: Awaited<
          ReturnType<InstanceType<typeof IdentityService>['createRecoveryAdminKey']>
        >;
        try {
          key = await identity.createRecoveryAdminKey(tenantId);
        } catch (err) {
          if (err instanceof ApiError) throw new UsageError(err.message);
          throw err;
        }
        print(values.json, key, () =>
          [
            `Created admin key ${key.id} in tenant ${tenantId} (${store.location}):`,
            '',
            `  ${key.secret}`,
            '',
            'Store it now: it is not shown again. Revoke keys you no longer trust with "orchestra keys revoke".',
          ].join('\n'),
        );
      } finally {
        await store.close();
      }
      return 0;
    },
  }),
});
