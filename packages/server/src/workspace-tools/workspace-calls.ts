import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as wait } from 'node:timers/promises';
import type { AssignedTask, Checkpoint, ToolResult } from '@orchestra/protocol';
import type { Logger } from 'pino';
import type { CheckpointService } from '../checkpoints/index.ts';
import type { InstanceService } from '../instances/index.ts';
import type { Principal, TokenKind, VerifiedToken } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { requestText } from '../platform/http-request.ts';
import type { SecretBox } from '../platform/secret-box.ts';
import type { TerminalService } from '../terminals/index.ts';
import type { WorkspaceOperation, WorkspaceToolCaller } from '../tools/index.ts';
import { ToolFailure } from '../tools/index.ts';

/** The route by which one node asks another to run a workspace call on its instance. */
export const WORKSPACE_CALL_PATH = '/v1/internal/workspace-calls';
/** The credential of such a request starts with this (`Authorization: Bearer owc_…`). */
export const WORKSPACE_CALL_TOKEN_PREFIX = 'owc_';
/** What the claims are sealed for: nothing else opens them as such. */
const SEAL_CONTEXT = 'orchestra.workspace-call.v1';
/** How long a node's request is good for: long enough for clock skew, short for replays. */
const CALL_TOKEN_TTL_MS = 60_000;
const READ_MAX_BYTES = 262_144;
const LIST_MAX_ENTRIES = 1000;
const DEFAULT_EXEC_TIMEOUT_MS = 120_000;
const DEFAULT_TERMINAL_WAIT_MS = 1000;
/**
 * Most characters of a command's stdout (and of its stderr) a result carries: the end,
 * where a build or a test run says what went wrong. The whole output stays readable at
 * `GET /v1/instances/{id}/execs/{exec}/events`.
 */
const EXEC_OUTPUT_CHARS = 65_536;
/** Tokens a node remembers at once; past that, calls are refused until some expire. */
const MAX_SEEN_TOKENS = 100_000;
/** A task's checkpoint of a large workspace takes seconds; one that takes this long is dropped. */
const CHECKPOINT_TIMEOUT_MS = 300_000;

/** A workspace call as one node sends it to another (the body of WORKSPACE_CALL_PATH). */
export interface WorkspaceCallRequest {
  tenant_id: string;
  instance_id: string;
  task_id: string | null;
  /** Who the call is made for, as the first node authenticated them. */
  caller: CallerCredential;
  operation: WorkspaceOperation;
  args: Record<string, unknown>;
}

interface CallClaims {
  jti: string;
  ten: string;
  /** SHA-256 of the request body: the claims are good for that body only. */
  body: string;
  /** Milliseconds since the epoch. */
  exp: number;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** A caller's credential as another node needs it to act, and record, in their name. */
export type CallerCredential =
  | { type: 'api_key'; key_id: string; role: Principal['role'] }
  | { type: 'jwt'; subject: string; role: Principal['role'] };

function credentialOf(principal: Principal): CallerCredential {
  return principal.type === 'api_key'
    ? { type: 'api_key', key_id: principal.keyId, role: principal.role }
    : { type: 'jwt', subject: principal.subject, role: principal.role };
}

/**
 * The principal a call runs as on the node that runs it: the caller's own credential (so
 * that what it makes is recorded under the same name on every node), never a system one.
 */
export function callerPrincipal(tenantId: string, caller: CallerCredential): Principal {
  const tenant = { id: tenantId, name: tenantId, kind: 'standard' } as const;
  return caller.type === 'api_key'
    ? {
        type: 'api_key',
        tenant,
        role: caller.role,
        keyId: caller.key_id,
        keyName: caller.key_id,
        prefix: '',
        expiresAt: null,
      }
    : {
        type: 'jwt',
        tenant,
        role: caller.role,
        subject: caller.subject,
        issuer: null,
        expiresAt: null,
      };
}

function text(value: string): ToolResult['content'][number] {
  return { type: 'text', text: value };
}

/** A refusal of the workspace (a missing file, a bad path…) as a tool-level error the model reads. */
function errorResult(err: ApiError): ToolResult {
  // The services name request fields; a model knows only its arguments.
  const message = err.message.replace(/\b(?:querystring|body|params)\.(?=[a-z_]+)/g, 'arguments.');
  return {
    content: [text(message)],
    structured_content: { error: { code: err.code, message } },
    is_error: true,
  };
}

function str(args: Record<string, unknown>, key: string): string | undefined {
  const value = args[key];
  return typeof value === 'string' ? value : undefined;
}

function int(args: Record<string, unknown>, key: string): number | undefined {
  const value = args[key];
  return typeof value === 'number' && Number.isInteger(value) ? value : undefined;
}

/**
 * The workspace tools' calls and the checkpoints of tasks that work in an instance. An
 * instance lives on one node: a call made on another node (where the agent is connected, or
 * where the hosted run runs) goes to it as a request sealed with the cluster's secrets key,
 * which every node has and nothing else does.
 */
export class WorkspaceCalls {
  readonly #instances: InstanceService;
  readonly #checkpoints: CheckpointService;
  readonly #terminals: TerminalService;
  readonly #box: SecretBox;
  readonly #nodeId: string;
  readonly #log: Logger;
  /** Tokens taken and not expired yet, oldest first (their ids, to their expiry). */
  readonly #seen = new Map<string, number>();
  /** Terminals opened through the tool, on this node, by the task that opened each. */
  readonly #terminalTasks = new Map<string, string | null>();

