// Sign in with the admin password or an API token; when no password is set, say how to
// set one (the API's 503 message) and still offer the token.
import { useState } from 'preact/hooks';
import { api } from '../api.js';
import { ErrorNote, Field } from '../ui.jsx';

export function SignIn({ signedOut, noPassword, onSignedIn, themeSwitch }) {
  const [withToken, setWithToken] = useState(!!noPassword);
  const [secret, setSecret] = useState('');
  const [error, setError] = useState(null);
  const [missing, setMissing] = useState(noPassword || null);
  const [busy, setBusy] = useState(false);

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = withToken ? { token: secret.trim() } : { password: secret };
      const session = await api('POST', '/login', body, { quiet401: true });
      onSignedIn(session, withToken ? secret.trim() : null);
    } catch (err) {
      if (err.status === 503) {
        setMissing(err.message);
        setWithToken(true);
      } else setError(err);
      setBusy(false);
    }
  };

  return (
    <main class="center signin" id="main">
      <div class="card signin-card">
        <h1>diglot admin</h1>
        {missing && (
          <section class="note warn" aria-labelledby="no-password">
            <h2 id="no-password">No admin password is set</h2>
            <p>{missing}</p>
            <p>On the server, either run</p>
            <pre>
              <code>diglot admin set-password</code>
            </pre>
            <p>or start diglot with the password in its environment:</p>
            <pre>
              <code>DIGLOT_ADMIN__PASSWORD='…' diglot</code>
            </pre>
            <p>Then reload this page. Until then, an API token with role "admin" (or your own token) signs in below.</p>
          </section>
        )}
        {signedOut && !missing && <p class="note">{signedOut}</p>}
        <form onSubmit={submit}>
          <div class="tabs" role="group" aria-label="Sign in with">
            <button type="button" aria-pressed={!withToken} onClick={() => setWithToken(false)} disabled={!!missing}>
              Password
            </button>
            <button type="button" aria-pressed={withToken} onClick={() => setWithToken(true)}>
              API token
            </button>
          </div>
          {withToken ? (
            <Field label="API token" hint="A token with role admin sees everything; a user token sees its own usage.">
              <input
                type="password"
                name="token"
                autoComplete="off"
                value={secret}
                onInput={(e) => setSecret(e.currentTarget.value)}
                required
                placeholder="dg-…"
              />
            </Field>
          ) : (
            <Field label="Admin password">
              <input
                type="password"
                name="password"
                autoComplete="current-password"
                value={secret}
                onInput={(e) => setSecret(e.currentTarget.value)}
                required
              />
            </Field>
          )}
          <ErrorNote error={error} />
          <button type="submit" class="primary" disabled={busy}>
            Sign in
          </button>
        </form>
        <div class="signin-foot">{themeSwitch}</div>
      </div>
    </main>
  );
}
