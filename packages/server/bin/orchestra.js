#!/usr/bin/env node
// Plain JavaScript so that an old Node gets a clear message instead of a syntax error.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `orchestra needs Node.js 24 or later; this is ${process.version}.\n` +
      'Run it through npm (npm start, npx orchestra), which uses the Node.js the repository pins.\n',
  );
  process.exit(1);
}
// Node keeps the code it compiled (stripped TypeScript, bytecode) and checks it by content:
// every later start of the CLI or the server compiles only what changed.
const { default: module } = await import('node:module');
module.enableCompileCache?.();
const { main } = await import('../src/cli/main.ts');
const command = process.argv[2];
const code = await main(process.argv.slice(2));
if (command !== 'start' || code !== 0) process.exitCode = code;
