import type { Percentiles, Stats } from '@orchestra/sdk';
import { formatTable } from './table.ts';

/** `12 ms`, `1.4 s`, `3.2 min`: short enough for a table cell. */
export function durationText(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

function percentilesText(p: Percentiles | null): string {
  if (p === null) return 'none';
  return `p50 ${durationText(p.p50)}, p95 ${durationText(p.p95)}, p99 ${durationText(p.p99)}, max ${durationText(p.max)} (${p.samples} task${p.samples === 1 ? '' : 's'})`;
}

/** `orchestra stats` for people: a summary, then one row per minute. */
export function describeStats(stats: Stats): string {
  const a = stats.agents;
  const t = stats.tasks;
  const statuses = Object.entries(a.by_status)
    .map(([status, n]) => `${n} ${status}`)
    .join(', ');
  const oldest =
    t.oldest_queued_at === null
      ? ''
      : ` (oldest queued ${durationText(Date.parse(stats.at) - Date.parse(t.oldest_queued_at))} ago)`;
  const f = t.finished;
  const scope = stats.template === null ? '' : ` of template ${stats.template}`;
  const lines = [
    `Agents:      ${a.total} (${statuses}); ${a.slots_used} of ${a.slots} slot${a.slots === 1 ? '' : 's'} in use, ${a.in_flight} task${a.in_flight === 1 ? '' : 's'} held`,
    `Tasks now${scope}: ${t.active.queued} queued, ${t.active.assigned} assigned, ${t.active.running} running, ${t.active.awaiting_approval} awaiting approval${oldest}`,
    `Last ${stats.window.minutes} min: ${t.submitted} submitted; ${f.succeeded} succeeded, ${f.failed} failed, ${f.cancelled} cancelled, ${f.timed_out} timed out, ${f.dead} dead`,
    `Latency:     ${percentilesText(t.latency_ms)}`,
    `Queue wait:  ${percentilesText(t.queue_wait_ms)}`,
    '',
    formatTable(
      [
        'MINUTE (UTC)',
        'SUBMITTED',
        'SUCCEEDED',
        'FAILED',
        'CANCELLED',
        'TIMED OUT',
        'DEAD',
        'P50',
        'P99',
      ],
      t.per_minute.map((m) => [
        m.at.slice(11, 16),
        String(m.submitted),
        String(m.finished.succeeded),
        String(m.finished.failed),
        String(m.finished.cancelled),
        String(m.finished.timed_out),
        String(m.finished.dead),
        m.latency_ms === null ? '-' : durationText(m.latency_ms.p50),
        m.latency_ms === null ? '-' : durationText(m.latency_ms.p99),
      ]),
    ),
  ];
  return lines.join('\n');
}
