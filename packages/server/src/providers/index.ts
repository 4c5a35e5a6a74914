// The providers module's public surface: other modules and the server import it from here
// only (npm run lint checks it).
export * from './migrations.ts';
export * from './model-call.ts';
export { costOf, type ModelCallResult, ModelService } from './model-service.ts';
export * from './module.ts';
export * from './routes.ts';
export {
  ScriptedModelServer,
  type ScriptedModelServerOptions,
  type ScriptedRequest,
  type ScriptedToolCall,
  type ScriptedTurn,
} from './scripted-model-server.ts';
