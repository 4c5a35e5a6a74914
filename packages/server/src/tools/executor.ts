import type { Tool, ToolApproval, ToolCall, ToolInvocation, ToolResult } from '@orchestra/protocol';
import { isTerminalState } from '@orchestra/protocol';
import {
  BrokenCircuitError,
  type BulkheadPolicy,
  BulkheadRejectedError,
  bulkhead,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
} from 'cockatiel';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError, type ErrorCode } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { type AgentTaskRunner, callAgentTool } from './agent-source.ts';
import type { ApprovalService } from './approval-service.ts';
import { recordedArguments, type ToolCallLog } from './call-log.ts';
import { isRetrySafe } from './definition.ts';
import { callHttpTool, type SecretExpander } from './http-source.ts';
import type { PolicyDecision, PolicyService, ToolCallerContext } from './policy-service.ts';
import { errorResult, ToolFailure } from './tool-error.ts';
import type { ToolService } from './tool-service.ts';
import type { WorkspaceToolCaller } from './workspace-tools.ts';

/** Calls an MCP server's tool; the MCP hub provides it. */
/** What a source says of a call under way: MCP's `notifications/progress`, without the token. */
export interface ToolProgress {
  progress: number;
  total?: number;
  message?: string;
}

export type McpToolCaller = (options: {
  tenantId: string;
  server: string;
  tool: string;
  args: Record<string, unknown>;
  signal: AbortSignal;
  /** Called for each progress notification of the upstream, when the caller wants them. */
  onProgress?: ((progress: ToolProgress) => void) | undefined;
}) => Promise<ToolResult>;

export interface ExecutorSettings {
  /** Largest result a source may return, in bytes. */
  maxResultBytes: number;
  /** Calls in flight per upstream on this node, and calls queued behind them. */
  bulkheadLimit: number;
  bulkheadQueue: number;
  /** Consecutive failures that open an upstream's breaker, and how long it stays open. */
  breakerFailures: number;
  breakerHalfOpenAfterMs: number;
}

interface Upstream {
  breaker: CircuitBreakerPolicy;
  bulkhead: BulkheadPolicy;
}

const MAX_UPSTREAMS = 10_000;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

function resultBytes(result: ToolResult): number {
  return Buffer.byteLength(JSON.stringify(result));
}

/** Replaces each secret value in the texts of a result (an upstream may echo a header). */
function redactResult(result: ToolResult, secrets: readonly string[]): ToolResult {
  if (secrets.length === 0) return result;
  let json = JSON.stringify(result);
  let changed = false;
  for (const secret of secrets) {
    if (secret.length === 0) continue;
    const encoded = JSON.stringify(secret).slice(1, -1);
    if (json.includes(encoded)) {
      json = json.split(encoded).join('[redacted]');
      changed = true;
    }
  }
  return changed ? (JSON.parse(json) as ToolResult) : result;
}

/**
 * Runs tool calls: checks the arguments against the tool's schema, asks the policy, resolves
 * secrets, and calls the source with the tool's timeout, retrying tools that are safe to
 * retry with backoff and jitter, behind a circuit breaker and a bulkhead per upstream.
 * Every call, refused or not, is recorded (see `ToolCallLog`).
 */
