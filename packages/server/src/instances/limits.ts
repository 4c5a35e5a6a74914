import { execFile } from 'node:child_process';
import { access, mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FilledSpec } from './process-driver.ts';

// Resource limits of sandboxed processes: cgroups where the machine lets the server make
// them (v2 at /sys/fs/cgroup, or v1 hierarchies at /sys/fs/cgroup/<controller>), else
// prlimit (memory only, as an address-space limit), else none; and their usage.

export type LimitMechanism = 'cgroup-v2' | 'cgroup-v1' | 'prlimit' | 'none' | 'docker';
export type LimitedResource = 'cpu' | 'memory' | 'processes';

/** What an instance's processes are limited by on its node. */
export interface AppliedLimits {
  mechanism: LimitMechanism;
  enforced: LimitedResource[];
  /** Why nothing stronger applies, when it does not. */
  note: string | null;
}

export interface ProcessUsage {
  cpu_seconds: number;
  memory_bytes: number;
  processes: number;
}

export type LimitMode = 'auto' | 'cgroup' | 'prlimit' | 'off';

const ROOT = '/sys/fs/cgroup';
const V1_CONTROLLERS = { memory: 'memory', cpu: 'cpu', cpuacct: 'cpuacct', pids: 'pids' };
const CPU_PERIOD_US = 100_000;

/** Joins the cgroups named before `--` (their cgroup.procs files), then runs what follows. */
const JOIN_SCRIPT =
  'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"';

async function writable(path: string): Promise<boolean> {
  return access(path, 2 /* W_OK */).then(
    () => true,
    () => false,
  );
}

async function tryWrite(path: string, value: string): Promise<boolean> {
  return writeFile(path, value).then(
    () => true,
    () => false,
  );
}

/**
 * Limits and measures an instance's processes. `detect` picks the strongest mechanism the
 * machine allows (or the one `ORCHESTRA_INSTANCE_LIMITS` asks for); `prepare` makes an
 * instance's groups, `wrap` puts a command into them before it runs (a process that joins
 * before it forks leaves no child outside), `release` removes them once it stopped.
 */
export class ResourceLimiter {
  readonly applied: AppliedLimits;
  readonly #base: string;

  private constructor(applied: AppliedLimits, base: string) {
    this.applied = applied;
    this.#base = base;
  }

