import { type FormEvent, useState } from 'react';
import { type CatalogEntry, type CreateMcpServer, mcpApi } from '../mcp-api.ts';
import { navigate } from '../router.tsx';
import {
  fieldOfServerMessage,
  formable,
  initialValues,
  type JsonSchema,
  readObjectInput,
  SchemaOrJson,
} from '../schema-form.tsx';
import { describeError, fieldErrorsOf, useSession } from '../session.tsx';
import { Alert, ErrorBox, Loading, PageHeader, SelectField, TextField, useAsync } from '../ui.tsx';
import { ToolsTabs } from './tools.tsx';

// Adding an MCP server: from the catalog (a form built from the entry's config schema) or by
// hand. Either way the console then opens the server's page, where it becomes ready.

const SECRET_HINT =
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
  'Values may refer to secrets as ${secret:NAME}; they are resolved when it starts.';

const openServer = (name: string) => navigate(`/mcp-servers/${encodeURIComponent(name)}`);

function InstallForm({ entry, onCancel }: { entry: CatalogEntry; onCancel: () => void }) {
  const { client } = useSession();
  const schema = entry.config_schema as JsonSchema | null;
  const hasConfig = schema !== null && Object.keys(schema.properties ?? {}).length > 0;
  const asForm = formable(schema);
  const [values, setValues] = useState(() => (asForm ? initialValues(schema) : {}));
  const [raw, setRaw] = useState('{}');
  const [name, setName] = useState('');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  const install = async (event: FormEvent) => {
    event.preventDefault();
    setErrors({});
    setProblem(undefined);
    let config: Record<string, unknown> | undefined;
    if (hasConfig && schema) {
      const read = readObjectInput(schema, asForm, values, raw, 'config');
      if ('errors' in read) {
        setErrors(read.errors);
        setProblem('Some fields need attention.');
        return;
      }
      config = read.input;
    }
    setBusy(true);
    try {
      const installed = await mcpApi(client).install(entry.id, {
        ...(name.trim() ? { name: name.trim() } : {}),
        ...(config ? { config } : {}),
      });
      openServer(installed.name);
    } catch (err) {
      const onProperty = asForm ? fieldOfServerMessage(describeError(err)) : undefined;
      if (onProperty && schema?.properties?.[onProperty.field]) {
        setErrors({ [onProperty.field]: onProperty.message });
      }
      const name = fieldErrorsOf(err)?.name;
      if (name) setErrors((e) => ({ ...e, name }));
      setProblem(describeError(err));
      setBusy(false);
    }
  };

  return (
    <section className="panel" aria-labelledby="install-title">
      <h2 id="install-title">Install {entry.title}</h2>
      <form className="form" onSubmit={install} noValidate aria-label={`Install ${entry.id}`}>
        <TextField
          id="install-name"
          label="Name (optional)"
          value={name}
          onChange={setName}
          placeholder={entry.id}
          maxLength={63}
          error={errors.name}
          help={`Its tools are named <name>__<tool>. Default: ${entry.id}.`}
        />
        {hasConfig && (
          <fieldset>
            <legend>Configuration</legend>
            <SchemaOrJson
              schema={schema}
              asForm={asForm}
              values={values}
              errors={errors}
              onChange={(field, value) => setValues((v) => ({ ...v, [field]: value }))}
              raw={raw}
              onRawChange={setRaw}
              json={{
                id: 'install-config',
                label: 'Configuration (JSON)',
                field: 'config',
                help: "The form cannot show this entry's schema as fields: write it as JSON.",
              }}
            />
          </fieldset>
        )}
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Installing…' : 'Install'}
          </button>
          <button type="button" onClick={onCancel} disabled={busy}>
            Cancel
          </button>
        </div>
      </form>
    </section>
  );
}

