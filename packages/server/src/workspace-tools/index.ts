// The workspace-tools module's public surface: other modules and the server import it from
// here only (npm run lint checks it).
export * from './module.ts';
export * from './workspace-calls.ts';
