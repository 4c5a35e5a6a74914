import { Orchestra, OrchestraError, RealtimeClient, type WhoAmI } from '@orchestra/sdk';
import { createContext, useContext } from 'react';
import { TopicHub } from './live.ts';

// The API key lives in sessionStorage: it survives reloads of the tab, not the tab itself,
// and no other site can read it.
const KEY_ITEM = 'orchestra.console.key';

export interface Session {
  client: Orchestra;
  realtime: RealtimeClient;
  /** Shared live subscriptions. */
  topics: TopicHub;
  who: WhoAmI;
  /** Whether the role may change things (operator and admin); viewers only read. */
  canWrite: boolean;
}

export function storedKey(): string | null {
  return window.sessionStorage.getItem(KEY_ITEM);
}

/** Checks the key against the server and opens a session; throws a message for the user. */
export async function signIn(apiKey: string): Promise<Session> {
  const key = apiKey.trim();
  if (key === '') throw new Error('Enter an API key.');
  const client = new Orchestra({ url: window.location.origin, apiKey: key });
  let who: WhoAmI;
  try {
    who = await client.whoami();
  } catch (err) {
    if (err instanceof OrchestraError && err.status === 401) {
      throw new Error('This API key is not valid: it is unknown, revoked or expired.');
    }
    if (err instanceof OrchestraError && err.status === 0) {
      throw new Error('The server could not be reached. Check that Orchestra is running.');
    }
    throw err;
  }
  if (who.role === 'agent') {
    throw new Error(
      'This key has the agent role, which is for agent processes. Sign in with an admin, operator or viewer key.',
    );
  }
  window.sessionStorage.setItem(KEY_ITEM, key);
  const realtime = new RealtimeClient({ url: window.location.origin, apiKey: key });
  return {
    client,
    realtime,
    topics: new TopicHub(realtime),
    who,
    canWrite: who.role === 'admin' || who.role === 'operator',
  };
}

export function signOut(session: Session | undefined): void {
  window.sessionStorage.removeItem(KEY_ITEM);
  session?.realtime.close();
}

export const SessionContext = createContext<Session | undefined>(undefined);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (session === undefined) throw new Error('useSession outside a signed-in page');
  return session;
}

/** What a VALIDATION_FAILED error says of one field (`body.name`), if it names that field. */
export function fieldMessage(err: unknown, field: string): string | undefined {
  if (!(err instanceof OrchestraError)) return undefined;
  const fields = err.details?.fields as { field: string; message: string }[] | undefined;
  return fields?.find((f) => f.field === field)?.message;
}

/** A message for an error from the API, as a user should read it. */
export function describeError(err: unknown): string {
  if (err instanceof OrchestraError) {
    if (err.status === 0) return 'The server could not be reached; retrying may help.';
    if (err.status === 403) return `Your role may not do this (${err.message}).`;
    return err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * The messages of a 400 about a request's fields, by the top-level field they are about
 * (`body.input_schema/properties/x` → `input_schema`); undefined for any other error.
 */
export function fieldErrorsOf(err: unknown): Record<string, string> | undefined {
  if (!(err instanceof OrchestraError) || !Array.isArray(err.details?.fields)) return undefined;
  const byField: Record<string, string> = {};
  for (const f of err.details.fields as { field: string; message: string }[]) {
    const control = f.field.replace(/^body\./, '').split(/[./[]/)[0] ?? '';
    byField[control] = byField[control] ? `${byField[control]} ${f.message}` : f.message;
  }
  return byField;
}