export function McpCatalogPage() {
  const { client, who } = useSession();
  const catalog = useAsync(() => mcpApi(client).catalog(), [client]);
  const [chosen, setChosen] = useState<CatalogEntry | undefined>();
  return (
    <>
      <PageHeader title="Add an MCP server from the catalog" />
      <ToolsTabs />
      {catalog.error !== undefined && <ErrorBox error={catalog.error} onRetry={catalog.reload} />}
      {catalog.data === undefined ? (
        catalog.error === undefined && <Loading what="the catalog" />
      ) : (
        <ul className="catalog" aria-label="Catalog">
          {catalog.data.items.map((entry) => (
            <li key={entry.id} className="panel" data-entry={entry.id}>
              <h2>{entry.title}</h2>
              <p className="muted">
                <code>{entry.id}</code> · {entry.server.transport}
                {entry.server.package ? ` · npm ${entry.server.package}` : ''}
                {entry.origin === 'tenant' ? ' · added by your tenant' : ''}
              </p>
              {entry.description && <p className="prose">{entry.description}</p>}
              {entry.homepage && (
                <p>
                  <a href={entry.homepage} rel="noreferrer noopener" target="_blank">
                    Its homepage
                  </a>
                </p>
              )}
              {who.role === 'admin' && chosen?.id !== entry.id && (
                <button
                  type="button"
                  className="primary"
                  aria-label={`Install ${entry.title}`}
                  onClick={() => setChosen(entry)}
                >
                  Install
                </button>
              )}
              {chosen?.id === entry.id && (
                <InstallForm entry={entry} onCancel={() => setChosen(undefined)} />
              )}
            </li>
          ))}
        </ul>
      )}
    </>
  );
}

interface Row {
  name: string;
  value: string;
}

/** Name/value rows (environment variables, headers); an empty row is left out. */
function Rows(props: {
  id: string;
  legend: string;
  what: string;
  rows: Row[];
  onChange: (rows: Row[]) => void;
  error?: string | undefined;
}) {
  const { rows, onChange } = props;
  const set = (index: number, row: Row) => onChange(rows.map((r, i) => (i === index ? row : r)));
  return (
    <fieldset aria-describedby={`${props.id}-help`}>
      <legend>{props.legend}</legend>
      <small id={`${props.id}-help`} className="muted">
        {SECRET_HINT}
      </small>
      {rows.map((row, index) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: rows have no identity but their place
        <div className="row-fields" key={index}>
          <TextField
            id={`${props.id}-name-${index}`}
            label={`${props.what} ${index + 1} name`}
            value={row.name}
            onChange={(name) => set(index, { ...row, name })}
            maxLength={128}
          />
          <TextField
            id={`${props.id}-value-${index}`}
            label={`${props.what} ${index + 1} value`}
            value={row.value}
            onChange={(value) => set(index, { ...row, value })}
            maxLength={8192}
          />
          <button
            type="button"
            className="link"
            aria-label={`Remove ${props.what.toLowerCase()} ${index + 1}`}
            onClick={() => onChange(rows.filter((_, i) => i !== index))}
          >
            Remove
          </button>
        </div>
      ))}
      {props.error && <small className="field-error">{props.error}</small>}
      <button type="button" onClick={() => onChange([...rows, { name: '', value: '' }])}>
        Add {props.what.toLowerCase()}
      </button>
    </fieldset>
  );
}

const recordOf = (rows: Row[]) =>
  Object.fromEntries(rows.filter((r) => r.name.trim()).map((r) => [r.name.trim(), r.value]));

const TRANSPORTS = [
  { value: 'stdio', label: 'stdio: Orchestra runs a command' },
  { value: 'streamable_http', label: 'Streamable HTTP: a URL' },
  { value: 'sse', label: 'HTTP+SSE (legacy): a URL' },
] as const;

