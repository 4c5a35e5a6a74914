// The gateway module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './console.ts';
export * from './identity-service.ts';
export * from './migrations.ts';
export * from './module.ts';
export * from './routes.ts';
export * from './tenant-limit-store.ts';
