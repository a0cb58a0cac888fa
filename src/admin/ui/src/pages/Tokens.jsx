// API tokens: search, create (the secret shown once, with the lines to paste), edit
// limits, models, addresses, expiry and quota, disable, revoke.
import { useMemo, useState } from 'preact/hooks';
import { del, patch, post } from '../api.js';
import { Badge, Check, Confirm, CopyButton, ErrorNote, Field, Modal, QuotaBar, TableWrap, useApi } from '../ui.jsx';
import { ago, dateTime, fromLocalInput, list, num, toLocalInput } from '../format.js';

const LIMITS = [
  ['rpm', 'Requests a minute'],
  ['tpm', 'Tokens a minute'],
  ['monthly_quota', 'Monthly quota (tokens)'],
  ['max_concurrent', 'Requests at once'],
];

function formOf(token) {
  return {
    name: token?.name ?? '',
    role: token?.role ?? 'user',
    enabled: token?.enabled ?? true,
    models: (token?.models ?? []).join(', '),
    ips: (token?.ips ?? []).join(', '),
    rpm: token?.rpm ?? '',
    tpm: token?.tpm ?? '',
    monthly_quota: token?.monthly_quota ?? '',
    max_concurrent: token?.max_concurrent ?? '',
    expires_at: toLocalInput(token?.expires_at),
  };
}

/** The API's body: null clears a limit or the expiry. */
function bodyOf(form) {
  const n = (v) => (v === '' || v === null ? null : Number(v));
  return {
    name: form.name.trim(),
    role: form.role,
    enabled: form.enabled,
    models: list(form.models),
    ips: list(form.ips),
    rpm: n(form.rpm),
    tpm: n(form.tpm),
    monthly_quota: n(form.monthly_quota),
    max_concurrent: n(form.max_concurrent),
    expires_at: fromLocalInput(form.expires_at),
  };
}

function TokenForm({ token, onSaved, onClose }) {
  const [form, setForm] = useState(formOf(token));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = bodyOf(form);
      const answer = token ? await patch(`/tokens/${token.id}`, body) : await post('/tokens', body);
      onSaved(answer);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  const fieldError = (k) => (error?.field === k ? error.message : null);
  return (
    <Modal title={token ? `Edit token ${token.name}` : 'New token'} onClose={onClose} wide>
      <form onSubmit={save} class="dialog-body">
        <div class="form-grid">
          <Field label="Name" error={fieldError('name')}>
            <input value={form.name} onInput={set('name')} required autoFocus />
          </Field>
          <Field label="Role" hint="user: the API and its own usage; admin: everything">
            <select value={form.role} onChange={set('role')}>
              <option value="user">user</option>
              <option value="admin">admin</option>
            </select>
          </Field>
          {LIMITS.map(([k, label]) => (
            <Field key={k} label={label} hint="empty: the default" error={fieldError(k)}>
              <input type="number" min="1" step="1" value={form[k]} onInput={set(k)} />
            </Field>
          ))}
          <Field label="Expires" hint="empty: never" error={fieldError('expires_at')}>
            <input type="datetime-local" value={form.expires_at} onInput={set('expires_at')} />
          </Field>
          <Field label="Models" hint="comma-separated names or globs; empty: every model" wide error={fieldError('models')}>
            <input value={form.models} onInput={set('models')} placeholder="llama3*, gpt-4o" />
          </Field>
          <Field label="Addresses" hint="comma-separated IPs or CIDR ranges; empty: any" wide error={fieldError('ips')}>
            <input value={form.ips} onInput={set('ips')} placeholder="10.0.0.0/8, 192.0.2.7" />
          </Field>
          <Check label="Enabled" checked={form.enabled} onChange={(v) => setForm({ ...form, enabled: v })} />
          {token && (
            <div class="field wide">
              <span class="label">Used this month</span>
              <QuotaBar
                used={token.used_this_month}
                quota={form.monthly_quota === '' ? null : Number(form.monthly_quota)}
                label={`Quota used by ${token.name}`}
              />
            </div>
          )}
        </div>
        <ErrorNote error={error} />
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            {token ? 'Save' : 'Create token'}
          </button>
        </footer>
      </form>
    </Modal>
  );
}

export function Secret({ created, onClose }) {
  const base = `${location.origin}/v1`;
  const lines = `export OPENAI_API_KEY=${created.secret}\nexport OPENAI_BASE_URL=${base}`;
  return (
    <Modal title={`Token ${created.token.name} created`} onClose={onClose} wide>
      <div class="dialog-body">
        <p class="note warn">This is the only time the token is shown: diglot keeps only its digest. Copy it now.</p>
        <div class="secret-row">
          <code class="secret" data-testid="secret">
            {created.secret}
          </code>
          <CopyButton text={created.secret} />
        </div>
        <p>For the OpenAI SDKs and most clients:</p>
        <pre class="code">
          <code>{lines}</code>
        </pre>
        <CopyButton text={lines} label="Copy both lines" />
      </div>
      <footer class="dialog-foot">
        <button type="button" class="primary" onClick={onClose}>
          Done
        </button>
      </footer>
    </Modal>
  );
}

