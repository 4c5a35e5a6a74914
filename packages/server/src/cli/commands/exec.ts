import { single } from '../spec.ts';
import { exec } from './instances.ts';

/** `orchestra exec ID -- COMMAND`: the same as `orchestra instances exec`, shorter. */
export const group = single({
  name: 'exec',
  summary: 'Run a command in an instance (orchestra instances exec)',
  command: exec,
});
