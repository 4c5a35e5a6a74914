import { defineModule } from '../module.ts';
import { ChatService } from './chat-service.ts';
import { chatRoutes } from './routes.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    chat: ChatService;
  }
}

/** The OpenAI-compatible endpoint: `POST /v1/chat/completions` answered by hosted agents. */
export const chatModule = defineModule({
  name: 'chat',
  needs: ['tasks', 'templates', 'events'],
  errors: ['AGENT_RUN_FAILED'],
  create: ({ need }) =>
    new ChatService({ tasks: need('tasks').tasks, templates: need('templates') }),
  routes:
    (chat, { shutdown }) =>
    async (app) => {
      await app.register(chatRoutes, { chat, shutdown });
    },
});
