import { existsSync } from 'node:fs';
import type {
  CreateTerminal,
  Terminal,
  TerminalScreen,
  TerminalServerFrameKind,
  TerminalServerFramePayload,
} from '@orchestra/protocol';
import serializeAddon from '@xterm/addon-serialize';
import headless from '@xterm/headless';
import type { Logger } from 'pino';
import type { InstanceService, ServiceExit, TerminalProcess } from '../instances/index.ts';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import type { RelationalStore } from '../store/store.ts';
import type { TerminalsTable } from './tables.ts';

/** Exited terminals kept listed per instance; older ones are forgotten as new ones open. */
const EXITED_KEPT = 20;
/** After the hang-up, how long a closed terminal's program gets before it is killed. */
const CLOSE_GRACE_MS = 2_000;
/**
 * Output not yet drawn on the server's screen past which the program's output is no longer
 * read (it blocks, as on a slow terminal), and below which it is read again.
 */
const PAUSE_AT_BYTES = 1024 * 1024;
const RESUME_AT_BYTES = 128 * 1024;

/** The program a terminal runs when the request names none. */
const DEFAULT_COMMAND = existsSync('/bin/bash') ? ['bash'] : ['sh'];

/** What a viewer (an attached connection) gets from its terminal. */
export interface TerminalViewerSink {
  /** Bytes the program printed. */
  output(data: Buffer): void;
  frame<K extends TerminalServerFrameKind>(payload: TerminalServerFramePayload<K>): void;
  /** The terminal is gone: send `exit` (done) and close. */
  ended(): void;
}

interface Viewer {
  sink: TerminalViewerSink;
  /** Output that came while its screen was being drawn, sent after it. */
  backlog: Buffer[] | undefined;
}

/**
 * A terminal whose program runs on this node: its PTY, the headless terminal that keeps
 * its screen and scrollback, and its viewers.
 */
class LiveTerminal {
  readonly id: string;
  readonly tenantId: string;
  readonly instanceId: string;
  readonly process: TerminalProcess;
  readonly screen: headless.Terminal;
  readonly #serializer = new serializeAddon.SerializeAddon();
  readonly viewers = new Set<Viewer>();
  cols: number;
  rows: number;
  title: string | null = null;
  /** Why it is being closed, when it is (the reason its exit records). */
  closing: string | undefined;
  readonly exited: Promise<ServiceExit>;
  #unparsed = 0;
  #paused = false;

