// Durations such as `500ms`, `30s`, `2m`, `1h`, `30d`: one grammar for the CLI's flags
// (--wait, --expires-in) and the API's `?wait=`. Pure, with no imports, so that the CLI can
// use it without loading the server.

export const DURATION_UNITS = ['ms', 's', 'm', 'h', 'd'] as const;
export type DurationUnit = (typeof DURATION_UNITS)[number];

const UNIT_MS: Record<DurationUnit, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** What one caller accepts: its units, how many digits, the longest, a bare number. */
export interface DurationFormat {
  /** The units accepted, in the order the messages name them. */
  readonly units: readonly DurationUnit[];
  /** At most this many digits (default: any number). */
  readonly maxDigits?: number;
  /** The unit of a number without one; without it, a unit is required. */
  readonly bareUnit?: DurationUnit;
  /** The longest duration accepted, in milliseconds. */
  readonly maxMs?: number;
}

/** The milliseconds of `text`, or why it is not a duration of `format`. */
export type ParsedDuration =
  | { ok: true; ms: number }
  | { ok: false; reason: 'format' }
  | { ok: false; reason: 'too_long'; maxMs: number };

/**
 * The regular expression source of `format`, anchored: `^\d{1,6}(ms|s|m)?$`. Usable as a
 * JSON Schema `pattern`.
 */
export function durationPattern(format: DurationFormat): string {
  const digits = format.maxDigits === undefined ? '\\d+' : `\\d{1,${format.maxDigits}}`;
  return `^${digits}(${format.units.join('|')})${format.bareUnit === undefined ? '' : '?'}$`;
}

/** Parses `text` as a duration of `format`; resolves to the reason, never throws. */
export function parseDuration(text: string, format: DurationFormat): ParsedDuration {
  const match = new RegExp(durationPattern(format)).exec(text);
  if (match === null) return { ok: false, reason: 'format' };
  // The pattern's one group is the unit (a JSON Schema pattern needs no more).
  const unitText = match[1] ?? '';
  const unit = (unitText || format.bareUnit) as DurationUnit;
  const ms = Number(text.slice(0, text.length - unitText.length)) * UNIT_MS[unit];
  if (format.maxMs !== undefined && ms > format.maxMs) {
    return { ok: false, reason: 'too_long', maxMs: format.maxMs };
  }
  return { ok: true, ms };
}

/** `ms, s, m or h`: the units of `format`, for messages. */
export function durationUnitsText(format: DurationFormat): string {
  const units = format.units;
  return units.length <= 1
    ? (units[0] ?? '')
    : `${units.slice(0, -1).join(', ')} or ${units.at(-1)}`;
}

/** `ms` in the largest unit of `format` that holds it whole: `36500d`, `5m`, `1500ms`. */
export function formatDuration(ms: number, format: DurationFormat): string {
  const units = [...format.units].sort((a, b) => UNIT_MS[b] - UNIT_MS[a]);
  const unit = units.find((u) => ms % UNIT_MS[u] === 0) ?? units.at(-1) ?? 'ms';
  return `${ms / UNIT_MS[unit]}${unit}`;
}
