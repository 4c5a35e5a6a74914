import { execFile } from 'node:child_process';
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import type {
  Instance,
  InstanceUsage,
  NodeUsage,
  ResourceRecommendation as Recommendation,
} from '@orchestra/protocol';
import type { AppliedLimits, ProcessUsage } from './limits.ts';

export type { InstanceUsage, NodeUsage, Recommendation };

// The design's resource service: what instances use (CPU, memory, processes, disk) and
// what their node has, and recommendations for instances that use much more or much less
// than their template gives them.

const DISK_CACHE_MS = 30_000;
const OVER = 0.9;
const UNDER_MEMORY = 0.1;
const UNDER_CPU = 0.05;
const IDLE_MS = 3_600_000;

/** Bytes on disk under a directory (`du`), cached for a while per directory. */
export class DiskUsage {
  readonly #cache = new Map<string, { bytes: number; at: number }>();

  async of(dir: string): Promise<number> {
    const cached = this.#cache.get(dir);
    if (cached !== undefined && Date.now() - cached.at < DISK_CACHE_MS) return cached.bytes;
    const bytes = await new Promise<number>((resolve) => {
      execFile('du', ['-s', '-B1', '--', dir], { timeout: 60_000 }, (err, stdout) => {
        resolve(err === null ? Number(stdout.split(/\s/)[0] ?? 0) : 0);
      });
    });
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(dir, { bytes, at: Date.now() });
    return bytes;
  }

  forget(dir: string): void {
    this.#cache.delete(dir);
  }
}

export function nodeUsage(
  nodeId: string,
  running: number,
  limits: AppliedLimits | null,
): NodeUsage {
  return {
    node_id: nodeId,
    cpus: cpus().length,
    memory_total_bytes: totalmem(),
    memory_free_bytes: freemem(),
    load_average: loadavg().map((n) => Math.round(n * 100) / 100),
    instances_running: running,
    limits,
  };
}

export function usageOf(
  instance: Instance,
  processes: ProcessUsage,
  diskBytes: number,
  now = Date.now(),
): InstanceUsage {
  const running = instance.state === 'running' && instance.started_at !== null;
  const wallSeconds = running
    ? Math.max(0.001, (now - Date.parse(instance.started_at as string)) / 1000)
    : 0;
  const r = instance.resources;
  return {
    cpu_seconds: round(processes.cpu_seconds, 3),
    cpu_utilization: running ? round(processes.cpu_seconds / wallSeconds / r.cpus, 4) : 0,
    memory_bytes: processes.memory_bytes,
    memory_utilization: round(processes.memory_bytes / r.memory_bytes, 4),
    processes: processes.processes,
    disk_bytes: diskBytes,
    storage_utilization: round(diskBytes / r.storage_bytes, 4),
  };
}

/**
 * Recommendations for one instance: over-used (90% or more of CPU, memory or storage),
 * under-used (under 10% of its memory or 5% of its CPU after `minRunningMs` running), and
 * idle (running without activity for an hour, with no idle timeout).
 */
export function recommend(
  instance: Instance,
  usage: InstanceUsage,
  options: { minRunningMs: number; now?: number },
): Recommendation[] {
  const now = options.now ?? Date.now();
  const out: Recommendation[] = [];
  const r = instance.resources;
  const add = (rec: Omit<Recommendation, 'instance_id'>) =>
    out.push({ instance_id: instance.id, ...rec });
  if (usage.storage_utilization >= OVER) {
    add({
      kind: 'over_used',
      resource: 'storage',
      used: usage.disk_bytes,
      allocated: r.storage_bytes,
      utilization: usage.storage_utilization,
      message: `its files take ${pct(usage.storage_utilization)} of resources.storage_bytes: raise it, or delete files`,
    });
  }
  if (instance.state !== 'running' || instance.started_at === null) return out;
  if (usage.memory_utilization >= OVER) {
    add({
      kind: 'over_used',
      resource: 'memory',
      used: usage.memory_bytes,
      allocated: r.memory_bytes,
      utilization: usage.memory_utilization,
      message: `it uses ${pct(usage.memory_utilization)} of resources.memory_bytes: raise it before its processes are killed`,
    });
  }
  if (usage.cpu_utilization >= OVER) {
    add({
      kind: 'over_used',
      resource: 'cpu',
      used: usage.cpu_seconds,
      allocated: r.cpus,
      utilization: usage.cpu_utilization,
      message: `it used ${pct(usage.cpu_utilization)} of its ${r.cpus} CPU since it started: raise resources.cpus`,
    });
  }
  const ranFor = now - Date.parse(instance.started_at);
  if (ranFor >= options.minRunningMs) {
    if (usage.memory_utilization < UNDER_MEMORY) {
      const suggested = Math.max(
        64 * 1024 ** 2,
        2 ** Math.ceil(Math.log2(Math.max(1, usage.memory_bytes * 2))),
      );
      add({
        kind: 'under_used',
        resource: 'memory',
        used: usage.memory_bytes,
        allocated: r.memory_bytes,
        utilization: usage.memory_utilization,
        message: `it uses ${pct(usage.memory_utilization)} of resources.memory_bytes: ${suggested} bytes would do and free quota`,
      });
    }
    if (usage.cpu_utilization < UNDER_CPU && r.cpus > 0.25) {
      add({
        kind: 'under_used',
        resource: 'cpu',
        used: usage.cpu_seconds,
        allocated: r.cpus,
        utilization: usage.cpu_utilization,
        message: `it used ${pct(usage.cpu_utilization)} of its ${r.cpus} CPU since it started: 0.25 would do`,
      });
    }
  }
  const last = instance.last_active_at === null ? 0 : Date.parse(instance.last_active_at);
  if (instance.idle_timeout_ms === null && now - last >= IDLE_MS) {
    add({
      kind: 'idle',
      resource: 'instance',
      used: 0,
      allocated: 1,
      utilization: 0,
      message: `no activity for ${Math.floor((now - last) / 60_000)} minutes and no idle timeout: stop it, or set idle_timeout_ms`,
    });
  }
  return out;
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

function pct(n: number): string {
  return `${Math.round(n * 1000) / 10}%`;
}