export class ToolExecutor {
  readonly #tools: ToolService;
  readonly #policies: PolicyService;
  readonly #log: ToolCallLog;
  readonly #approvals: ApprovalService;
  readonly #logger: Logger;
  readonly #settings: ExecutorSettings;
  readonly #expand: () => SecretExpander;
  readonly #mcp: () => McpToolCaller;
  readonly #tasks: () => AgentTaskRunner;
  readonly #workspace: () => WorkspaceToolCaller;
  readonly #upstreams = new Map<string, Upstream>();
  /**
   * Who each running call is made for: an agent tool submits its task in their name, a
   * workspace tool acts in their task's instance.
   */
  readonly #principals = new WeakMap<ToolCall, Principal>();
  readonly #instances = new WeakMap<ToolCall, string>();
  /** Where a call's progress goes, for the sources that report it. */
  readonly #progress = new WeakMap<ToolCall, (progress: ToolProgress) => void>();
  /** Calls running per policy and tool on this node, for `max_concurrency`. */
  readonly #running = new Map<string, number>();
  /** Token buckets per policy, tool and caller on this node, for `rate_limit`. */
  readonly #buckets = new Map<string, { tokens: number; updatedMs: number }>();
  readonly #metrics: {
    calls: Counter<'tool' | 'upstream' | 'status'>;
    seconds: Histogram<'source' | 'upstream'>;
    open: Gauge<'upstream'>;
    inFlight: Gauge<'upstream'>;
  };

  constructor(deps: {
    tools: ToolService;
    policies: PolicyService;
    log: ToolCallLog;
    approvals: ApprovalService;
    logger: Logger;
    registry: Registry;
    settings: ExecutorSettings;
    expandSecrets: () => SecretExpander;
    mcp: () => McpToolCaller;
    tasks: () => AgentTaskRunner;
    workspace: () => WorkspaceToolCaller;
  }) {
    this.#workspace = deps.workspace;
    this.#tools = deps.tools;
    this.#policies = deps.policies;
    this.#log = deps.log;
    this.#approvals = deps.approvals;
    this.#logger = deps.logger;
    this.#settings = deps.settings;
    this.#expand = deps.expandSecrets;
    this.#mcp = deps.mcp;
    this.#tasks = deps.tasks;
    this.#metrics = {
      calls: new Counter({
        name: 'orchestra_tool_calls_total',
        help: 'Tool calls that ended, by tool, upstream (MCP server or HTTP host) and status (succeeded, failed, denied).',
        labelNames: ['tool', 'upstream', 'status'],
        registers: [deps.registry],
      }),
      seconds: new Histogram({
        name: 'orchestra_tool_call_duration_seconds',
        help: 'Time a tool call spent at its source, by source type and upstream.',
        labelNames: ['source', 'upstream'],
        buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        registers: [deps.registry],
      }),
      open: new Gauge({
        name: 'orchestra_tool_upstream_circuit_open',
        help: '1 while the circuit breaker of an upstream is open on this node (calls fail fast).',
        labelNames: ['upstream'],
        registers: [deps.registry],
      }),
      inFlight: new Gauge({
        name: 'orchestra_tool_calls_in_flight',
        help: 'Tool calls running at their source on this node, by upstream.',
        labelNames: ['upstream'],
        registers: [deps.registry],
      }),
    };
  }

  /**
   * Calls tool `ref` for `caller`. A refused call (unknown or unavailable tool, arguments
   * that do not match, a policy or limit that says no) throws the catalogued 4xx error,
   * after recording the refusal. A call that ran resolves to its record and result, also
   * when the source failed: the result is then a tool-level error and the record says why.
   */
  async invoke(
    caller: ToolCallerContext,
    ref: string,
    args: Record<string, unknown>,
    options: {
      signal?: AbortSignal | undefined;
      waitMs?: number | undefined;
      /** Progress the source reports while the call runs (MCP sources on this node). */
      onProgress?: ((progress: ToolProgress) => void) | undefined;
    } = {},
  ): Promise<ToolInvocation> {
    const tenantId = caller.principal.tenant.id;
    const { tool, checkArguments } = await this.#tools.callable(tenantId, ref);
    const started = Date.now();
    const call: ToolCall = {
      id: newId('tc'),
      tenant_id: tenantId,
      tool: tool.name,
      tool_id: tool.id,
      tool_version: tool.version,
      source: tool.source.type,
      upstream: upstreamOf(tool),
      caller: {
        credential: credentialId(caller.principal),
        role: caller.principal.role,
        agent_id: caller.agentId ?? null,
        task_id: caller.taskId ?? null,
        session_id: caller.sessionId ?? null,
      },
      arguments: recordedArguments(args, []),
      status: 'running',
      is_error: false,
      error: null,
      attempts: 0,
      duration_ms: null,
      result_bytes: null,
      approval_id: null,
      created_at: new Date(started).toISOString(),
      finished_at: null,
    };
    if (tool.source.type === 'workspace' && caller.instanceId === undefined) {
      await this.#refuse(
        call,
        'TOOL_NOT_AVAILABLE',
        `"${tool.name}" works only for a task that names an instance (submit the task with "instance"), called by the agent that holds it`,
      );
    }
    const problem = checkArguments(args);
    if (problem !== undefined) {
      await this.#refuse(
        call,
        'TOOL_INVALID_ARGUMENTS',
        `The arguments do not match the input schema of "${tool.name}": ${problem}`,
      );
    }
    const decision = await this.#policies.decide(caller, tool, args);
    if (!decision.allowed)
      await this.#refuse(
        call,
        'TOOL_CALL_DENIED',
        `Not allowed to call "${tool.name}": ${decision.reason}`,
        { policy: decision.policy },
      );
    const release = await this.#admit(call, caller, decision);
    if (decision.allowed && decision.approval !== null) {
      release();
      const approval = await this.#approvals.request(
        call,
        args,
        decision.approval.policy,
        decision.approval.timeoutMs,
      );
      const waitMs = options.waitMs ?? 0;
      if (waitMs > 0) {
        const outcome = await this.#approvals.waitForOutcome(
          tenantId,
          approval.id,
          waitMs,
          options.signal,
        );
        if (outcome !== undefined) return outcome;
      }
      return { call, result: null };
    }
    try {
      this.#principals.set(call, caller.principal);
      if (caller.instanceId !== undefined) this.#instances.set(call, caller.instanceId);
      if (options.onProgress !== undefined) this.#progress.set(call, options.onProgress);
      const result = await this.#execute(tool, args, call, started, options.signal);
      await this.#log.record(call, 'later');
      return { call, result };
    } finally {
      release();
    }
  }

  /**
   * Approves a call waiting for approval `approvalId` (bound to the arguments hashing to
   * `hash`) and runs it now, with the tool's current definition. Resolves to the approval,
   * the call's record and its result.
   */
  async approve(
    principal: ToolCallerContext['principal'],
    approvalId: string,
    hash: string,
    reason: string | undefined,
  ): Promise<{ approval: ToolApproval; call: ToolCall; result: ToolResult | null }> {
    await this.#withdrawIfTaskEnded(principal.tenant.id, approvalId);
    const { approval, args } = await this.#approvals.approve(principal, approvalId, hash, reason);
    const call = await this.#log.get(approval.tenant_id, approval.call_id);
    let result: ToolResult;
    const started = Date.now();
    try {
      const { tool } = await this.#tools.callable(approval.tenant_id, approval.tool);
      call.tool_version = tool.version;
      call.status = 'running';
      await this.#log.update(call, ['awaiting_approval']);
      this.#principals.set(call, principal);
      // A workspace tool acts in the instance of the task that made the call.
      const instanceId =
        call.caller.task_id === null
          ? null
          : await this.#tasks().instanceOf(approval.tenant_id, call.caller.task_id);
      if (typeof instanceId === 'string') this.#instances.set(call, instanceId);
      result = await this.#execute(tool, args, call, started, undefined);
    } catch (err) {
      // The tool went away or is held since the call was made: the call fails, recorded.
      if (!(err instanceof ApiError)) throw err;
      Object.assign(call, {
        status: 'failed',
        is_error: true,
        error: { code: err.code, message: err.message },
        duration_ms: 0,
        finished_at: new Date().toISOString(),
      } satisfies Partial<ToolCall>);
      result = errorResult(err.message);
    }
    // The result first: whoever sees the call ended finds its result.
    await this.#approvals.storeResult(approval.id, result);
    await this.#log.update(call, ['awaiting_approval', 'running']);
    this.#approvals.settled(approval.tenant_id, approval.id);
    return { approval, call, result };
  }

  /**
   * A call made for a task that has ended since (cancelled, timed out…) is for nobody: it is
   * withdrawn rather than run, and approving it fails with TOOL_APPROVAL_NOT_PENDING.
   */
  async #withdrawIfTaskEnded(tenantId: string, approvalId: string): Promise<void> {
    const pending = await this.#approvals.get(tenantId, approvalId);
    if (pending.status !== 'pending') return; // approve says why it cannot
    const call = await this.#log.get(tenantId, pending.call_id);
    if (call.caller.task_id === null) return;
    const state = await this.#tasks().stateOf(tenantId, call.caller.task_id);
    if (state === undefined || !isTerminalState(state)) return;
    const why = `the task ${call.caller.task_id} that made the call has ended (${state})`;
    if (await this.#approvals.withdraw(tenantId, approvalId, why)) {
      throw new ApiError(
        'TOOL_APPROVAL_NOT_PENDING',
        `Tool approval "${approvalId}" is withdrawn: ${why}`,
        {
          details: { status: 'rejected' },
        },
      );
    }
  }

  /** Runs a call that may run, filling in its record's outcome; never rejects for the source. */
  async #execute(
    tool: Tool,
    args: Record<string, unknown>,
    call: ToolCall,
    started: number,
    signal: AbortSignal | undefined,
  ): Promise<ToolResult> {
    const secretValues: string[] = [];
    let result: ToolResult;
    try {
      result = await this.#run(tool, args, call, secretValues, signal);
      call.status = 'succeeded';
      call.is_error = result.is_error;
    } catch (err) {
      const failure = asFailure(err, tool);
      call.status = 'failed';
      call.is_error = true;
      call.error = { code: failure.code, message: failure.message };
      result = errorResult(failure.message);
      if (failure.kind === 'protocol') {
        this.#logger.warn(
          { err: failure.cause ?? failure, tool: tool.name },
          'tool source answered garbage',
        );
      }
    }
    result = redactResult(result, secretValues);
    call.arguments = recordedArguments(args, secretValues);
    if (call.error !== null) call.error.message = redactText(call.error.message, secretValues);
    call.duration_ms = Date.now() - started;
    call.result_bytes = resultBytes(result);
    call.finished_at = new Date().toISOString();
    this.#metrics.calls.inc({ tool: tool.name, upstream: call.upstream, status: call.status });
    return result;
  }

  async #refuse(
    call: ToolCall,
    code: ErrorCode,
    message: string,
    details?: Record<string, unknown>,
  ): Promise<never> {
    call.status = 'denied';
    call.is_error = true;
    call.error = { code, message };
    call.duration_ms = 0;
    call.finished_at = call.created_at;
    await this.#log.record(call, 'later');
    this.#metrics.calls.inc({ tool: call.tool, upstream: call.upstream, status: 'denied' });
    throw new ApiError(code, message, { details: { call_id: call.id, ...details } });
  }

  /** Applies the rate and concurrency limits of the allow policies; resolves to the release. */
  async #admit(
    call: ToolCall,
    caller: ToolCallerContext,
    decision: PolicyDecision,
  ): Promise<() => void> {
    if (!decision.allowed) return () => {};
    const now = Date.now();
    for (const policy of decision.allows) {
      if (policy.rate_limit === null) continue;
      const key = `${policy.id}@${policy.updated_at}|${call.tool}|${call.caller.credential}|${caller.agentId ?? ''}`;
      const capacity = policy.rate_limit.requests;
      const perMs = capacity / (policy.rate_limit.per_seconds * 1000);
      const bucket = this.#buckets.get(key) ?? { tokens: capacity, updatedMs: now };
      bucket.tokens = Math.min(capacity, bucket.tokens + (now - bucket.updatedMs) * perMs);
      bucket.updatedMs = now;
      if (bucket.tokens < 1) {
        this.#buckets.set(key, bucket);
        const retryAfter = Math.ceil((1 - bucket.tokens) / perMs / 1000);
        await this.#refuse(
          call,
          'TOOL_RATE_LIMITED',
          `Policy "${policy.name}" allows ${capacity} calls of "${call.tool}" per ${policy.rate_limit.per_seconds} s; try again in ${retryAfter} s`,
          { retry_after_seconds: retryAfter },
        );
      }
      bucket.tokens -= 1;
      if (this.#buckets.size > 100_000) this.#buckets.clear();
      this.#buckets.set(key, bucket);
    }
    const taken: string[] = [];
    for (const policy of decision.allows) {
      if (policy.max_concurrency === null) continue;
      const key = `${policy.id}|${call.tool}`;
      const running = this.#running.get(key) ?? 0;
      if (running >= policy.max_concurrency) {
        for (const k of taken) this.#decrement(k);
        await this.#refuse(
          call,
          'TOOL_CONCURRENCY_LIMITED',
          `Policy "${policy.name}" allows ${policy.max_concurrency} calls of "${call.tool}" at once`,
        );
      }
      this.#running.set(key, running + 1);
      taken.push(key);
    }
    return () => {
      for (const k of taken) this.#decrement(k);
    };
  }

  #decrement(key: string): void {
    const n = (this.#running.get(key) ?? 1) - 1;
    if (n <= 0) this.#running.delete(key);
    else this.#running.set(key, n);
  }

  #upstream(key: string, label: string): Upstream {
    let upstream = this.#upstreams.get(key);
    if (upstream === undefined) {
      const breaker = circuitBreaker(
        // Only failures of the upstream count; a tool-level error is an answer.
        handleWhen((err) => err instanceof ToolFailure && err.kind !== 'too_large'),
        {
          halfOpenAfter: this.#settings.breakerHalfOpenAfterMs,
          breaker: new ConsecutiveBreaker(this.#settings.breakerFailures),
        },
      );
      breaker.onStateChange((state) => {
        this.#metrics.open.set({ upstream: label }, state === CircuitState.Open ? 1 : 0);
        if (state === CircuitState.Open)
          this.#logger.warn({ upstream: label }, 'tool upstream circuit opened');
        if (state === CircuitState.Closed)
          this.#logger.info({ upstream: label }, 'tool upstream circuit closed');
      });
      upstream = {
        breaker,
        bulkhead: bulkhead(this.#settings.bulkheadLimit, this.#settings.bulkheadQueue),
      };
      if (this.#upstreams.size >= MAX_UPSTREAMS) {
        const oldest = this.#upstreams.keys().next().value;
        if (oldest !== undefined) this.#upstreams.delete(oldest);
      }
      this.#upstreams.set(key, upstream);
    }
    return upstream;
  }

  /** Calls the source, with retries for tools safe to retry. */
  async #run(
    tool: Tool,
    args: Record<string, unknown>,
    call: ToolCall,
    secretValues: string[],
    signal: AbortSignal | undefined,
  ): Promise<ToolResult> {
    // A workspace call's upstream is its instance: one unreachable node or broken instance
    // must not open the breaker for every other instance of the tenant.
    const instanceId = this.#instances.get(call);
    const upstream = this.#upstream(
      `${call.tenant_id}|${call.source}|${instanceId ?? call.upstream}`,
      call.upstream,
    );
    const retry = tool.retry !== null && isRetrySafe(tool.annotations) ? tool.retry : null;
    const attempts = retry?.max_attempts ?? 1;
    const initialDelay = retry?.initial_delay_ms ?? 200;
    const maxDelay = retry?.max_delay_ms ?? 5000;
    for (let attempt = 1; ; attempt++) {
      call.attempts = attempt;
      try {
        return await this.#attempt(tool, args, call, upstream, secretValues, signal);
      } catch (err) {
        const failure = err instanceof ToolFailure ? err : undefined;
        if (attempt >= attempts || failure === undefined || !failure.retryable || signal?.aborted)
          throw err;
        // Full jitter: a random delay up to the exponential bound spreads out retries.
        const bound = Math.min(maxDelay, initialDelay * 2 ** (attempt - 1));
        await sleep(Math.random() * bound, signal ?? new AbortController().signal);
      }
    }
  }

  async #attempt(
    tool: Tool,
    args: Record<string, unknown>,
    call: ToolCall,
    upstream: Upstream,
    secretValues: string[],
    outer: AbortSignal | undefined,
  ): Promise<ToolResult> {
    // One controller and one timer per attempt: AbortSignal.timeout and AbortSignal.any
    // allocate more per call (weak references, a DOMException up front) on the hot path.
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(
        new DOMException(`The tool did not answer within ${tool.timeout_ms} ms`, 'TimeoutError'),
      );
    }, tool.timeout_ms);
    const onOuterAbort = () => controller.abort(outer?.reason);
    if (outer?.aborted) onOuterAbort();
    else outer?.addEventListener('abort', onOuterAbort, { once: true });
    const signal = controller.signal;
    const labels = { source: call.source, upstream: call.upstream };
    try {
      return await upstream.breaker.execute(() =>
        upstream.bulkhead.execute(async () => {
          const end = this.#metrics.seconds.startTimer(labels);
          this.#metrics.inFlight.inc({ upstream: call.upstream });
          try {
            return await this.#callSource(tool, args, call, signal, secretValues);
          } catch (err) {
            if (timedOut && !outer?.aborted) {
              throw new ToolFailure(
                'timeout',
                `"${tool.name}" did not answer within ${tool.timeout_ms} ms`,
                { cause: err },
              );
            }
            if (outer?.aborted)
              throw new ToolFailure('unavailable', 'The call was cancelled', {
                retryable: false,
                cause: err,
              });
            throw err;
          } finally {
            this.#metrics.inFlight.dec({ upstream: call.upstream });
            end();
          }
        }),
      );
    } catch (err) {
      if (err instanceof BrokenCircuitError) {
        throw new ToolFailure(
          'circuit_open',
          `The circuit breaker of ${call.upstream} is open after repeated failures; calls fail fast until it recovers`,
          { retryable: false, cause: err },
        );
      }
      if (err instanceof BulkheadRejectedError) {
        throw new ToolFailure(
          'busy',
          `${call.upstream} has too many calls in flight on this node`,
          { retryable: true, cause: err },
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuterAbort);
    }
  }

  #callSource(
    tool: Tool,
    args: Record<string, unknown>,
    call: ToolCall,
    signal: AbortSignal,
    secretValues: string[],
  ): Promise<ToolResult> {
    const tenantId = call.tenant_id;
    const source = tool.source;
    switch (source.type) {
      case 'http':
        return callHttpTool({
          tenantId,
          source,
          args,
          signal,
          maxResultBytes: this.#settings.maxResultBytes,
          expand: this.#expand(),
          secretValues,
        });
      case 'mcp':
        return this.#mcp()({
          tenantId,
          server: source.server,
          tool: source.tool,
          args,
          signal,
          onProgress: this.#progress.get(call),
        });
      case 'workspace': {
        const principal = this.#principals.get(call);
        const instanceId = this.#instances.get(call);
        if (principal === undefined || instanceId === undefined) {
          throw new ToolFailure(
            'unavailable',
            `"${tool.name}" works only for a task that names an instance`,
            { retryable: false },
          );
        }
        return this.#workspace()({
          principal,
          instanceId,
          taskId: call.caller.task_id ?? undefined,
          operation: source.operation,
          args,
          signal,
        });
      }
      case 'agent': {
        const principal = this.#principals.get(call);
        if (principal === undefined) throw new Error('an agent tool call without its principal');
        return callAgentTool({
          tasks: this.#tasks(),
          principal,
          tool,
          source,
          args,
          call,
          signal,
        });
      }
    }
  }
}

function upstreamOf(tool: Tool): string {
  switch (tool.source.type) {
    case 'http':
      try {
        return new URL(
          tool.source.url.replace(/\{[^}]*\}/g, 'x').replace(/\$\{secret:[^}]*\}/g, 'x'),
        ).host;
      } catch {
        return 'invalid';
      }
    case 'mcp':
      return tool.source.server;
    case 'agent':
      return 'agents';
    case 'workspace':
      return 'workspace';
  }
}

function redactText(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret.length > 0) out = out.split(secret).join('[redacted]');
  return out;
}

/** Any error of a source as a `ToolFailure`; an ApiError (a missing secret) keeps its words. */
function asFailure(err: unknown, tool: Tool): ToolFailure {
  if (err instanceof ToolFailure) return err;
  if (err instanceof ApiError) {
    return new ToolFailure('unavailable', err.message, {
      retryable: false,
      cause: err,
      code: err.code,
    });
  }
  return new ToolFailure(
    'protocol',
    `"${tool.name}" failed: ${(err as Error)?.message ?? String(err)}`,
    { retryable: false, cause: err },
  );
}
