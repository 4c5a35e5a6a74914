import { CLIENT_OPTIONS, client, dash, print } from '../common.ts';
import { command, single } from '../spec.ts';
import { formatTable } from '../table.ts';

export const group = single({
  name: 'whoami',
  summary: 'Show the tenant and role of the credential in use',
  command: command({
    name: 'whoami',
    description: 'Shows the tenant, role and credential the API key or token authenticates as.',
    common: CLIENT_OPTIONS,
    async run({ values }) {
      const me = await client(values).whoami();
      print(values.json, me, () => {
        const c = me.credential;
        const credential =
          c.type === 'api_key'
            ? `API key ${c.id} (${c.name}, ${c.prefix}…)`
            : `JWT for ${c.subject}${c.issuer ? ` from ${c.issuer}` : ''}`;
        return formatTable(
          ['TENANT', 'ROLE', 'CREDENTIAL', 'EXPIRES'],
          [[`${me.tenant.id} (${me.tenant.name})`, me.role, credential, dash(c.expires_at)]],
        );
      });
      return 0;
    },
  }),
});
