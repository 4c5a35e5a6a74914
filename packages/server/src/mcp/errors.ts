/**
 * Why a call to an upstream MCP server failed, in the words the tool executor maps to its
 * own answers:
 * - `timeout`: no answer within the call's time budget (the request was cancelled upstream);
 * - `unavailable`: the upstream is not connected, or died while the call was in flight;
 * - `protocol`: the upstream answered with a JSON-RPC error or with something that is not MCP;
 * - `closed`: `close()` was called on the upstream; it will not come back.
 */
export type UpstreamErrorKind = 'timeout' | 'unavailable' | 'protocol' | 'closed';

export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind;
  /** The JSON-RPC error code when the upstream answered with one (`protocol` only). */
  readonly rpcCode: number | undefined;

  constructor(
    kind: UpstreamErrorKind,
    message: string,
    options?: { cause?: unknown; rpcCode?: number },
  ) {
    super(message, { cause: options?.cause });
    this.name = 'UpstreamError';
    this.kind = kind;
    this.rpcCode = options?.rpcCode;
  }
}
