import { command, single, UsageError } from '../spec.ts';

export const group = single({
  name: 'demo-provider',
  summary: 'Run the scripted demo model provider (not a language model) for trying Orchestra',
  command: command({
    name: 'demo-provider',
    description: [
      'Serves a scripted stand-in for a model on loopback: it speaks the OpenAI Chat Completions API (at /v1) and the Anthropic Messages API, streaming and not. It understands nothing: it calls an offered tool whose name appears in the message (with the first JSON object of the message as arguments), reports what tools returned, and otherwise repeats the message. Every answer says it comes from the demo provider. Stop it with Ctrl-C. Example:',
      '  orchestra demo-provider --port 11435 &',
      '  orchestra providers add demo --kind openai --base-url http://127.0.0.1:11435/v1 --model demo',
    ].join('\n'),
    options: {
      port: { type: 'string', value: 'PORT', description: 'The port to listen on (default 11435)' },
    },
    common: {},
    async run({ values, positionals, path }) {
      if (positionals.length > 0) throw new UsageError(`${path} takes no arguments`);
      const text = values.port ?? '11435';
      if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) {
        throw new UsageError(`--port must be a port number, got "${text}"`);
      }
      // Loaded here: the other commands need none of it.
      const { ScriptedModelServer } = await import('../../providers/index.ts');
      const server = await new ScriptedModelServer({ models: ['demo'] }).listen(Number(text));
      process.stdout.write(
        `Demo model provider (scripted, not a language model) at ${server.url}\n` +
          `  OpenAI Chat Completions: ${server.url}/v1   Anthropic Messages: ${server.url}\n`,
      );
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
      return 0;
    },
  }),
});