  constructor(row: TerminalsTable, process: TerminalProcess, scrollback: number) {
    this.id = row.id;
    this.tenantId = row.tenant_id;
    this.instanceId = row.instance_id;
    this.process = process;
    this.cols = row.cols;
    this.rows = row.rows;
    this.screen = new headless.Terminal({
      cols: row.cols,
      rows: row.rows,
      scrollback,
      allowProposedApi: true,
    });
    this.screen.loadAddon(this.#serializer);
    this.screen.onTitleChange((title) => {
      this.title = title;
      this.broadcast({ kind: 'title', title });
    });
    this.exited = new Promise((resolve) => process.onExit(resolve));
    process.onData((data) => this.#printed(data));
  }

  #printed(data: Buffer): void {
    this.#unparsed += data.length;
    this.screen.write(data, () => {
      this.#unparsed -= data.length;
      if (this.#paused && this.#unparsed <= RESUME_AT_BYTES) {
        this.#paused = false;
        this.process.resume();
      }
    });
    if (!this.#paused && this.#unparsed >= PAUSE_AT_BYTES) {
      this.#paused = true;
      this.process.pause();
    }
    for (const viewer of this.viewers) {
      if (viewer.backlog !== undefined) viewer.backlog.push(data);
      else viewer.sink.output(data);
    }
  }

  broadcast<K extends TerminalServerFrameKind>(payload: TerminalServerFramePayload<K>): void {
    for (const viewer of this.viewers) viewer.sink.frame(payload);
  }

  /**
   * Adds a viewer; resolves with the escape sequences that draw the screen as it is once
   * everything printed so far is on it. What is printed meanwhile follows them.
   */
  attach(viewer: Viewer, scrollback: number): Promise<string> {
    viewer.backlog = [];
    this.viewers.add(viewer);
    return new Promise((resolve) => {
      // The callback runs once what was written before is parsed, before what comes later.
      this.screen.write('', () => {
        const screen = this.#serializer.serialize({ scrollback });
        resolve(screen);
      });
    });
  }

  /** Sends a viewer what came while its screen was drawn; from then on it gets output live. */
  live(viewer: Viewer): void {
    const backlog = viewer.backlog ?? [];
    viewer.backlog = undefined;
    for (const data of backlog) viewer.sink.output(data);
  }

  resize(cols: number, rows: number): void {
    this.cols = cols;
    this.rows = rows;
    this.process.resize(cols, rows);
    this.screen.resize(cols, rows);
    this.broadcast({ kind: 'resized', cols, rows });
  }

  text(scrollback: number): Pick<TerminalScreen, 'cursor' | 'lines' | 'scrollback'> {
    const buffer = this.screen.buffer.active;
    const line = (y: number) => buffer.getLine(y)?.translateToString(true) ?? '';
    const lines: string[] = [];
    for (let y = 0; y < this.rows; y++) lines.push(line(buffer.baseY + y));
    const above: string[] = [];
    for (let y = Math.max(0, buffer.baseY - scrollback); y < buffer.baseY; y++) above.push(line(y));
    return { cursor: { x: buffer.cursorX, y: buffer.cursorY }, lines, scrollback: above };
  }

  dispose(): void {
    this.screen.dispose();
  }
}

function view(row: TerminalsTable, live: LiveTerminal | undefined): Terminal {
  return {
    id: row.id,
    instance_id: row.instance_id,
    node_id: row.node_id,
    state: row.state as Terminal['state'],
    state_reason: row.state_reason,
    command: JSON.parse(row.command) as string[],
    cwd: row.cwd,
    cols: live?.cols ?? row.cols,
    rows: live?.rows ?? row.rows,
    title: live?.title ?? row.title,
    viewers: live?.viewers.size ?? 0,
    exit_code: row.exit_code,
    signal: row.signal,
    created_by: row.created_by,
    created_at: row.created_at,
    exited_at: row.exited_at,
  };
}

/** A terminal whose program runs on another node: the request belongs there. */
function elsewhere(id: string, nodeId: string): ApiError {
  return new ApiError(
    'WORKSPACE_INSTANCE_STATE',
    `Terminal "${id}" runs on node ${nodeId}; send this request to that node`,
    { details: { node_id: nodeId } },
  );
}

function notFound(id: string): ApiError {
  return new ApiError('TERMINAL_NOT_FOUND', `Terminal "${id}" does not exist in this instance`);
}

/**
 * The design's TerminalRegistry: terminals of instances, each a program on a PTY in the
 * instance's sandbox. Their records are in the store (any node lists them; quotas count
 * them); their processes, screens and viewers live on the instance's node, and die with it.
 */
export class TerminalService {
  readonly #store: RelationalStore;
  readonly #instances: InstanceService;
  readonly #nodeId: string;
  readonly #log: Logger;
  readonly #maxPerInstance: number;
  readonly #scrollback: number;
  readonly #maxViewers: number;
  readonly #live = new Map<string, LiveTerminal>();
  #closing = false;

