import packageJson from '../package.json' with { type: 'json' };

// Constants the CLI needs without loading the server (a client command starts faster).

export const VERSION: string = packageJson.version;

/** Name of the file in the data directory that holds the first-start admin key. */
export const ADMIN_KEY_FILE = 'admin-key';
