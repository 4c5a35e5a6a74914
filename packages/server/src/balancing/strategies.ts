import { createHash } from 'node:crypto';
import type { StrategyName } from '@orchestra/protocol';

// The strategies' names are the wire contract's (@orchestra/protocol): templates, tasks and
// service resolution name them.
export { STRATEGY_NAMES, type StrategyName } from '@orchestra/protocol';

/** Something that can take work: an agent, or an instance of a registered service. */
export interface Candidate {
  /** Stable across reconnects; ties are broken by it, so picks are reproducible. */
  id: string;
  /** Relative capacity, > 0. Default 1. */
  weight?: number;
  /** Work it holds now. */
  inFlight: number;
  /** Most work it takes at once; a candidate at its limit is never picked. */
  maxConcurrency: number;
  /** Moving average of how long its work takes (see `updateEwma`); undefined if unknown. */
  latencyEwmaMs?: number | undefined;
  /** Reported load, each 0 to 1; undefined if it never reported. */
  load?: { cpu: number; memory: number } | undefined;
}

export interface PickContext {
  /** What `consistent_hash` keeps together: a session id or a concurrency key. */
  key?: string | undefined;
}

/**
 * Chooses one candidate for a piece of work. A balancer keeps a little state (the round
 * robin position, weighted credits), so keep one per pool and strategy. It never returns
 * a candidate at its concurrency limit; it returns undefined when every one is.
 */
export interface Balancer {
  readonly strategy: StrategyName;
  pick(candidates: readonly Candidate[], context?: PickContext): Candidate | undefined;
}

const weightOf = (c: Candidate) => (c.weight !== undefined && c.weight > 0 ? c.weight : 1);
const byId = (a: Candidate, b: Candidate) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
const hasRoom = (c: Candidate) => c.inFlight < c.maxConcurrency;

/** Exponentially weighted moving average: recent samples count more, old ones fade. */
export function updateEwma(previous: number | undefined, sample: number, alpha = 0.3): number {
  return previous === undefined ? sample : previous + alpha * (sample - previous);
}

/** The candidate with the lowest score; ties go to fewer in flight, then to the lower id. */
function lowest(candidates: Candidate[], score: (c: Candidate) => number): Candidate | undefined {
  let best: Candidate | undefined;
  let bestScore = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const s = score(c);
    if (
      best === undefined ||
      s < bestScore ||
      (s === bestScore &&
        (c.inFlight < best.inFlight || (c.inFlight === best.inFlight && c.id < best.id)))
    ) {
      best = c;
      bestScore = s;
    }
  }
  return best;
}

/** Next in id order after the one picked last, wrapping around; robust to pool changes. */
class RoundRobin implements Balancer {
  readonly strategy = 'round_robin' as const;
  #last: string | undefined;

  pick(candidates: readonly Candidate[]): Candidate | undefined {
    const open = candidates.filter(hasRoom).sort(byId);
    const next = open.find((c) => this.#last === undefined || c.id > this.#last) ?? open[0];
    if (next) this.#last = next.id;
    return next;
  }
}

/**
 * Smooth weighted round robin: over any run of picks each candidate gets its share of the
 * total weight, interleaved rather than in bursts (weights 3:1 give a a b a, not a a a b).
 */
class Weighted implements Balancer {
  readonly strategy = 'weighted' as const;
  readonly #credit = new Map<string, number>();

  pick(candidates: readonly Candidate[]): Candidate | undefined {
    const open = candidates.filter(hasRoom).sort(byId);
    if (open.length === 0) return undefined;
    let total = 0;
    let best: Candidate | undefined;
    let bestCredit = Number.NEGATIVE_INFINITY;
    for (const c of open) {
      const credit = (this.#credit.get(c.id) ?? 0) + weightOf(c);
      this.#credit.set(c.id, credit);
      total += weightOf(c);
      if (credit > bestCredit) {
        best = c;
        bestCredit = credit;
      }
    }
    if (best) this.#credit.set(best.id, bestCredit - total);
    // Forget candidates that left, so the map does not grow with churn.
    if (this.#credit.size > open.length * 2) {
      const present = new Set(open.map((c) => c.id));
      for (const id of this.#credit.keys()) if (!present.has(id)) this.#credit.delete(id);
    }
    return best;
  }
}

/** Fewest in flight per unit of weight. */
class LeastConnections implements Balancer {
  readonly strategy = 'least_connections' as const;

  pick(candidates: readonly Candidate[]): Candidate | undefined {
    return lowest(candidates.filter(hasRoom), (c) => c.inFlight / weightOf(c));
  }
}

/** Lowest latency average; a candidate without one is tried first, so that it gets one. */
class Latency implements Balancer {
  readonly strategy = 'latency' as const;

  pick(candidates: readonly Candidate[]): Candidate | undefined {
    return lowest(candidates.filter(hasRoom), (c) => c.latencyEwmaMs ?? 0);
  }
}

/**
 * Least loaded by its most constrained resource: the highest of reported CPU, reported
 * memory and the share of its concurrency in use. Never reported counts as idle.
 */
class Resource implements Balancer {
  readonly strategy = 'resource' as const;

  pick(candidates: readonly Candidate[]): Candidate | undefined {
    return lowest(candidates.filter(hasRoom), (c) =>
      Math.max(c.load?.cpu ?? 0, c.load?.memory ?? 0, c.inFlight / c.maxConcurrency),
    );
  }
}

/**
 * Rendezvous (highest random weight) hashing: the same key goes to the same candidate for
 * as long as it is in the pool and has room; when one leaves, only its keys move. Weights
 * scale each candidate's share of keys. Without a key, behaves as least_connections.
 */
class ConsistentHash implements Balancer {
  readonly strategy = 'consistent_hash' as const;
  readonly #fallback = new LeastConnections();

  pick(candidates: readonly Candidate[], context?: PickContext): Candidate | undefined {
    const key = context?.key;
    if (key === undefined) return this.#fallback.pick(candidates);
    let best: Candidate | undefined;
    let bestScore = Number.NEGATIVE_INFINITY;
    for (const c of candidates) {
      if (!hasRoom(c)) continue;
      const score = -weightOf(c) / Math.log(unitHash(`${key}\u0000${c.id}`));
      if (score > bestScore || (score === bestScore && best !== undefined && c.id < best.id)) {
        best = c;
        bestScore = score;
      }
    }
    return best;
  }
}

/** A hash of `text` mapped into (0, 1), uniform enough for rendezvous hashing. */
function unitHash(text: string): number {
  const value = createHash('sha256').update(text).digest().readUIntBE(0, 6);
  return (value + 1) / (2 ** 48 + 1);
}

/** A new balancer for one pool. */
export function createBalancer(strategy: StrategyName): Balancer {
  switch (strategy) {
    case 'round_robin':
      return new RoundRobin();
    case 'weighted':
      return new Weighted();
    case 'least_connections':
      return new LeastConnections();
    case 'latency':
      return new Latency();
    case 'resource':
      return new Resource();
    case 'consistent_hash':
      return new ConsistentHash();
  }
}
