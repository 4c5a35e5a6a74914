import { type FormEvent, useState } from 'react';
import { type Session, signIn } from '../session.tsx';

export function SignIn(props: { onSignedIn: (session: Session) => void; notice?: string }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | undefined>(props.notice);
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      props.onSignedIn(await signIn(key));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="sign-in">
      <form onSubmit={submit} aria-labelledby="sign-in-title">
        <h1 id="sign-in-title">Orchestra</h1>
        <p className="muted">Sign in with an API key of your tenant.</p>
        <div className="field">
          <label htmlFor="api-key">API key</label>
          <input
            id="api-key"
            name="api-key"
            type="password"
            autoComplete="off"
            spellCheck={false}
            placeholder="ork_…"
            value={key}
            onChange={(e) => setKey(e.target.value)}
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? 'sign-in-error' : 'sign-in-help'}
            // biome-ignore lint/a11y/noAutofocus: the only thing to do on this page
            autoFocus
          />
          <small id="sign-in-help" className="muted">
            The first start prints an admin key and writes it to the data directory (
            <code>admin-key</code>). Keys stay in this tab only.
          </small>
        </div>
        {error && (
          <p id="sign-in-error" className="error-box" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
