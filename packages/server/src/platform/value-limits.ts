import { ApiError } from './errors.ts';
import { SETTINGS } from './settings.ts';

/** The settings that bound a stored value, each measured as JSON text. */
export type ValueLimitSetting =
  | 'taskInputMaxBytes'
  | 'taskOutputMaxBytes'
  | 'taskEventMaxBytes'
  | 'topicMessageMaxBytes';

/**
 * The JSON text of `value`, to store; throws VALUE_TOO_LARGE (413) naming `field`, the
 * setting and its value when the text is longer than `maxBytes`. Nothing is stored then.
 */
export function jsonWithinLimit(
  value: unknown,
  field: string,
  setting: ValueLimitSetting,
  maxBytes: number,
): string {
  const json = JSON.stringify(value) ?? 'null';
  // A string's length bounds its UTF-8 bytes from below: only long ones need counting.
  if (json.length * 3 <= maxBytes) return json;
  const bytes = Buffer.byteLength(json);
  if (bytes > maxBytes) {
    const env = SETTINGS[setting].env;
    throw new ApiError(
      'VALUE_TOO_LARGE',
      `${field} is ${bytes} bytes of JSON; the most is ${maxBytes} (${env})`,
      { details: { field, setting: env, max_bytes: maxBytes, actual_bytes: bytes } },
    );
  }
  return json;
}
