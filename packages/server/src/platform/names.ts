// Name rules that more than one module needs: the realtime topics of the config center
// (`config.<env>…`) and of the service registry (`services.<name>`) carry them, and the
// realtime module checks topic names without depending on either module.

/** A config environment's name. */
export const ENV_PATTERN = '^[a-z0-9][a-z0-9_-]{0,31}$';

/** A registered service's name: also the second part of the topic `services.<name>`. */
export const SERVICE_NAME_PATTERN = '^[a-z0-9][a-z0-9_.-]{0,62}$';
