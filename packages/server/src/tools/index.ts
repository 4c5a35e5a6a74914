// The tools module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './agent-source.ts';
export * from './approval-service.ts';
export * from './call-log.ts';
export * from './changes.ts';
export * from './definition.ts';
export * from './executor.ts';
export * from './migrations.ts';
export * from './module.ts';
export * from './policy-service.ts';
export * from './routes.ts';
export * from './settings.ts';
export * from './tool-error.ts';
export * from './tool-service.ts';
export * from './workspace-tools.ts';
