import Type, { type TSchema } from 'typebox';
import { Value } from 'typebox/value';

/**
 * A checker for the payloads of one direction of a WebSocket protocol (`SERVER_AGENT_FRAMES`,
 * `REALTIME_SERVER_FRAMES`…): what a payload breaks of it — an unknown `kind`, a missing or
 * wrong field, a field its kind does not declare — or undefined when it follows it. For
 * clients and test suites that hold a server to the contract.
 */
export function frameChecker(
  frames: Record<string, Record<string, TSchema>>,
): (payload: unknown) => string | undefined {
  const schemas = new Map(
    Object.entries(frames).map(([kind, fields]) => [
      kind,
      Type.Object({ kind: Type.Literal(kind), ...fields }, { additionalProperties: false }),
    ]),
  );
  return (payload) => {
    const kind = (payload as { kind?: unknown } | undefined)?.kind;
    const schema = typeof kind === 'string' ? schemas.get(kind) : undefined;
    if (schema === undefined) return `unknown payload.kind ${JSON.stringify(kind)}`;
    const first = Value.Errors(schema, payload)[0];
    return first === undefined ? undefined : `payload${first.instancePath} ${first.message}`;
  };
}
