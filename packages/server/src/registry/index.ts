// The registry module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './health.ts';
export * from './module.ts';
export * from './nodes.ts';
export * from './registry-service.ts';
export * from './routes.ts';