  constructor(deps: {
    instances: InstanceService;
    checkpoints: CheckpointService;
    terminals: TerminalService;
    box: SecretBox;
    nodeId: string;
    log: Logger;
  }) {
    this.#instances = deps.instances;
    this.#checkpoints = deps.checkpoints;
    this.#terminals = deps.terminals;
    this.#box = deps.box;
    this.#nodeId = deps.nodeId;
    this.#log = deps.log;
  }

  /** Resolves when the caller's tenant has the instance; else VALIDATION_FAILED naming `field`. */
  async checkInstance(principal: Principal, id: string, field: string): Promise<void> {
    try {
      await this.#instances.get(principal, id);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'WORKSPACE_INSTANCE_NOT_FOUND') {
        throw fieldError(field, `no instance "${id}" in this tenant`);
      }
      throw err;
    }
  }

  /** The tools module's caller for `workspace.*` tools. */
  readonly call: WorkspaceToolCaller = async (options) => {
    const request: WorkspaceCallRequest = {
      tenant_id: options.principal.tenant.id,
      instance_id: options.instanceId,
      task_id: options.taskId ?? null,
      caller: credentialOf(options.principal),
      operation: options.operation,
      args: options.args,
    };
    return this.#route(request, options.principal, options.signal);
  };

  /** The checkpoint taken before an attempt of a task that works in an instance. */
  async beforeAttempt(tenantId: string, task: AssignedTask): Promise<void> {
    if (task.instance_id === null) return;
    await this.checkpoint(
      tenantId,
      task.instance_id,
      task.id,
      `before attempt ${task.attempt} of task ${task.id}`,
    );
  }