export function McpNewServerPage() {
  const { client } = useSession();
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [transport, setTransport] = useState<CreateMcpServer['transport']>('stdio');
  const [command, setCommand] = useState('');
  const [args, setArgs] = useState('');
  const [url, setUrl] = useState('');
  const [env, setEnv] = useState<Row[]>([]);
  const [headers, setHeaders] = useState<Row[]>([]);
  const [network, setNetwork] = useState(false);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const stdio = transport === 'stdio';

  const save = async (event: FormEvent) => {
    event.preventDefault();
    setErrors({});
    setProblem(undefined);
    const missing: Record<string, string> = {};
    if (!name.trim()) missing.name = 'Required.';
    if (stdio && !command.trim()) missing.command = 'Required.';
    if (!stdio && !url.trim()) missing.url = 'Required.';
    if (Object.keys(missing).length > 0) {
      setErrors(missing);
      setProblem('Some fields need attention.');
      return;
    }
    const argList = args
      .split('\n')
      .map((a) => a.trim())
      .filter(Boolean);
    const input: CreateMcpServer = {
      name: name.trim(),
      transport,
      ...(description.trim() ? { description: description.trim() } : {}),
      ...(stdio
        ? {
            command: command.trim(),
            ...(argList.length ? { args: argList } : {}),
            ...(env.some((r) => r.name.trim()) ? { env: recordOf(env) } : {}),
            network,
          }
        : {
            url: url.trim(),
            ...(headers.some((r) => r.name.trim()) ? { headers: recordOf(headers) } : {}),
          }),
    };
    setBusy(true);
    try {
      const created = await mcpApi(client).create(input);
      openServer(created.name);
    } catch (err) {
      setErrors(fieldErrorsOf(err) ?? {});
      setProblem(describeError(err));
      setBusy(false);
    }
  };

  return (
    <>
      <PageHeader title="Add an MCP server" />
      <ToolsTabs />
      <form className="form panel" onSubmit={save} noValidate aria-label="Add an MCP server">
        <TextField
          id="server-name"
          label="Name"
          value={name}
          onChange={setName}
          maxLength={63}
          error={errors.name}
          help='Lowercase letters, digits, "-" and single "_". Its tools are named <name>__<tool>.'
        />
        <TextField
          id="server-description"
          label="Description (optional)"
          value={description}
          onChange={setDescription}
          maxLength={2000}
          error={errors.description}
        />
        <SelectField
          id="server-transport"
          label="Transport"
          value={transport}
          options={TRANSPORTS}
          onChange={setTransport}
        />
        {stdio ? (
          <>
            <TextField
              id="server-command"
              label="Command"
              value={command}
              onChange={setCommand}
              maxLength={1024}
              spellCheck={false}
              error={errors.command}
              help="The program to run, e.g. npx or an absolute path."
            />
            <TextField
              id="server-args"
              label="Arguments"
              rows={4}
              value={args}
              onChange={setArgs}
              spellCheck={false}
              error={errors.args}
              help="One argument a line."
            />
            <Rows
              id="server-env"
              legend="Environment"
              what="Variable"
              rows={env}
              onChange={setEnv}
              error={errors.env}
            />
            <div className="field field-inline">
              <label htmlFor="server-network">Network</label>
              <input
                id="server-network"
                type="checkbox"
                checked={network}
                aria-describedby="server-network-help"
                onChange={(e) => setNetwork(e.target.checked)}
              />
              <small id="server-network-help" className="muted">
                When it runs sandboxed, whether it may use the network.
              </small>
            </div>
          </>
        ) : (
          <>
            <TextField
              id="server-url"
              label="URL"
              value={url}
              onChange={setUrl}
              maxLength={2048}
              spellCheck={false}
              placeholder="https://…"
              error={errors.url}
            />
            <Rows
              id="server-headers"
              legend="Headers"
              what="Header"
              rows={headers}
              onChange={setHeaders}
              error={errors.headers}
            />
          </>
        )}
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Adding…' : 'Add the server'}
          </button>
        </div>
      </form>
    </>
  );
}
