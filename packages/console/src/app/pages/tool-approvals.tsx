import { useState } from 'react';
import { useTopic } from '../live.ts';
import { Link } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import {
  TOOL_CALLS_TOPIC,
  type ToolApproval,
  type ToolApprovalDecision,
  toolsApi,
} from '../tools-api.ts';
import {
  Alert,
  Badge,
  Empty,
  ErrorBox,
  Json,
  Loading,
  PageHeader,
  Time,
  useAsync,
  useThrottled,
} from '../ui.tsx';
import { CallRecord, callerOf, ToolResultView } from './tool-try.tsx';
import { ToolsTabs } from './tools.tsx';

/** One waiting call: what it would run, and the decision. */
function WaitingApproval(props: {
  approval: ToolApproval;
  onDecided: (decision: ToolApprovalDecision) => void;
}) {
  const { client } = useSession();
  const a = props.approval;
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | undefined>();
  const decide = async (approve: boolean) => {
    setBusy(true);
    setProblem(undefined);
    try {
      const api = toolsApi(client).approvals;
      // Approving names the hash of the arguments shown here: the server runs exactly those.
      props.onDecided(
        approve
          ? await api.approve(a.id, a.arguments_hash)
          : await api.reject(a.id, reason.trim() || undefined),
      );
    } catch (err) {
      setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  const titleId = `approval-${a.id}`;
  return (
    <li className="panel approval" aria-labelledby={titleId} data-approval={a.id}>
      <h3 id={titleId}>
        <Link to={`/tools/${encodeURIComponent(a.tool)}`}>{a.tool}</Link>{' '}
        <span className="muted">v{a.tool_version}</span>
      </h3>
      <dl className="facts">
        <dt>Caller</dt>
        <dd>{callerOf(a.caller)}</dd>
        <dt>Policy</dt>
        <dd>
          <Link to={`/tool-policies/${encodeURIComponent(a.policy)}`}>{a.policy}</Link>
        </dd>
        <dt>Asked</dt>
        <dd>
          <Time iso={a.created_at} />
        </dd>
        <dt>Deadline</dt>
        <dd>
          <Time iso={a.deadline} />
        </dd>
        <dt>Arguments hash</dt>
        <dd>
          <code className="hash">{a.arguments_hash}</code>
        </dd>
      </dl>
      <Json value={a.arguments} label={`Arguments of ${a.tool}`} />
      <div className="actions">
        <button
          type="button"
          className="primary"
          disabled={busy}
          onClick={() => decide(true)}
          aria-label={`Approve ${a.tool} (${a.id})`}
        >
          Approve
        </button>
        <input
          aria-label={`Reason to reject ${a.tool} (${a.id})`}
          placeholder="Reason (optional)"
          maxLength={1000}
          value={reason}
          onChange={(e) => setReason(e.target.value)}
        />
        <button
          type="button"
          className="danger"
          disabled={busy}
          onClick={() => decide(false)}
          aria-label={`Reject ${a.tool} (${a.id})`}
        >
          Reject
        </button>
      </div>
      <Alert message={problem} />
    </li>
  );
}

/** Calls waiting for an operator's approval, live, and the latest decisions. */
export function ToolApprovalsPage() {
  const { client, topics, canWrite } = useSession();
  const waiting = useAsync(
    () => toolsApi(client).approvals.list({ status: 'pending', limit: 50 }),
    [client],
  );
  const recent = useAsync(() => toolsApi(client).approvals.list({ limit: 25 }), [client]);
  const [decision, setDecision] = useState<ToolApprovalDecision | undefined>();
  const reload = () => {
    waiting.reload();
    recent.reload();
  };
  // Live: every call of the tenant that waits, runs or ends changes what is shown.
  const throttled = useThrottled(reload, 300);
  useTopic(topics, canWrite ? TOOL_CALLS_TOPIC : undefined, throttled, throttled);

  if (!canWrite) {
    return (
      <>
        <PageHeader title="Tool approvals" />
        <ToolsTabs />
        <Empty>Operators and admins decide on tool calls; your role reads the call log.</Empty>
      </>
    );
  }
  const decided = recent.data?.items.filter((a) => a.status !== 'pending') ?? [];
  return (
    <>
      <PageHeader title="Tool approvals" />
      <ToolsTabs />
      {decision && (
        <section className="panel notice-panel" aria-labelledby="decision-title">
          <h2 id="decision-title">
            {decision.approval.status === 'approved' ? 'Approved' : 'Rejected'}:{' '}
            {decision.call.tool}
          </h2>
          {decision.result && <ToolResultView result={decision.result} />}
          <CallRecord call={decision.call} />
          <div className="actions">
            <button type="button" onClick={() => setDecision(undefined)}>
              Done
            </button>
          </div>
        </section>
      )}
      <section aria-labelledby="waiting-title">
        <h2 id="waiting-title">Waiting</h2>
        {waiting.error !== undefined && <ErrorBox error={waiting.error} onRetry={waiting.reload} />}
        {waiting.data === undefined ? (
          waiting.error === undefined && <Loading what="waiting calls" />
        ) : waiting.data.items.length === 0 ? (
          <Empty>No call is waiting for an approval.</Empty>
        ) : (
          <ul className="approvals" aria-label="Waiting calls">
            {waiting.data.items.map((a) => (
              <WaitingApproval
                key={a.id}
                approval={a}
                onDecided={(d) => {
                  setDecision(d);
                  reload();
                }}
              />
            ))}
          </ul>
        )}
      </section>
      <section aria-labelledby="decided-title">
        <h2 id="decided-title">Decided</h2>
        {recent.error !== undefined && <ErrorBox error={recent.error} onRetry={recent.reload} />}
        {recent.data === undefined ? (
          recent.error === undefined && <Loading what="decisions" />
        ) : decided.length === 0 ? (
          <Empty>No decisions yet.</Empty>
        ) : (
          <div className="table-wrap">
            <table aria-label="Decided calls">
              <thead>
                <tr>
                  <th scope="col">Tool</th>
                  <th scope="col">Status</th>
                  <th scope="col">Caller</th>
                  <th scope="col">Decided by</th>
                  <th scope="col">Reason</th>
                  <th scope="col">Decided</th>
                </tr>
              </thead>
              <tbody>
                {decided.map((a) => (
                  <tr key={a.id} data-approval={a.id}>
                    <td>
                      <Link to={`/tool-calls?tool=${encodeURIComponent(a.tool)}`}>{a.tool}</Link>
                    </td>
                    <td>
                      <Badge value={a.status} />
                    </td>
                    <td>{callerOf(a.caller)}</td>
                    <td>{a.decided_by ?? (a.status === 'expired' ? 'deadline' : '–')}</td>
                    <td>{a.reason ?? '–'}</td>
                    <td>
                      <Time iso={a.decided_at ?? a.deadline} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </>
  );
}
