// Preloaded by `npm test` (node --import): the test runner's processes keep the code Node
// compiled (TypeScript stripped, bytecode) in its compile cache, checked by content, so that
// a hundred test processes do not each compile the same sources again.
import module from 'node:module';

module.enableCompileCache?.();
