import { OrchestraError } from '@orchestra/sdk';
import { type FormEvent, useState } from 'react';
import { Link } from '../router.tsx';
import {
  buildInput,
  fieldOfServerMessage,
  formable,
  initialValues,
  type JsonSchema,
  SchemaForm,
} from '../schema-form.tsx';
import { describeError, useSession } from '../session.tsx';
import {
  type Tool,
  type ToolCall,
  type ToolInvocation,
  type ToolResult,
  toolsApi,
} from '../tools-api.ts';
import { Alert, Badge, Json, TextField, Time } from '../ui.tsx';

/** A tool's result in MCP's content format: text, images, links and embedded resources. */
export function ToolResultView({ result }: { result: ToolResult }) {
  return (
    <div className="tool-result">
      {result.is_error && (
        <p className="error-box" role="alert">
          The tool reports an error.
        </p>
      )}
      {result.content.map((item, index) => {
        const key = `${index}-${item.type}`;
        switch (item.type) {
          case 'text':
            return (
              <figure className="json-figure" aria-label="Text result" key={key}>
                <pre className="json">{item.text}</pre>
              </figure>
            );
          case 'image':
            return (
              <img
                key={key}
                className="result-image"
                alt={`Result ${index + 1} (${item.mimeType})`}
                src={`data:${item.mimeType};base64,${item.data}`}
              />
            );
          case 'audio':
            // The console's content policy plays no inline media: say what came.
            return (
              <p key={key} className="muted">
                Audio ({item.mimeType}, {Math.floor((item.data.length * 3) / 4)} bytes)
              </p>
            );
          case 'resource_link':
            return (
              <p key={key}>
                Link: <code>{item.uri}</code> {item.name}
                {item.description ? ` – ${item.description}` : ''}
              </p>
            );
          case 'resource':
            return <Json key={key} value={item.resource} label="Embedded resource" />;
          default:
            return <Json key={key} value={item} label="Other content" />;
        }
      })}
      {result.structured_content !== undefined && (
        <>
          <h3>Structured content</h3>
          <Json value={result.structured_content} label="Structured result" />
        </>
      )}
    </div>
  );
}

/** The audit record of a call, as a list of facts and its arguments. */
export function CallRecord({ call }: { call: ToolCall }) {
  return (
    <div className="call-record">
      <dl className="facts">
        <dt>Call</dt>
        <dd>
          <code>{call.id}</code>
        </dd>
        <dt>Status</dt>
        <dd>
          <Badge value={call.status} />
          {call.status === 'succeeded' && call.is_error && (
            <span className="badge badge-error">tool error</span>
          )}
        </dd>
        {call.error && (
          <>
            <dt>Error</dt>
            <dd>
              <code>{call.error.code}</code> {call.error.message}
            </dd>
          </>
        )}
        <dt>Tool</dt>
        <dd>
          {call.tool} v{call.tool_version} · {call.source} · {call.upstream}
        </dd>
        <dt>Caller</dt>
        <dd>{callerOf(call.caller)}</dd>
        <dt>Attempts</dt>
        <dd>{call.attempts}</dd>
        <dt>Duration</dt>
        <dd>{call.duration_ms === null ? '–' : `${call.duration_ms} ms`}</dd>
        <dt>Result size</dt>
        <dd>{call.result_bytes === null ? '–' : `${call.result_bytes} bytes`}</dd>
        {call.approval_id && (
          <>
            <dt>Approval</dt>
            <dd>
              <code>{call.approval_id}</code>
            </dd>
          </>
        )}
        <dt>Started</dt>
        <dd>
          <Time iso={call.created_at} />
        </dd>
        <dt>Finished</dt>
        <dd>
          <Time iso={call.finished_at} />
        </dd>
      </dl>
      <Json value={call.arguments} label="Arguments" />
    </div>
  );
}

/** Who made a call: the credential and role, and the agent, task or session it was for. */
export function callerOf(caller: ToolCall['caller']): string {
  return [
    `${caller.credential} (${caller.role})`,
    caller.agent_id && `agent ${caller.agent_id}`,
    caller.task_id && `task ${caller.task_id}`,
    caller.session_id && `session ${caller.session_id}`,
  ]
    .filter(Boolean)
    .join(' · ');
}

/** "Try it": the arguments as a form built from the input schema (or JSON), then the call. */
export function TryTool({ tool }: { tool: Tool }) {
  const { client } = useSession();
  const schema = tool.input_schema as JsonSchema;
  const canForm = formable(schema);
  const [asJson, setAsJson] = useState(!canForm);
  const [values, setValues] = useState(() => (canForm ? initialValues(schema) : {}));
  const [raw, setRaw] = useState('{}');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<ToolInvocation | undefined>();

  const run = async (event: FormEvent) => {
    event.preventDefault();
    setErrors({});
    setProblem(undefined);
    let args: Record<string, unknown>;
    if (!asJson) {
      const built = buildInput(schema, values);
      if ('errors' in built) {
        setErrors(built.errors);
        setProblem('Some fields need attention.');
        return;
      }
      args = built.input;
    } else {
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw);
      } catch {
        setErrors({ arguments: 'Enter valid JSON.' });
        return;
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        setErrors({ arguments: 'The arguments are a JSON object.' });
        return;
      }
      args = parsed as Record<string, unknown>;
    }
    setBusy(true);
    setOutcome(undefined);
    try {
      setOutcome(await toolsApi(client).invoke(tool.id, args));
    } catch (err) {
      // Arguments the schema refuses name the property in their message.
      const onProperty =
        err instanceof OrchestraError && !asJson ? fieldOfServerMessage(err.message) : undefined;
      if (onProperty && schema.properties?.[onProperty.field]) {
        setErrors({ [onProperty.field]: onProperty.message });
      }
      setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="panel" aria-labelledby="try-title">
      <h2 id="try-title">Try it</h2>
      <form className="form" onSubmit={run} noValidate aria-label="Try the tool">
        <fieldset>
          <legend>
            Arguments
            {canForm && (
              <button type="button" className="link" onClick={() => setAsJson((v) => !v)}>
                {asJson ? 'edit as a form' : 'edit as JSON'}
              </button>
            )}
          </legend>
          {!asJson ? (
            <SchemaForm
              schema={schema}
              values={values}
              errors={errors}
              onChange={(name, value) => setValues((v) => ({ ...v, [name]: value }))}
            />
          ) : (
            <TextField
              id="try-arguments"
              label="Arguments (JSON)"
              rows={6}
              spellCheck={false}
              value={raw}
              onChange={setRaw}
              error={errors.arguments}
              help={
                canForm
                  ? undefined
                  : 'The form cannot show this schema as fields: write the arguments as JSON.'
              }
            />
          )}
        </fieldset>
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Calling…' : 'Call the tool'}
          </button>
        </div>
      </form>
      {outcome && (
        <div className="try-outcome" role="status" aria-live="polite">
          {outcome.call.status === 'awaiting_approval' ? (
            <p className="notice">
              The call is awaiting approval: a policy requires an operator to approve it.{' '}
              <Link to="/tool-approvals">Go to the approvals</Link>
            </p>
          ) : null}
          {outcome.result && (
            <>
              <h3>Result</h3>
              <ToolResultView result={outcome.result} />
            </>
          )}
          <h3>Call record</h3>
          <CallRecord call={outcome.call} />
        </div>
      )}
    </section>
  );
}
