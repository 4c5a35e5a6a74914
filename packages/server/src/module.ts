import type { FastifyPluginAsync } from 'fastify';
import type { Migration } from 'kysely/migration';
import type { Logger } from 'pino';
import type { Bus } from './bus/bus.ts';
import type { ApiKeyView } from './gateway/index.ts';
import type { RelayRoute } from './kv/index.ts';
import type { ErrorCode } from './platform/errors.ts';
import type { Jobs } from './platform/jobs.ts';
import type { Lifecycle } from './platform/lifecycle.ts';
import type { Metrics } from './platform/metrics.ts';
import type { RateLimiter } from './platform/rate-limit.ts';
import type { SecretBox } from './platform/secret-box.ts';
import type { SettingSpec, Settings, SettingsCheck } from './platform/settings.ts';
import type { RelationalStore } from './store/store.ts';

/**
 * The module contract (issue 19). A service module is a folder whose `index.ts` exports one
 * `ModuleDeclaration`: what it owns (migrations, tables, settings, error codes, topic
 * namespaces, jobs), what it needs from other modules, and how it is built, served, started
 * and stopped. `modules.ts` lists the declarations; the server builds them in dependency
 * order and stops them in reverse, on a normal close and a failed start alike.
 */

/**
 * What each module offers the others, by module name. A module's `index.ts` adds its entry
 * by declaration merging; another module reaches it only through `ModuleContext.need` or
 * `later`, for a name it declared.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled by declaration merging
export interface ModuleInterfaces {}

export type ModuleName = keyof ModuleInterfaces & string;

/** Any one module's declaration, as lists hold them. */
export type AnyModule = { [N in ModuleName]: ModuleDeclaration<N> }[ModuleName];

/** What the server owns and shares with every module: no module owns these. */
export interface Platform {
  settings: Settings;
  log: Logger;
  store: RelationalStore;
  bus: Bus;
  jobs: Jobs;
  metrics: Metrics;
  secrets: SecretBox;
  rateLimiter: RateLimiter | undefined;
  version: string;
  /** Aborts when shutdown begins: open streams end so that draining can finish. */
  shutdown: AbortSignal;
  isClosing: () => boolean;
  /** The first start's admin key, for whoever started the server (the CLI prints it). */
  onAdminKey?:
    | ((key: ApiKeyView & { secret: string; file: string | undefined }) => void)
    | undefined;
}

export interface ModuleContext extends Platform {
  /** The interface of a module named in `needs`: it was built before this one. */
  need<N extends ModuleName>(name: N): ModuleInterfaces[N];
  /**
   * For a module named in `later`: a function that returns its interface once every module
   * is built. Calling it while modules are still being built throws. This is how two
   * modules that call each other (tasks and agents) are built without a cycle.
   */
  later<N extends ModuleName>(name: N): () => ModuleInterfaces[N];
  /** Every module's declaration, to gather what the others declare (relay routes). */
  declarations: readonly AnyModule[];
}

/** A topic namespace a module publishes under: clients may read it, not publish to it. */
export interface TopicNamespace {
  /** The first segment of its topics: `tasks` for `tasks.<id>`. */
  name: string;
  description: string;
  /**
   * The namespace is one topic per tenant (`agents`), whose messages are the module's
   * event-log stream `<name>:<tenant id>`.
   */
  tenantWide?: boolean;
  /** Turns the module's KV changes into messages on these topics, when it has any. */
  relay?: RelayRoute;
}

export interface ModuleDeclaration<N extends ModuleName = ModuleName> {
  name: N;
  /** Modules whose interfaces this one uses while it is built: they are built first. */
  needs?: readonly ModuleName[];
  /** Modules whose interfaces this one uses only once everything is built. */
  later?: readonly ModuleName[];
  /** Its schema changes; names sort in the order they run across all modules. */
  migrations?: Record<string, Migration>;
  /** The tables it owns (their types are its `tables.ts`); no other module runs SQL on them. */
  tables?: readonly string[];
  /** Its slice of the node's settings, and the rules between them. */
  settings?: Record<string, SettingSpec>;
  checkSettings?: SettingsCheck;
  /** The error codes it raises, from the catalogue. */
  errors?: readonly ErrorCode[];
  topics?: readonly TopicNamespace[];
  /** The names of the background jobs (`platform/jobs.ts`) it runs. */
  jobs?: readonly string[];
  /**
   * Builds the module. What it takes that must be given back (connections, timers) it
   * registers on `lifecycle`, right after taking it.
   */
  create(
    ctx: ModuleContext,
    lifecycle: Lifecycle,
  ): Promise<ModuleInterfaces[N]> | ModuleInterfaces[N];
  /** Its HTTP routes, registered in module order. */
  routes?: (self: ModuleInterfaces[N], ctx: ModuleContext) => FastifyPluginAsync;
  /** Runs once the node listens at `url`, in dependency order; `stop` undoes it. */
  start?: (self: ModuleInterfaces[N], node: { url: string }) => Promise<void> | void;
  stop?: (self: ModuleInterfaces[N]) => Promise<void> | void;
}

