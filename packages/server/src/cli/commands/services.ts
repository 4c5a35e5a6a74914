import { SERVICES_HELP, servicesCommand } from '../config-commands.ts';
import { legacy } from '../spec.ts';

// As commands/config.ts: wired in with its hand-written help until it has a spec.

export const group = legacy({
  name: 'services',
  summary: 'Service registry: registered instances and their health',
  help: SERVICES_HELP,
  run: servicesCommand,
});
