/** Service names: also the second part of the realtime topic `services.<name>`. */
export const SERVICE_NAME_PATTERN = '^[a-z0-9][a-z0-9_.-]{0,62}$';