  /**
   * Checkpoints an instance for a task (before an attempt, after a hosted turn); resolves to
   * undefined when it could not (logged): the task goes on without it.
   */
  async checkpoint(
    tenantId: string,
    instanceId: string,
    taskId: string,
    message: string,
    signal?: AbortSignal,
  ): Promise<Checkpoint | undefined> {
    const caller: CallerCredential = { type: 'jwt', subject: `task:${taskId}`, role: 'agent' };
    let result: ToolResult;
    try {
      result = await this.#route(
        {
          tenant_id: tenantId,
          instance_id: instanceId,
          task_id: taskId,
          caller,
          operation: 'checkpoint',
          args: { message },
        },
        callerPrincipal(tenantId, caller),
        signal === undefined
          ? AbortSignal.timeout(CHECKPOINT_TIMEOUT_MS)
          : AbortSignal.any([signal, AbortSignal.timeout(CHECKPOINT_TIMEOUT_MS)]),
      );
    } catch (err) {
      this.#log.warn(
        { err, task_id: taskId, instance_id: instanceId },
        'task checkpoint not taken',
      );
      return undefined;
    }
    const checkpoint = (result.structured_content as { checkpoint?: Checkpoint } | undefined)
      ?.checkpoint;
    if (result.is_error || checkpoint === undefined) {
      this.#log.warn(
        { task_id: taskId, instance_id: instanceId, result: result.content },
        'task checkpoint not taken',
      );
      return undefined;
    }
    return checkpoint;
  }

  /** Runs a call here if the instance is this node's, else on the node that runs it. */
  async #route(
    request: WorkspaceCallRequest,
    principal: Principal,
    signal: AbortSignal,
  ): Promise<ToolResult> {
    const owner = this.#instances.clustered
      ? await this.#instances.nodeOf(request.instance_id)
      : undefined;
    if (owner === undefined || owner === this.#nodeId) {
      return this.run(principal, request, signal);
    }
    const url = await this.#instances.forwarding?.nodeUrl(owner);
    if (url === undefined) {
      // Not live: answered here, which says where the instance was and why it is out of reach.
      return this.run(principal, request, signal);
    }
    const body = JSON.stringify(request);
    const claims: CallClaims = {
      jti: randomUUID(),
      ten: request.tenant_id,
      body: sha256(body),
      exp: Date.now() + CALL_TOKEN_TTL_MS,
    };
    const sealed = this.#box.seal(JSON.stringify(claims), SEAL_CONTEXT);
    let response: { status: number; text: string };
    try {
      response = await requestText(new URL(WORKSPACE_CALL_PATH, url), {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${WORKSPACE_CALL_TOKEN_PREFIX}${Buffer.from(sealed).toString('base64url')}`,
        },
        body,
        signal,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      throw new ToolFailure(
        'unavailable',
        `Node ${owner}, which runs the instance, is out of reach`,
        {
          retryable: false,
          cause: err,
        },
      );
    }
    let answer: ToolResult | undefined;
    try {
      answer = JSON.parse(response.text) as ToolResult;
    } catch {
      answer = undefined;
    }
    if (response.status !== 200 || answer === undefined || !Array.isArray(answer.content)) {
      throw new ToolFailure(
        'unavailable',
        `Node ${owner}, which runs the instance, answered ${response.status}`,
        { retryable: false },
      );
    }
    return answer;
  }

  /**
   * The credential of calls between nodes, as a kind of token of the request pipeline: it
   * opens only with the cluster's secrets key, and only until it expires.
   */
  readonly tokenKind: TokenKind = {
    name: 'a workspace call from another node (owc_…)',
    scheme: 'workspaceCall',
    recognizes: (token) => token.startsWith(WORKSPACE_CALL_TOKEN_PREFIX),
    verify: async (token) => {
      let claims: CallClaims;
      try {
        const sealed = Buffer.from(
          token.slice(WORKSPACE_CALL_TOKEN_PREFIX.length),
          'base64url',
        ).toString('utf8');
        claims = JSON.parse(this.#box.open(sealed, SEAL_CONTEXT)) as CallClaims;
      } catch {
        throw refused('its seal does not open with this node’s secrets key');
      }
      const now = Date.now();
      if (!(claims.exp > now) || claims.exp > now + 2 * CALL_TOKEN_TTL_MS) {
        throw refused('it has expired');
      }
      // Good once: a recorded request sent again is refused (each node remembers the
      // tokens it took until they expire).
      for (const [jti, exp] of this.#seen) {
        if (exp > now) break;
        this.#seen.delete(jti);
      }
      if (this.#seen.has(claims.jti)) throw refused('it was used already');
      if (this.#seen.size >= MAX_SEEN_TOKENS) throw refused('too many calls in the last minute');
      this.#seen.set(claims.jti, claims.exp);
      return {
        id: `node-call:${claims.jti}`,
        tenantId: claims.ten,
        expiresAtMs: claims.exp,
        grant: claims,
      };
    },
  };

  /**
   * The call a request from another node carries: its body, once the token it came with is
   * known to be for those very bytes and that tenant; a 401 otherwise.
   */
  verify(token: VerifiedToken | undefined, rawBody: string): WorkspaceCallRequest {
    const claims = token?.grant as CallClaims | undefined;
    if (claims === undefined) throw refused('only nodes of the cluster make these calls');
    if (claims.body !== sha256(rawBody)) throw refused('it was sealed for another request');
    let call: WorkspaceCallRequest;
    try {
      call = JSON.parse(rawBody) as WorkspaceCallRequest;
    } catch {
      throw refused('its body is not JSON');
    }
    if (call.tenant_id !== claims.ten) throw refused('it was sealed for another tenant');
    return call;
  }

  /** Runs a call for `principal` on this node's instance; a refusal becomes an error result. */
  async run(
    principal: Principal,
    request: WorkspaceCallRequest,
    signal: AbortSignal,
  ): Promise<ToolResult> {
    try {
      return await this.#operate(principal, request, signal);
    } catch (err) {
      if (err instanceof ApiError && err.status < 500) return errorResult(err);
      throw err;
    }
  }

  async #operate(
    principal: Principal,
    request: WorkspaceCallRequest,
    signal: AbortSignal,
  ): Promise<ToolResult> {
    const id = request.instance_id;
    const args = request.args;
    switch (request.operation) {
      case 'read_file':
        return this.#read(principal, id, args);
      case 'write_file': {
        const ref = await this.#instances.workspace(principal, id);
        const path = str(args, 'path') ?? '';
        const { entry, created } = await this.#instances.files.write(
          ref,
          path,
          Readable.from([Buffer.from(str(args, 'content') ?? '', 'utf8')]),
          { ifMatch: str(args, 'expected_sha256'), parents: true },
        );
        this.#instances.touch(id);
        return {
          content: [text(`${created ? 'Created' : 'Wrote'} ${entry.path} (${entry.size} bytes)`)],
          structured_content: { path: entry.path, size: entry.size, sha256: entry.sha256, created },
          is_error: false,
        };
      }
      case 'list_files': {
        const ref = await this.#instances.workspace(principal, id);
        const page = await this.#instances.files.list(ref, {
          path: str(args, 'path'),
          limit: LIST_MAX_ENTRIES,
        });
        const entries = page.items.map((e) => ({ path: e.path, type: e.type, size: e.size }));
        const lines = entries.map(
          (e) =>
            `${e.type === 'directory' ? `${e.path}/` : e.path}${e.type === 'file' ? ` (${e.size} bytes)` : ''}`,
        );
        if (page.next_cursor !== null) lines.push(`… more than ${LIST_MAX_ENTRIES} entries`);
        return {
          content: [text(lines.length > 0 ? lines.join('\n') : '(empty directory)')],
          structured_content: { entries, truncated: page.next_cursor !== null },
          is_error: false,
        };
      }
      case 'search': {
        const ref = await this.#instances.workspace(principal, id);
        const glob = args.glob;
        const found = await this.#instances.files.search(ref, {
          query: str(args, 'query') ?? '',
          path: str(args, 'path'),
          regex: args.regex === true,
          case_sensitive: args.case_sensitive !== false,
          glob: Array.isArray(glob) ? (glob as string[]) : undefined,
          max_results: int(args, 'max_results'),
        });
        const lines = found.matches.map((m) => `${m.path}:${m.line}:${m.column}: ${m.text}`);
        if (found.truncated) lines.push('… more matches left out');
        return {
          content: [text(lines.length > 0 ? lines.join('\n') : 'No matches')],
          structured_content: found,
          is_error: false,
        };
      }
      case 'exec':
        return this.#exec(principal, id, args, signal);
      case 'terminal':
        return this.#terminal(principal, id, request.task_id, args, signal);
      case 'checkpoint': {
        const checkpoint = await this.#checkpoints.create(principal, id, {
          message: str(args, 'message') ?? `checkpoint of task ${request.task_id ?? ''}`.trim(),
          ...(request.task_id !== null ? { task_id: request.task_id } : {}),
        });
        return {
          content: [
            text(`Checkpoint ${checkpoint.id}: ${checkpoint.files} files (${checkpoint.message})`),
          ],
          structured_content: { checkpoint },
          is_error: false,
        };
      }
    }
  }

  async #read(
    principal: Principal,
    id: string,
    args: Record<string, unknown>,
  ): Promise<ToolResult> {
    const ref = await this.#instances.workspace(principal, id);
    const path = str(args, 'path') ?? '';
    const offset = int(args, 'offset') ?? 0;
    const length = Math.min(int(args, 'length') ?? READ_MAX_BYTES, READ_MAX_BYTES);
    const opened = await this.#instances.files
      .read(
        ref,
        path,
        // An offset past the end reads nothing rather than failing.
        `bytes=${offset}-${offset + length - 1}`,
      )
      .catch(async (err: unknown) => {
        if (err instanceof ApiError && err.code === 'RANGE_NOT_SATISFIABLE') {
          return this.#instances.files.read(ref, path, undefined).then((whole) => {
            whole.stream.destroy();
            return { ...whole, range: { start: whole.size, end: whole.size - 1 }, empty: true };
          });
        }
        throw err;
      });
    const chunks: Buffer[] = [];
    if (!('empty' in opened)) for await (const chunk of opened.stream) chunks.push(chunk as Buffer);
    const data = Buffer.concat(chunks);
    this.#instances.touch(id);
    const start = opened.range?.start ?? 0;
    const end = start + data.length;
    const structured = {
      path,
      size: opened.size,
      sha256: opened.sha256,
      offset: start,
      bytes: data.length,
      truncated: end < opened.size,
    };
    if (data.includes(0)) {
      return {
        content: [text(`${path} is a binary file (${opened.size} bytes); not shown`)],
        structured_content: { ...structured, binary: true },
        is_error: false,
      };
    }
    const note =
      end < opened.size
        ? `\n… (bytes ${start}-${end - 1} of ${opened.size}; read on with offset ${end})`
        : '';
    return {
      content: [text(`${data.toString('utf8')}${note}`)],
      structured_content: structured,
      is_error: false,
    };
  }

  async #exec(
    principal: Principal,
    id: string,
    args: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<ToolResult> {
    const cwd = str(args, 'cwd');
    const stdin = str(args, 'stdin');
    const { execId, done } = await this.#instances.exec(principal, id, {
      command: ['sh', '-c', str(args, 'command') ?? ''],
      ...(cwd !== undefined ? { cwd } : {}),
      ...(stdin !== undefined ? { stdin } : {}),
      timeout_ms: int(args, 'timeout_ms') ?? DEFAULT_EXEC_TIMEOUT_MS,
    });
    const cancel = () => {
      this.#instances.cancelExec(principal, id, execId).catch(() => {});
    };
    signal.addEventListener('abort', cancel, { once: true });
    if (signal.aborted) cancel();
    try {
      const result = await done;
      const parts = [
        result.timed_out
          ? `timed out after ${result.duration_ms} ms`
          : result.cancelled
            ? 'cancelled'
            : result.signal !== null
              ? `killed by ${result.signal}`
              : `exit code ${result.exit_code}`,
      ];
      const stdout = lastPart(result.stdout);
      const stderr = lastPart(result.stderr);
      if (stdout !== '') parts.push(`stdout:\n${stdout}`);
      if (stderr !== '') parts.push(`stderr:\n${stderr}`);
      if (result.truncated) parts.push('(the output was cut at 1 MiB)');
      return {
        content: [text(parts.join('\n'))],
        structured_content: { ...result, stdout, stderr },
        // A command that failed is the model's to read, not a failure of the tool.
        is_error: false,
      };
    } finally {
      signal.removeEventListener('abort', cancel);
    }
  }

  async #terminal(
    principal: Principal,
    id: string,
    taskId: string | null,
    args: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<ToolResult> {
    let terminalId = str(args, 'terminal_id');
    if (terminalId === undefined) {
      terminalId = (await this.#terminals.open(principal, id, {})).id;
      if (this.#terminalTasks.size >= 10_000) this.#terminalTasks.clear();
      this.#terminalTasks.set(terminalId, taskId);
    } else if (
      !this.#terminalTasks.has(terminalId) ||
      this.#terminalTasks.get(terminalId) !== taskId
    ) {
      // A person's terminal, or another task's, is not for this one to type into or read.
      throw new ApiError(
        'TERMINAL_NOT_FOUND',
        `No terminal "${terminalId}" opened by this task (open one by leaving terminal_id out)`,
      );
    }
    const input = str(args, 'input');
    if (input !== undefined && input !== '') {
      await this.#terminals.input(principal, id, terminalId, input);
    }
    await wait(int(args, 'wait_ms') ?? DEFAULT_TERMINAL_WAIT_MS, undefined, { signal });
    const screen = await this.#terminals.screen(principal, id, terminalId, 0);
    const closed = args.close === true;
    if (closed) {
      await this.#terminals.close(principal, id, terminalId);
      this.#terminalTasks.delete(terminalId);
    }
    return {
      content: [
        text(
          `terminal ${terminalId}${closed ? ' (closed)' : ''}, ${screen.state}, cursor at line ${screen.cursor.y + 1}:\n${screen.lines.join('\n')}`,
        ),
      ],
      structured_content: {
        terminal_id: terminalId,
        closed,
        state: screen.state,
        cursor: screen.cursor,
        lines: screen.lines,
      },
      is_error: false,
    };
  }
}

/** The end of a command's output, saying what was left out before it. */
function lastPart(output: string): string {
  if (output.length <= EXEC_OUTPUT_CHARS) return output;
  const left = output.length - EXEC_OUTPUT_CHARS;
  return `(${left} characters before this left out)\n${output.slice(left)}`;
}

function refused(why: string): ApiError {
  return new ApiError(
    'UNAUTHENTICATED',
    `Not a workspace call from a node of this cluster: ${why}`,
  );
}