export function Tokens() {
  const { data, error, reload } = useApi('/tokens');
  const [search, setSearch] = useState('');
  const [editing, setEditing] = useState(null); // a token, or 'new'
  const [created, setCreated] = useState(null);
  const [revoking, setRevoking] = useState(null);
  const [actionError, setActionError] = useState(null);
  const tokens = useMemo(() => {
    const q = search.trim().toLowerCase();
    return (data?.data ?? []).filter(
      (t) => !q || t.name.toLowerCase().includes(q) || t.prefix.toLowerCase().includes(q) || t.role === q,
    );
  }, [data, search]);

  const toggle = async (t) => {
    setActionError(null);
    try {
      await patch(`/tokens/${t.id}`, { enabled: !t.enabled });
      reload();
    } catch (e) {
      setActionError(e);
    }
  };

  return (
    <section>
      <div class="page-head">
        <h1>Tokens</h1>
        <div class="toolbar">
          <label class="search">
            <span class="visually-hidden">Search tokens</span>
            <input type="search" placeholder="Search name or prefix" value={search} onInput={(e) => setSearch(e.currentTarget.value)} />
          </label>
          <button type="button" class="primary" onClick={() => setEditing('new')}>
            New token
          </button>
        </div>
      </div>
      <ErrorNote error={error || actionError} />
      {data && tokens.length === 0 && <p class="muted">{search ? 'No token matches.' : 'No token yet: while there is none, diglot asks none of its callers on loopback.'}</p>}
      {tokens.length > 0 && (
        <TableWrap label="Tokens">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Prefix</th>
              <th scope="col">Role</th>
              <th scope="col">Status</th>
              <th scope="col">Limits</th>
              <th scope="col">This month</th>
              <th scope="col">Expires</th>
              <th scope="col">Last used</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {tokens.map((t) => {
              const expired = t.expires_at && t.expires_at * 1000 < Date.now();
              return (
                <tr key={t.id} data-token={t.name}>
                  <td>
                    <strong>{t.name}</strong>
                    {t.models.length > 0 && <div class="muted small">models: {t.models.join(', ')}</div>}
                    {t.ips.length > 0 && <div class="muted small">from: {t.ips.join(', ')}</div>}
                  </td>
                  <td class="mono">{t.prefix}…</td>
                  <td>{t.role === 'admin' ? <Badge kind="warn">admin</Badge> : 'user'}</td>
                  <td>{expired ? <Badge kind="bad">expired</Badge> : t.enabled ? <Badge kind="good">enabled</Badge> : <Badge>disabled</Badge>}</td>
                  <td class="small">
                    {LIMITS.filter(([k]) => k !== 'monthly_quota' && t[k]).map(([k]) => (
                      <div key={k}>
                        {k}: {num(t[k])}
                      </div>
                    ))}
                    {!t.rpm && !t.tpm && !t.max_concurrent && <span class="muted">defaults</span>}
                  </td>
                  <td>
                    <QuotaBar used={t.used_this_month} quota={t.monthly_quota} label={`Quota used by ${t.name}`} />
                  </td>
                  <td class="small">{t.expires_at ? dateTime(t.expires_at * 1000) : 'never'}</td>
                  <td class="small">{ago(t.last_used_at)}</td>
                  <td class="actions">
                    <button type="button" class="small" onClick={() => setEditing(t)}>
                      Edit
                    </button>
                    <button type="button" class="small" onClick={() => toggle(t)}>
                      {t.enabled ? 'Disable' : 'Enable'}
                    </button>
                    <button type="button" class="small danger" onClick={() => setRevoking(t)}>
                      Revoke
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </TableWrap>
      )}
      {editing && (
        <TokenForm
          token={editing === 'new' ? null : editing}
          onClose={() => setEditing(null)}
          onSaved={(answer) => {
            setEditing(null);
            if (answer?.secret) setCreated(answer);
            reload();
          }}
        />
      )}
      {created && <Secret created={created} onClose={() => setCreated(null)} />}
      {revoking && (
        <Confirm
          title={`Revoke ${revoking.name}?`}
          action="Revoke token"
          onClose={() => setRevoking(null)}
          onConfirm={async () => {
            await del(`/tokens/${revoking.id}`);
            reload();
          }}
        >
          <p>
            Its next request gets 401, at once, on every API. This cannot be undone: a new token has a new secret. Its usage
            records stay.
          </p>
        </Confirm>
      )}
    </section>
  );
}