  constructor(deps: {
    store: RelationalStore;
    instances: InstanceService;
    nodeId: string;
    log: Logger;
    maxPerInstance: number;
    scrollback: number;
    maxViewers: number;
  }) {
    this.#store = deps.store;
    this.#instances = deps.instances;
    this.#nodeId = deps.nodeId;
    this.#log = deps.log;
    this.#maxPerInstance = deps.maxPerInstance;
    this.#scrollback = deps.scrollback;
    this.#maxViewers = deps.maxViewers;
    deps.instances.quotas.addOther({
      name: 'max_terminals',
      unit: (n) => `${n} running terminals`,
      used: (tenantId) => this.#running({ tenantId }),
    });
    // Its terminals end before an instance stops (the rows go with a deleted instance).
    deps.instances.onStopping((instanceId, reason) => {
      for (const live of this.#live.values()) {
        if (live.instanceId === instanceId) this.#hangUp(live, reason);
      }
    });
    // Terminals of an instance whose node was lost ended with that node.
    deps.instances.onLost(async (instanceId, nodeId, reason) => {
      await this.#store.db
        .updateTable('terminals')
        .set({
          state: 'exited',
          state_reason: `the instance was lost: ${reason}`,
          exited_at: new Date().toISOString(),
        })
        .where('instance_id', '=', instanceId)
        .where('node_id', '=', nodeId)
        .where('state', '=', 'running')
        .execute();
    });
    // A terminal someone watches keeps its instance from idling.
    deps.instances.addActivitySource(() =>
      [...this.#live.values()].filter((t) => t.viewers.size > 0).map((t) => t.instanceId),
    );
  }

  get scrollback(): number {
    return this.#scrollback;
  }

  async #running(where: { tenantId?: string; instanceId?: string }): Promise<number> {
    let query = this.#store.db
      .selectFrom('terminals')
      .select(({ fn }) => fn.countAll<number>().as('n'))
      .where('state', '=', 'running');
    if (where.tenantId !== undefined) query = query.where('tenant_id', '=', where.tenantId);
    if (where.instanceId !== undefined) query = query.where('instance_id', '=', where.instanceId);
    return Number((await query.executeTakeFirstOrThrow()).n);
  }

  /**
   * Terminals this node ran before it restarted died with it. Embedded storage is one
   * node's: all its running terminals were this node's, whatever id it had before (the
   * default id changes with the process).
   */
  async reconcile(): Promise<void> {
    const now = new Date().toISOString();
    let query = this.#store.db
      .updateTable('terminals')
      .set({ state: 'exited', state_reason: 'its node restarted', exited_at: now })
      .where('state', '=', 'running');
    if (this.#store.kind !== 'sqlite') query = query.where('node_id', '=', this.#nodeId);
    const { numUpdatedRows } = await query.executeTakeFirst();
    if (numUpdatedRows > 0n) {
      this.#log.info(
        { terminals: Number(numUpdatedRows) },
        'terminals of the last run marked exited',
      );
    }
  }

  async open(principal: Principal, instanceId: string, input: CreateTerminal): Promise<Terminal> {
    if (this.#closing) throw new ApiError('SHUTTING_DOWN');
    const command = input.command ?? DEFAULT_COMMAND;
    const cols = input.cols ?? 80;
    const rows = input.rows ?? 24;
    let row: TerminalsTable | undefined;
    try {
      const process = await this.#instances.openTerminal(
        principal,
        instanceId,
        { command, cwd: input.cwd, env: input.env ?? {}, cols, rows },
        async (instance) => {
          row = await this.#instances.quotas.admitOther(
            instance.tenantId,
            'max_terminals',
            async () => {
              const running = await this.#running({ instanceId });
              if (running >= this.#maxPerInstance) {
                throw new ApiError(
                  'TENANT_LIMIT_REACHED',
                  `Instance "${instanceId}" runs ${running} terminals, the most one may (ORCHESTRA_TERMINAL_MAX_PER_INSTANCE); close one first`,
                  {
                    details: {
                      quota: 'terminals_per_instance',
                      limit: 'ORCHESTRA_TERMINAL_MAX_PER_INSTANCE',
                      limit_value: this.#maxPerInstance,
                      used: running,
                      requested: 1,
                    },
                  },
                );
              }
              const inserted: TerminalsTable = {
                id: newId('trm'),
                tenant_id: instance.tenantId,
                instance_id: instanceId,
                node_id: this.#nodeId,
                command: JSON.stringify(command),
                cwd: instance.cwd,
                cols,
                rows,
                title: null,
                state: 'running',
                state_reason: null,
                exit_code: null,
                signal: null,
                created_by: credentialId(principal),
                created_at: new Date().toISOString(),
                exited_at: null,
              };
              await this.#store.db.insertInto('terminals').values(inserted).execute();
              return inserted;
            },
          );
        },
      );
      const opened = row as TerminalsTable;
      const live = new LiveTerminal(opened, process, this.#scrollback);
      this.#live.set(opened.id, live);
      void live.exited.then((exit) => this.#ended(live, exit));
      await this.#forgetExited(instanceId);
      return view(opened, live);
    } catch (err) {
      // Recorded, but its program could not start: it never ran.
      if (row !== undefined) {
        await this.#store.db.deleteFrom('terminals').where('id', '=', row.id).execute();
      }
      throw err;
    }
  }

  /** Keeps the newest exited terminals of an instance listed, and forgets older ones. */
  async #forgetExited(instanceId: string): Promise<void> {
    const old = await this.#store.db
      .selectFrom('terminals')
      .select('id')
      .where('instance_id', '=', instanceId)
      .where('state', '=', 'exited')
      .orderBy('id', 'desc')
      .offset(EXITED_KEPT)
      .limit(1000)
      .execute();
    if (old.length === 0) return;
    await this.#store.db
      .deleteFrom('terminals')
      .where(
        'id',
        'in',
        old.map((r) => r.id),
      )
      .execute();
  }

