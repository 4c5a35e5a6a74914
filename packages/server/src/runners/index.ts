// The runners module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export { DEFAULT_LIMITS, JOURNAL, renderPrompt } from './agent-loop.ts';
export { HostedRunner, hostedAgentId } from './hosted-runner.ts';
export * from './module.ts';
export * from './settings.ts';
