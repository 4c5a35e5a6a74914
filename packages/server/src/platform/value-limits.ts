import { ApiError } from './errors.ts';
import { type LimitValue, limitDetails, limitOrigin } from './tenant-limits.ts';

/**
 * The JSON text of `value`, to store; throws VALUE_TOO_LARGE (413) naming `field`, the
 * limit and where its value came from (the tenant's own limit, or the node's setting) when
 * the text is longer than the limit. Nothing is stored then.
 */
export function jsonWithinLimit(value: unknown, field: string, limit: LimitValue): string {
  const json = JSON.stringify(value) ?? 'null';
  const maxBytes = limit.value;
  // A string's length bounds its UTF-8 bytes from below: only long ones need counting.
  if (json.length * 3 <= maxBytes) return json;
  const bytes = Buffer.byteLength(json);
  if (bytes > maxBytes) {
    throw new ApiError(
      'VALUE_TOO_LARGE',
      `${field} is ${bytes} bytes of JSON; the most is ${maxBytes} (${limitOrigin(limit)})`,
      {
        details: { field, ...limitDetails(limit), max_bytes: maxBytes, actual_bytes: bytes },
      },
    );
  }
  return json;
}