  static async detect(mode: LimitMode, nodeId: string): Promise<ResourceLimiter> {
    const group = `orchestra-${nodeId.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
    if (mode === 'off') {
      return new ResourceLimiter(
        { mechanism: 'none', enforced: [], note: 'ORCHESTRA_INSTANCE_LIMITS is off' },
        '',
      );
    }
    const notes: string[] = [];
    if (mode === 'auto' || mode === 'cgroup') {
      const v2 = await setUpV2(group);
      if (v2.ok) {
        return new ResourceLimiter(
          { mechanism: 'cgroup-v2', enforced: ['cpu', 'memory', 'processes'], note: null },
          v2.base,
        );
      }
      notes.push(v2.why);
      const v1 = await setUpV1(group);
      if (v1.ok) {
        return new ResourceLimiter(
          { mechanism: 'cgroup-v1', enforced: ['cpu', 'memory', 'processes'], note: null },
          group,
        );
      }
      notes.push(v1.why);
    }
    if (await hasPrlimit()) {
      return new ResourceLimiter(
        {
          mechanism: 'prlimit',
          enforced: ['memory'],
          note: `memory is limited as address space by prlimit; CPU and processes are not limited (${notes.join('; ') || 'prlimit was asked for'})`,
        },
        '',
      );
    }
    return new ResourceLimiter(
      { mechanism: 'none', enforced: [], note: `no cgroups and no prlimit: ${notes.join('; ')}` },
      '',
    );
  }

  /** Makes the instance's groups with its limits (again after a restart: idempotent). */
  async prepare(instanceId: string, resources: FilledSpec['resources']): Promise<void> {
    const { mechanism } = this.applied;
    const quota = Math.max(1000, Math.round(resources.cpus * CPU_PERIOD_US));
    if (mechanism === 'cgroup-v2') {
      const dir = join(this.#base, instanceId);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'memory.max'), String(resources.memory_bytes));
      await writeFile(join(dir, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
      await writeFile(join(dir, 'pids.max'), String(resources.processes));
    } else if (mechanism === 'cgroup-v1') {
      for (const controller of Object.values(V1_CONTROLLERS)) {
        await mkdir(this.#v1(controller, instanceId), { recursive: true });
      }
      await writeFile(
        join(this.#v1('memory', instanceId), 'memory.limit_in_bytes'),
        String(resources.memory_bytes),
      );
      await writeFile(
        join(this.#v1('cpu', instanceId), 'cpu.cfs_period_us'),
        String(CPU_PERIOD_US),
      );
      await writeFile(join(this.#v1('cpu', instanceId), 'cpu.cfs_quota_us'), String(quota));
      await writeFile(join(this.#v1('pids', instanceId), 'pids.max'), String(resources.processes));
    }
  }

  /** The command that runs `command` inside the instance's limits. */
  wrap(
    instanceId: string,
    resources: FilledSpec['resources'],
    command: { command: string; args: string[] },
  ): { command: string; args: string[] } {
    const { mechanism } = this.applied;
    if (mechanism === 'cgroup-v2' || mechanism === 'cgroup-v1') {
      const procs =
        mechanism === 'cgroup-v2'
          ? [join(this.#base, instanceId, 'cgroup.procs')]
          : Object.values(V1_CONTROLLERS).map((c) => join(this.#v1(c, instanceId), 'cgroup.procs'));
      return {
        command: '/bin/sh',
        args: [
          '-c',
          JOIN_SCRIPT,
          'orchestra-limits',
          ...procs,
          '--',
          command.command,
          ...command.args,
        ],
      };
    }
    if (mechanism === 'prlimit') {
      return {
        command: 'prlimit',
        args: [`--as=${resources.memory_bytes}`, '--', command.command, ...command.args],
      };
    }
    return command;
  }

  /**
   * What the instance's processes use now: from its cgroups, or (prlimit, none) from /proc,
   * for the processes of the groups led by `leaders` (its service and commands).
   */
  async usage(instanceId: string, leaders: number[]): Promise<ProcessUsage> {
    const { mechanism } = this.applied;
    const read = (path: string) => readFile(path, 'utf8').catch(() => '');
    if (mechanism === 'cgroup-v2') {
      const dir = join(this.#base, instanceId);
      const stat = await read(join(dir, 'cpu.stat'));
      const usec = Number(/usage_usec (\d+)/.exec(stat)?.[1] ?? 0);
      return {
        cpu_seconds: usec / 1e6,
        memory_bytes: Number((await read(join(dir, 'memory.current'))).trim() || 0),
        processes: Number((await read(join(dir, 'pids.current'))).trim() || 0),
      };
    }
    if (mechanism === 'cgroup-v1') {
      const ns = Number(
        (await read(join(this.#v1('cpuacct', instanceId), 'cpuacct.usage'))).trim() || 0,
      );
      return {
        cpu_seconds: ns / 1e9,
        memory_bytes: Number(
          (await read(join(this.#v1('memory', instanceId), 'memory.usage_in_bytes'))).trim() || 0,
        ),
        processes: Number(
          (await read(join(this.#v1('pids', instanceId), 'pids.current'))).trim() || 0,
        ),
      };
    }
    return procUsage(leaders);
  }

  /**
   * Kills whatever is left in the instance's groups, then removes them. A sandbox killed
   * while bwrap was still setting it up can miss `--die-with-parent` and outlive its
   * parent; its group still holds it.
   */
  async release(instanceId: string): Promise<void> {
    const { mechanism } = this.applied;
    const procs =
      mechanism === 'cgroup-v2'
        ? join(this.#base, instanceId, 'cgroup.procs')
        : mechanism === 'cgroup-v1'
          ? join(this.#v1('pids', instanceId), 'cgroup.procs')
          : undefined;
    if (procs !== undefined) {
      for (let round = 0; round < 50; round++) {
        const text = await readFile(procs, 'utf8').catch(() => '');
        const pids = text
          .split('\n')
          .filter((p) => /^\d+$/.test(p))
          .map(Number);
        if (pids.length === 0) break;
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone already
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    if (mechanism === 'cgroup-v2') await rmdir(join(this.#base, instanceId)).catch(() => {});
    if (mechanism === 'cgroup-v1') {
      for (const controller of Object.values(V1_CONTROLLERS)) {
        await rmdir(this.#v1(controller, instanceId)).catch(() => {});
      }
    }
  }

  /** Removes this node's own group, once empty (the node is closing). */
  async close(): Promise<void> {
    const { mechanism } = this.applied;
    if (mechanism === 'cgroup-v2') await rmdir(this.#base).catch(() => {});
    if (mechanism === 'cgroup-v1') {
      for (const controller of Object.values(V1_CONTROLLERS)) {
        await rmdir(join(ROOT, controller, this.#base)).catch(() => {});
      }
    }
  }

  #v1(controller: string, instanceId: string): string {
    return join(ROOT, controller, this.#base, instanceId);
  }
}

async function setUpV2(
  group: string,
): Promise<{ ok: true; base: string } | { ok: false; why: string }> {
  const controllers = await readFile(join(ROOT, 'cgroup.controllers'), 'utf8').catch(() => '');
  const have = controllers.split(/\s+/);
  if (!['cpu', 'memory', 'pids'].every((c) => have.includes(c))) {
    return {
      ok: false,
      why: 'cgroup v2 is not mounted at /sys/fs/cgroup with cpu, memory and pids',
    };
  }
  const base = join(ROOT, group);
  try {
    await mkdir(base, { recursive: true });
  } catch (err) {
    return { ok: false, why: `cannot make ${base}: ${(err as Error).message}` };
  }
  // The root's children get the controllers from its subtree_control; ours hand them on.
  await tryWrite(join(ROOT, 'cgroup.subtree_control'), '+cpu +memory +pids');
  if (!(await tryWrite(join(base, 'cgroup.subtree_control'), '+cpu +memory +pids'))) {
    return { ok: false, why: `cannot delegate cpu, memory and pids to ${base}` };
  }
  return { ok: true, base };
}

async function setUpV1(group: string): Promise<{ ok: true } | { ok: false; why: string }> {
  for (const controller of Object.values(V1_CONTROLLERS)) {
    const dir = join(ROOT, controller);
    if (!(await writable(dir))) {
      return { ok: false, why: `cgroup v1 ${controller} is not writable at ${dir}` };
    }
    try {
      await mkdir(join(dir, group), { recursive: true });
    } catch (err) {
      return { ok: false, why: `cannot make a ${controller} cgroup: ${(err as Error).message}` };
    }
  }
  return { ok: true };
}

function hasPrlimit(): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('prlimit', ['--version'], { timeout: 5000 }, (err) => resolve(err === null));
  });
}

const PAGE_BYTES = 4096;
const TICKS_PER_SECOND = 100;

/** Usage summed over the processes whose process group is one of `leaders`, from /proc. */
async function procUsage(leaders: number[]): Promise<ProcessUsage> {
  const usage: ProcessUsage = { cpu_seconds: 0, memory_bytes: 0, processes: 0 };
  if (leaders.length === 0) return usage;
  const groups = new Set(leaders);
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const pgid = Number(fields[2]);
    if (!groups.has(pgid)) continue;
    usage.processes += 1;
    usage.cpu_seconds += (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
    usage.memory_bytes += Number(fields[21]) * PAGE_BYTES;
  }
  return usage;
}
