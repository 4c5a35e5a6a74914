// The chat module's public surface: other modules and the server import it from here only
// (npm run lint checks it).
export * from './chat-service.ts';
export * from './module.ts';
export * from './routes.ts';
