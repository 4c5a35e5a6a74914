/** Service names: also the second part of the realtime topic `services.<name>`. */
export { SERVICE_NAME_PATTERN } from '../platform/names.ts';
