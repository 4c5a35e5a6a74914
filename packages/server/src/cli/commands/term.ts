import { single } from '../spec.ts';
import { term } from './terminals.ts';

/** `orchestra term INSTANCE [TERMINAL]`: attach to a terminal of an instance. */
export const group = single({
  name: 'term',
  summary: 'Attach to a terminal of an instance (a new one, or TERMINAL)',
  command: term,
});