  /** Its program ended: the record says how, and its viewers are told. */
  async #ended(live: LiveTerminal, exit: ServiceExit): Promise<void> {
    this.#live.delete(live.id);
    const how =
      exit.signal !== null ? `killed by ${exit.signal}` : `exited with code ${exit.code ?? 0}`;
    const reason = live.closing ?? `its program ${how}`;
    try {
      await this.#store.db
        .updateTable('terminals')
        .set({
          state: 'exited',
          state_reason: reason,
          exit_code: exit.code,
          signal: exit.signal,
          exited_at: new Date().toISOString(),
          cols: live.cols,
          rows: live.rows,
          title: live.title,
        })
        .where('id', '=', live.id)
        .execute();
    } catch (err) {
      this.#log.warn({ err, terminal_id: live.id }, 'terminal exit not recorded');
    }
    live.broadcast({ kind: 'exit', exit_code: exit.code, signal: exit.signal, reason });
    for (const viewer of live.viewers) viewer.sink.ended();
    live.viewers.clear();
    live.dispose();
  }

  #hangUp(live: LiveTerminal, reason: string): void {
    live.closing ??= reason;
    live.process.close(CLOSE_GRACE_MS);
  }

  async list(
    principal: Principal,
    instanceId: string,
    options: {
      state?: string | undefined;
      limit?: number | undefined;
      cursor?: string | undefined;
      maxBytes: number;
    },
  ): Promise<{ items: Terminal[]; next_cursor: string | null }> {
    await this.#instances.get(principal, instanceId);
    const after = decodeCursor(options.cursor, (id) => id.startsWith('trm_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('terminals')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .where('instance_id', '=', instanceId)
      .orderBy('id', 'asc')
      .limit(limit + 1);
    if (after !== undefined) query = query.where('id', '>', after);
    if (options.state !== undefined) query = query.where('state', '=', options.state);
    return toPage(
      await query.execute(),
      limit,
      (row) => view(row, this.#live.get(row.id)),
      options.maxBytes,
    );
  }

  async get(principal: Principal, instanceId: string, id: string): Promise<Terminal> {
    const row = await this.#row(principal, instanceId, id);
    return view(row, this.#live.get(id));
  }

  async #row(principal: Principal, instanceId: string, id: string): Promise<TerminalsTable> {
    await this.#instances.get(principal, instanceId);
    const row = await this.#store.db
      .selectFrom('terminals')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .where('instance_id', '=', instanceId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) throw notFound(id);
    return row;
  }

  /** The running terminal, which must run on this node. */
  async #liveOf(principal: Principal, instanceId: string, id: string): Promise<LiveTerminal> {
    const row = await this.#row(principal, instanceId, id);
    const live = this.#live.get(id);
    if (live !== undefined) return live;
    if (row.state === 'exited') {
      throw new ApiError('TERMINAL_EXITED', `Terminal "${id}" has exited (${row.state_reason})`, {
        details: { exit_code: row.exit_code, signal: row.signal },
      });
    }
    throw elsewhere(id, row.node_id);
  }

  /** Hangs up a terminal (if it runs) and forgets it; resolves once its program ended. */
  async close(principal: Principal, instanceId: string, id: string): Promise<void> {
    const row = await this.#row(principal, instanceId, id);
    const live = this.#live.get(id);
    if (live === undefined && row.state === 'running' && row.node_id !== this.#nodeId) {
      throw elsewhere(id, row.node_id);
    }
    if (live !== undefined) {
      this.#hangUp(live, `closed by ${credentialId(principal)}`);
      await live.exited;
    }
    await this.#store.db.deleteFrom('terminals').where('id', '=', id).execute();
  }

  async input(principal: Principal, instanceId: string, id: string, data: string): Promise<void> {
    const live = await this.#liveOf(principal, instanceId, id);
    live.process.write(data);
    this.#instances.touch(instanceId);
  }

  async resize(
    principal: Principal,
    instanceId: string,
    id: string,
    size: { cols: number; rows: number },
  ): Promise<Terminal> {
    const live = await this.#liveOf(principal, instanceId, id);
    live.resize(size.cols, size.rows);
    this.#instances.touch(instanceId);
    return this.get(principal, instanceId, id);
  }

  async screen(
    principal: Principal,
    instanceId: string,
    id: string,
    scrollback: number,
  ): Promise<TerminalScreen> {
    const live = await this.#liveOf(principal, instanceId, id);
    // Once what it printed so far is drawn.
    await new Promise<void>((resolve) => live.screen.write('', resolve));
    return {
      cols: live.cols,
      rows: live.rows,
      ...live.text(scrollback),
      title: live.title,
      state: 'running',
    };
  }

  /**
   * Attaches a viewer to a running terminal of this node: resolves with the terminal and
   * its screen to draw; output follows through `sink` once `started` is called, and
   * `detach` ends it. Refused while the terminal has its most viewers.
   */
  async attach(
    principal: Principal,
    instanceId: string,
    id: string,
    sink: TerminalViewerSink,
  ): Promise<{
    terminal: Terminal;
    screen: string;
    started: () => void;
    detach: () => void;
    write: (data: string | Buffer) => void;
    resize: (cols: number, rows: number) => void;
  }> {
    const live = await this.#liveOf(principal, instanceId, id);
    if (live.viewers.size >= this.#maxViewers) {
      throw new ApiError(
        'TENANT_LIMIT_REACHED',
        `Terminal "${id}" has ${live.viewers.size} viewers, the most it may (ORCHESTRA_TERMINAL_MAX_VIEWERS)`,
        {
          details: {
            quota: 'viewers_per_terminal',
            limit: 'ORCHESTRA_TERMINAL_MAX_VIEWERS',
            limit_value: this.#maxViewers,
            used: live.viewers.size,
            requested: 1,
          },
        },
      );
    }
    const viewer: Viewer = { sink, backlog: undefined };
    const screen = await live.attach(viewer, this.#scrollback);
    // It ended while its screen was drawn (its viewers were told).
    if (!live.viewers.has(viewer)) {
      throw new ApiError('TERMINAL_EXITED', `Terminal "${id}" has exited`);
    }
    live.broadcast({ kind: 'viewers', count: live.viewers.size });
    this.#instances.touch(instanceId);
    const row = await this.#row(principal, instanceId, id);
    return {
      terminal: view(row, live),
      screen,
      started: () => live.live(viewer),
      detach: () => {
        if (live.viewers.delete(viewer)) {
          live.broadcast({ kind: 'viewers', count: live.viewers.size });
        }
      },
      write: (data) => {
        live.process.write(data);
        this.#instances.touch(instanceId);
      },
      resize: (cols, rows) => {
        live.resize(cols, rows);
        this.#instances.touch(instanceId);
      },
    };
  }

  /** At the node's shutdown: hangs up every terminal it runs and waits for them. */
  async shutdown(): Promise<void> {
    this.#closing = true;
    const all = [...this.#live.values()];
    for (const live of all) this.#hangUp(live, 'its node shut down');
    await Promise.all(all.map((live) => live.exited));
  }
}
