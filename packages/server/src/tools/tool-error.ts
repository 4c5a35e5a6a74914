import type { ToolResult } from '@orchestra/protocol';
import type { ErrorCode } from '../platform/errors.ts';

/** Why a call to a tool's source did not complete; each kind has a catalogued code. */
export type ToolFailureKind =
  | 'timeout'
  | 'unavailable'
  | 'protocol'
  | 'too_large'
  | 'circuit_open'
  | 'busy';

const CODES: Record<ToolFailureKind, ErrorCode> = {
  timeout: 'TOOL_TIMEOUT',
  unavailable: 'TOOL_UPSTREAM_UNAVAILABLE',
  protocol: 'TOOL_UPSTREAM_ERROR',
  too_large: 'TOOL_RESULT_TOO_LARGE',
  circuit_open: 'TOOL_CIRCUIT_OPEN',
  busy: 'TOOL_UPSTREAM_BUSY',
};

/**
 * A call that did not complete: the source timed out, was unreachable, answered garbage or
 * too much. It becomes a failed call record and a tool-level error result, not an HTTP
 * error: the caller (often a model) reads it like any tool error.
 */
export class ToolFailure extends Error {
  readonly kind: ToolFailureKind;
  /** Whether trying again could succeed (for tools that are safe to retry). */
  readonly retryable: boolean;

  readonly #code: ErrorCode | undefined;

  /** `code`: a catalogued code that says more than the kind's (a missing secret's). */
  constructor(
    kind: ToolFailureKind,
    message: string,
    options?: { retryable?: boolean; cause?: unknown; code?: ErrorCode },
  ) {
    super(message, { cause: options?.cause });
    this.name = 'ToolFailure';
    this.kind = kind;
    this.retryable = options?.retryable ?? (kind === 'timeout' || kind === 'unavailable');
    this.#code = options?.code;
  }

  get code(): ErrorCode {
    return this.#code ?? CODES[this.kind];
  }
}

/** A tool-level error result: what a caller sees of a failed or refused call. */
export function errorResult(message: string): ToolResult {
  return { content: [{ type: 'text', text: message }], is_error: true };
}
