import { VERSION } from '../../version.ts';
import { command, print, single } from '../spec.ts';

// Loads nothing but the framework: `orchestra version` is as fast as the CLI starts.

export const group = single({
  name: 'version',
  summary: 'Print the version',
  command: command({
    name: 'version',
    description: 'Prints the version of this CLI and of the Node.js runtime.',
    common: {
      json: { type: 'boolean', default: false, description: 'Print JSON' },
    },
    run({ values }) {
      print(
        values.json,
        { version: VERSION, node: process.versions.node },
        () => `orchestra ${VERSION} (Node.js ${process.versions.node})`,
      );
      return 0;
    },
  }),
});
