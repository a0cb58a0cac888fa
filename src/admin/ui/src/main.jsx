// diglot's admin UI: signs in through /admin/api/login, then shows the admin's pages or,
// for a token holder with role "user", its own usage and the playground. Pages live at
// /admin/<page>; the binary answers index.html for each of them.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './style.css';
import { get, post, setCsrf, whenSignedOut } from './api.js';
import { Link, navigate } from './ui.jsx';
import { SignIn } from './pages/SignIn.jsx';
import { Dashboard } from './pages/Dashboard.jsx';
import { Tokens } from './pages/Tokens.jsx';
import { Channels } from './pages/Channels.jsx';
import { Models } from './pages/Models.jsx';
import { Logs } from './pages/Logs.jsx';
import { Settings } from './pages/Settings.jsx';
import { Audit } from './pages/Audit.jsx';
import { Playground } from './pages/Playground.jsx';
import { Me } from './pages/Me.jsx';

const ADMIN_PAGES = [
  ['', 'Dashboard', Dashboard],
  ['tokens', 'Tokens', Tokens],
  ['channels', 'Channels', Channels],
  ['models', 'Models', Models],
  ['logs', 'Logs', Logs],
  ['settings', 'Settings', Settings],
  ['audit', 'Audit', Audit],
  ['playground', 'Playground', Playground],
];
const USER_PAGES = [
  ['', 'My usage', Me],
  ['playground', 'Playground', Playground],
];

/** "system", "light" or "dark", kept in this browser. */
function useTheme() {
  const [choice, setChoice] = useState(() => localStorage.getItem('diglot.theme') || 'system');
  const [dark, setDark] = useState(() => matchMedia('(prefers-color-scheme: dark)').matches);
  useEffect(() => {
    const media = matchMedia('(prefers-color-scheme: dark)');
    const changed = () => setDark(media.matches);
    media.addEventListener('change', changed);
    return () => media.removeEventListener('change', changed);
  }, []);
  useEffect(() => {
    const root = document.documentElement;
    if (choice === 'system') root.removeAttribute('data-theme');
    else root.setAttribute('data-theme', choice);
    localStorage.setItem('diglot.theme', choice);
  }, [choice]);
  const effective = choice === 'system' ? (dark ? 'dark' : 'light') : choice;
  return [choice, setChoice, effective];
}

function usePath() {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const changed = () => setPath(location.pathname);
    addEventListener('popstate', changed);
    return () => removeEventListener('popstate', changed);
  }, []);
  return path.replace(/^\/admin\/?/, '').replace(/\/$/, '');
}

function App() {
  // null: asking; {role, via, ...}: signed in; {out: message}: signed out;
  // {noPassword: message}: nobody can sign in with a password yet.
  const [session, setSession] = useState(null);
  const [theme, setTheme, effectiveTheme] = useTheme();
  const [menu, setMenu] = useState(false);
  const page = usePath();

  useEffect(() => {
    whenSignedOut((message) => {
      setCsrf(null);
      setSession({ out: message });
    });
    get('/session', { quiet401: true }).then(
      (s) => {
        setCsrf(s.csrf_token);
        setSession(s);
      },
      (e) => setSession(e.status === 503 ? { noPassword: e.message } : { out: null }),
    );
  }, []);
  useEffect(() => setMenu(false), [page]);
  const pages = session?.role === 'admin' ? ADMIN_PAGES : USER_PAGES;
  const current = session?.role ? pages.find(([p]) => p === page) || null : null;
  const title = session?.role ? (current ? current[1] : 'Not found') : 'Sign in';
  useEffect(() => {
    document.title = `${title} · diglot admin`;
  }, [title]);

  const themeSwitch = (
    <label class="theme-switch">
      <span class="label">Theme</span>
      <select value={theme} onChange={(e) => setTheme(e.currentTarget.value)}>
        <option value="system">System</option>
        <option value="light">Light</option>
        <option value="dark">Dark</option>
      </select>
    </label>
  );

  if (session === null) {
    return (
      <main class="center" aria-busy="true">
        <p class="muted">Loading…</p>
      </main>
    );
  }
  if (!session.role) {
    return (
      <SignIn
        signedOut={session.out}
        noPassword={session.noPassword}
        themeSwitch={themeSwitch}
        onSignedIn={(s, token) => {
          setCsrf(s.csrf_token);
          if (token) sessionStorage.setItem('diglot.playground.token', token);
          setSession(s);
        }}
      />
    );
  }

  const Page = current?.[2];
  const signOut = async () => {
    try {
      await post('/logout');
    } finally {
      sessionStorage.removeItem('diglot.playground.token');
      setCsrf(null);
      setSession({ out: 'Signed out.' });
      navigate('/admin/');
    }
  };
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link href="/admin/" class="brand">
          diglot
        </Link>
        <button
          type="button"
          class="menu-button ghost"
          aria-expanded={menu}
          aria-controls="nav"
          onClick={() => setMenu(!menu)}
        >
          Menu
        </button>
        <nav id="nav" class={menu ? 'open' : ''} aria-label="Pages">
          <ul>
            {pages.map(([p, title]) => (
              <li key={p}>
                <Link href={`/admin/${p}`} aria-current={p === page ? 'page' : undefined}>
                  {title}
                </Link>
              </li>
            ))}
            {session.role === 'admin' && (
              <li>
                <a href="/admin/docs/">API reference</a>
              </li>
            )}
          </ul>
        </nav>
        <div class="who">
          {themeSwitch}
          <span class="muted" title={session.via === 'token' ? `token ${session.token_prefix}` : 'admin password'}>
            {session.via === 'token' ? `${session.role} · ${session.token_prefix}…` : 'admin'}
          </span>
          <button type="button" class="small" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {Page ? (
          <Page session={session} theme={effectiveTheme} />
        ) : (
          <section>
            <h1>Not found</h1>
            <p>
              There is no page <code>/admin/{page}</code>. <Link href="/admin/">Back to the start</Link>.
            </p>
          </section>
        )}
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app'));