/** Declares a module; the function only ties the declaration's types to its name. */
export function defineModule<N extends ModuleName>(
  declaration: ModuleDeclaration<N>,
): ModuleDeclaration<N> {
  return declaration;
}

/**
 * The declarations in an order where each comes after those it needs. Throws on an unknown
 * name, a name declared twice, or a cycle of `needs` (use `later` for one side of it).
 */
export function dependencyOrder(list: readonly AnyModule[]): AnyModule[] {
  const byName = new Map<string, AnyModule>();
  for (const m of list) {
    if (byName.has(m.name)) throw new Error(`module ${m.name} is declared twice`);
    byName.set(m.name, m);
  }
  for (const m of list) {
    for (const n of [...(m.needs ?? []), ...(m.later ?? [])]) {
      if (!byName.has(n)) throw new Error(`module ${m.name} needs ${n}, which is not in the list`);
    }
  }
  const ordered: AnyModule[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (m: AnyModule, path: string[]): void => {
    const seen = state.get(m.name);
    if (seen === 'done') return;
    if (seen === 'visiting') {
      throw new Error(
        `modules need each other in a cycle: ${[...path, m.name].join(' → ')}; one of them must take the other \`later\``,
      );
    }
    state.set(m.name, 'visiting');
    for (const n of m.needs ?? []) visit(byName.get(n) as AnyModule, [...path, m.name]);
    state.set(m.name, 'done');
    ordered.push(m);
  };
  for (const m of list) visit(m, []);
  return ordered;
}

/** The modules built, in dependency order, with their interfaces. */
export interface BuiltModules {
  /** Each module with its interface and the context it was built with (its routes get it too). */
  ordered: readonly { declaration: AnyModule; self: unknown; ctx: ModuleContext }[];
  get<N extends ModuleName>(name: N): ModuleInterfaces[N];
}

/**
 * Builds every module in dependency order. A module reaches another only through the names
 * it declared, so a declaration cannot hide a dependency.
 */
export async function buildModules(
  list: readonly AnyModule[],
  platform: Platform,
  lifecycle: Lifecycle,
): Promise<BuiltModules> {
  const ordered = dependencyOrder(list);
  const built = new Map<string, unknown>();
  let complete = false;
  const get = <N extends ModuleName>(name: N): ModuleInterfaces[N] => {
    if (!built.has(name)) throw new Error(`module ${name} is not built`);
    return built.get(name) as ModuleInterfaces[N];
  };
  const result: BuiltModules['ordered'][number][] = [];
  for (const declaration of ordered) {
    const ctx: ModuleContext = {
      ...platform,
      declarations: ordered,
      need: (name) => {
        if (!declaration.needs?.includes(name)) {
          throw new Error(`module ${declaration.name} uses ${name} without declaring it in needs`);
        }
        return get(name);
      },
      later: (name) => {
        if (!declaration.later?.includes(name)) {
          throw new Error(`module ${declaration.name} uses ${name} without declaring it in later`);
        }
        return () => {
          if (!complete) throw new Error(`module ${declaration.name} used ${name} while building`);
          return get(name);
        };
      },
    };
    const self = await declaration.create(ctx, lifecycle);
    built.set(declaration.name, self);
    result.push({ declaration, self, ctx });
  }
  complete = true;
  return { ordered: result, get };
}

/**
 * Starts every built module in dependency order, registering each one's stop right after its
 * start, so that a close (or a start that fails half-way) stops them last started first.
 */
export async function startModules(
  modules: BuiltModules,
  lifecycle: Lifecycle,
  node: { url: string },
): Promise<void> {
  for (const { declaration, self } of modules.ordered) {
    const typed = declaration as ModuleDeclaration<ModuleName>;
    const value = self as ModuleInterfaces[ModuleName];
    await typed.start?.(value, node);
    const stop = typed.stop;
    if (stop) lifecycle.add(declaration.name, () => stop(value));
  }
}
