import { fileURLToPath } from 'node:url';
import { buildPackage, buildProtocol, runBuildScript } from '../../protocol/scripts/build.ts';

export { sourcesHash } from '../../protocol/scripts/build.ts';

// Builds @orchestra/sdk into dist/ when its sources changed since the last build, or with
// --force (decision 0012). The SDK's declarations import @orchestra/protocol's, and the SDK
// is compiled against that package's built declarations as a user's project would be, so
// the protocol is built first (decision 0014).

const sdkDir = fileURLToPath(new URL('..', import.meta.url));

/**
 * Builds the protocol's and the SDK's dist/ unless up to date (always with `force`). Returns
 * false when it could not, because TypeScript (a dev dependency) is not installed.
 */
export function buildSdk(options: { force?: boolean } = {}): boolean {
  return buildProtocol(options) && buildPackage(sdkDir, options);
}

if (import.meta.main) runBuildScript(buildSdk);
