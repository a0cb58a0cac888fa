// Channels: live health, create and edit every field (keys pasted in the import
// formats), test what the upstream answers, delete; the profile's are read-only here.
import { useState } from 'preact/hooks';
import { del, patch, post } from '../api.js';
import { Badge, Check, Confirm, ErrorNote, Field, HealthBadge, Modal, TableWrap, useApi } from '../ui.jsx';
import { ago, list, ms } from '../format.js';

// Every [[channels]] field the form edits: [key, label, type, hint].
const NUMBERS = [
  ['priority', 'Priority', 'int', 'higher tiers are tried first'],
  ['weight', 'Weight', 'int', 'share of traffic within a tier'],
  ['max_concurrency', 'Max concurrency', 'int', '0: no limit'],
  ['max_concurrency_per_key', 'Max concurrency per key', 'int', '0: no limit'],
  ['connect_timeout_secs', 'Connect timeout (s)', 'float', ''],
  ['first_byte_timeout_secs', 'First byte timeout (s)', 'float', 'model loading included'],
  ['idle_timeout_secs', 'Idle timeout (s)', 'float', 'between two chunks'],
  ['total_timeout_secs', 'Total timeout (s)', 'float', '0: no limit'],
  ['max_line_bytes', 'Largest stream frame (bytes)', 'int', ''],
  ['models_cache_secs', 'Model list cache (s)', 'int', ''],
  ['default_max_tokens', 'Default max_tokens', 'int', 'Anthropic upstreams'],
];
const DEFAULTS = {
  name: '',
  enabled: true,
  kind: 'openai',
  url: '',
  api_key_env: '',
  keys_file: '',
  models: '*',
  aliases: '',
  headers: '',
  pass_options: 'top_k, min_p, typical_p, repeat_penalty',
  max_tokens_field: 'max_tokens',
  reasoning_history: '',
  think_tags: false,
  priority: 0,
  weight: 1,
  max_concurrency: 0,
  max_concurrency_per_key: 0,
  connect_timeout_secs: 5,
  first_byte_timeout_secs: 300,
  idle_timeout_secs: 120,
  total_timeout_secs: 0,
  max_line_bytes: 16777216,
  models_cache_secs: 10,
  default_max_tokens: 4096,
  keys_text: '',
};

const pairs = (map, sep) =>
  Object.entries(map || {})
    .map(([k, v]) => `${k} ${sep} ${v}`)
    .join('\n');

function parsePairs(text, sep) {
  const out = {};
  for (const line of String(text).split('\n')) {
    const at = line.indexOf(sep);
    if (at < 0) continue;
    const k = line.slice(0, at).trim();
    if (k) out[k] = line.slice(at + 1).trim();
  }
  return out;
}

function formOf(c) {
  if (!c) return { ...DEFAULTS };
  const form = { ...DEFAULTS };
  for (const k of Object.keys(DEFAULTS)) if (c[k] !== undefined && c[k] !== null) form[k] = c[k];
  form.models = (c.models || []).join(', ');
  form.pass_options = (c.pass_options || []).join(', ');
  form.aliases = pairs(c.aliases, '=');
  form.headers = pairs(c.headers, ':');
  form.keys_text = '';
  return form;
}

/** The fields that differ from `original` (everything for a new channel). */
function bodyOf(form, original) {
  const body = {
    name: form.name.trim(),
    enabled: form.enabled,
    kind: form.kind,
    url: form.url.trim(),
    api_key_env: form.api_key_env.trim() || null,
    keys_file: form.keys_file.trim() || null,
    models: list(form.models),
    aliases: parsePairs(form.aliases, '='),
    pass_options: list(form.pass_options),
    max_tokens_field: form.max_tokens_field,
    reasoning_history: form.reasoning_history || null,
    think_tags: form.think_tags,
  };
  for (const [k, , type] of NUMBERS) body[k] = type === 'int' ? parseInt(form[k], 10) : parseFloat(form[k]);
  // Header values come back redacted: sent only when edited.
  const headersBefore = original ? pairs(original.headers, ':') : '';
  if (form.headers !== headersBefore) body.headers = parsePairs(form.headers, ':');
  if (form.keys_text.trim()) body.keys_text = form.keys_text;
  if (!original) return body;
  const changed = {};
  const before = bodyOf(formOf(original), null);
  for (const [k, v] of Object.entries(body)) {
    if (k === 'headers' || k === 'keys_text' || JSON.stringify(v) !== JSON.stringify(before[k])) changed[k] = v;
  }
  delete changed.name;
  return changed;
}

function ChannelForm({ channel, onSaved, onClose }) {
  const [form, setForm] = useState(formOf(channel));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  const fieldError = (k) => (error?.field === k ? error.message : null);
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = bodyOf(form, channel);
      const saved = channel
        ? await patch(`/channels/${encodeURIComponent(channel.name)}`, body)
        : await post('/channels', body);
      onSaved(saved);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return (
    <Modal title={channel ? `Edit channel ${channel.name}` : 'New channel'} onClose={onClose} wide>
      <form onSubmit={save} class="dialog-body">
        <div class="form-grid">
          <Field label="Name" error={fieldError('name')} hint={channel ? 'a channel cannot be renamed' : ''}>
            <input value={form.name} onInput={set('name')} required disabled={!!channel} autoFocus={!channel} />
          </Field>
          <Field label="Kind" error={fieldError('kind')}>
            <select value={form.kind} onChange={set('kind')}>
              <option value="openai">OpenAI-compatible</option>
              <option value="ollama">Ollama</option>
              <option value="anthropic">Anthropic-compatible</option>
            </select>
          </Field>
          <Field label="URL" wide error={fieldError('url')} hint="the server's base URL, e.g. http://127.0.0.1:8080">
            <input value={form.url} onInput={set('url')} placeholder="http://127.0.0.1:11434" />
          </Field>
          <Field
            label="Keys"
            wide
            error={fieldError('keys_text') || fieldError('keys') || fieldError('api_key')}
            hint={
              channel
                ? `now: ${channel.key_prefixes.length ? channel.key_prefixes.join(', ') : 'none'}. Paste to replace them; leave empty to keep them. One a line: sk-…, URL|KEY, KEY|URL, URL#KEY, URL/KEY; # comments.`
                : 'one a line: sk-…, URL|KEY, KEY|URL, URL#KEY or URL/KEY (a key with its own URL); # starts a comment'
            }
          >
            <textarea rows="3" value={form.keys_text} onInput={set('keys_text')} autoComplete="off" spellcheck={false} />
          </Field>
          <Field label="Key from environment variable" error={fieldError('api_key_env')}>
            <input value={form.api_key_env} onInput={set('api_key_env')} placeholder="OPENAI_API_KEY" />
          </Field>
          <Field label="Keys file (on the server)" error={fieldError('keys_file')}>
            <input value={form.keys_file} onInput={set('keys_file')} />
          </Field>
          <Field label="Models" wide error={fieldError('models')} hint="names or globs, comma-separated; * for all the upstream lists">
            <input value={form.models} onInput={set('models')} />
          </Field>
          <Field label="Aliases" wide error={fieldError('aliases')} hint="one a line: alias = upstream model">
            <textarea rows="2" value={form.aliases} onInput={set('aliases')} placeholder="gpt-4o = llama3.2:70b" />
          </Field>
          <Field label="Headers" wide error={fieldError('headers')} hint="one a line: Name: value (values are never shown again)">
            <textarea rows="2" value={form.headers} onInput={set('headers')} />
          </Field>
          {NUMBERS.map(([k, label, type, hint]) => (
            <Field key={k} label={label} hint={hint} error={fieldError(k)}>
              <input type="number" step={type === 'int' ? '1' : 'any'} value={form[k]} onInput={set(k)} required />
            </Field>
          ))}
          <Field label="max_tokens field" error={fieldError('max_tokens_field')} hint="OpenAI-compatible upstreams">
            <select value={form.max_tokens_field} onChange={set('max_tokens_field')}>
              <option value="max_tokens">max_tokens</option>
              <option value="max_completion_tokens">max_completion_tokens</option>
            </select>
          </Field>
          <Field label="Reasoning history field" error={fieldError('reasoning_history')} hint="OpenAI-compatible upstreams">
            <select value={form.reasoning_history} onChange={set('reasoning_history')}>
              <option value="">drop it</option>
              <option value="reasoning_content">reasoning_content</option>
              <option value="reasoning">reasoning</option>
            </select>
          </Field>
          <Field label="Ollama options passed on" wide error={fieldError('pass_options')} hint="OpenAI-compatible upstreams, comma-separated">
            <input value={form.pass_options} onInput={set('pass_options')} />
          </Field>
          <Check label="Enabled (serves requests)" checked={form.enabled} onChange={(v) => setForm({ ...form, enabled: v })} />
          <Check label="Move <think> tags into reasoning" checked={form.think_tags} onChange={(v) => setForm({ ...form, think_tags: v })} />
        </div>
        <ErrorNote error={error} />
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            {channel ? 'Save' : 'Create channel'}
          </button>
        </footer>
      </form>
    </Modal>
  );
}

function TestDialog({ channel, onClose }) {
  const [chat, setChat] = useState(false);
  const [model, setModel] = useState('');
  const [report, setReport] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const run = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setReport(null);
    try {
      setReport(await post(`/channels/${encodeURIComponent(channel.name)}/test`, { chat, model: model.trim() || null }));
    } catch (err) {
      setError(err);
    }
    setBusy(false);
  };
  return (
    <Modal title={`Test ${channel.name}`} onClose={onClose} wide>
      <form class="dialog-body" onSubmit={run}>
        <p class="muted">Asks the upstream for its models{chat ? ', then sends it one short chat' : ''}.</p>
        <div class="form-grid">
          <Check label="Also send a short chat" checked={chat} onChange={setChat} />
          {chat && (
            <Field label="Model" hint="empty: the first one listed">
              <input value={model} onInput={(e) => setModel(e.currentTarget.value)} />
            </Field>
          )}
        </div>
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Testing…' : 'Run test'}
        </button>
        <ErrorNote error={error} />
        {report && (
          <div class="report" data-testid="test-report" role="status">
            <p>
              {report.ok ? <Badge kind="good">healthy</Badge> : <Badge kind="bad">failing</Badge>}{' '}
              {report.ok ? 'Everything asked for worked.' : 'Something failed: see below.'}
            </p>
            <h3>Model list</h3>
            <p>
              {report.models.ok ? `${report.models.count} models` : 'failed'} in {ms(report.models.took_ms)}
              {report.models.error && <span class="error-text"> — {report.models.error}</span>}
            </p>
            {report.models.names.length > 0 && <p class="mono small">{report.models.names.join(', ')}</p>}
            {report.chat && (
              <>
                <h3>Chat with {report.chat.model || '(no model)'}</h3>
                <p>
                  {report.chat.ok ? 'answered' : 'failed'} in {ms(report.chat.took_ms)}
                  {report.chat.error && <span class="error-text"> — {report.chat.error}</span>}
                </p>
                {report.chat.text && <blockquote>{report.chat.text}</blockquote>}
              </>
            )}
          </div>
        )}
      </form>
    </Modal>
  );
}

export function Channels() {
  const { data, error, reload } = useApi('/channels', { every: 10000 });
  const [editing, setEditing] = useState(null);
  const [testing, setTesting] = useState(null);
  const [deleting, setDeleting] = useState(null);
  const [toggleError, setToggleError] = useState(null);
  const channels = data?.data ?? [];
  const toggle = async (c) => {
    setToggleError(null);
    try {
      await patch(`/channels/${encodeURIComponent(c.name)}`, { enabled: c.enabled === false });
      reload();
    } catch (err) {
      setToggleError(err);
    }
  };
  return (
    <section>
      <div class="page-head">
        <h1>Channels</h1>
        <div class="toolbar">
          <button type="button" class="primary" onClick={() => setEditing('new')}>
            New channel
          </button>
        </div>
      </div>
      <p class="muted">
        Channels from the profile are read-only here (edit the file: it reloads). Channels made here live in the store and serve at
        once. A disabled channel stays configured but is sent nothing.
      </p>
      <ErrorNote error={error || toggleError} />
      {data && channels.length === 0 && <p class="muted">No channel.</p>}
      {channels.length > 0 && (
        <TableWrap label="Channels">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">URL</th>
              <th scope="col">Models</th>
              <th scope="col">Health</th>
              <th scope="col">Keys</th>
              <th scope="col">Source</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {channels.map((c) => (
              <tr key={c.name} data-channel={c.name}>
                <td>
                  <strong class="mono">{c.name}</strong>
                  <div class="muted small">
                    priority {c.priority}, weight {c.weight}
                  </div>
                </td>
                <td>{c.kind}</td>
                <td class="mono small break">{c.url}</td>
                <td class="small">
                  {(c.models || []).join(', ')}
                  {c.aliases && Object.keys(c.aliases).length > 0 && (
                    <div class="muted">aliases: {Object.keys(c.aliases).join(', ')}</div>
                  )}
                </td>
                <td>
                  {c.enabled === false ? <Badge>disabled</Badge> : <HealthBadge health={c.health} />}
                  <div class="muted small">
                    {c.health?.window?.requests ?? 0} req, {c.health?.window?.failures ?? 0} fail
                    {c.health?.in_flight ? `, ${c.health.in_flight} in flight` : ''}
                  </div>
                  {c.health?.last_error && (
                    <div class="error-text small">
                      {ago(c.health.last_error.at * 1000)}: {c.health.last_error.message}
                    </div>
                  )}
                </td>
                <td class="mono small">{c.key_prefixes.length ? c.key_prefixes.map((p) => `${p}`).join(', ') : '—'}</td>
                <td>{c.source === 'profile' ? <Badge>profile</Badge> : <Badge kind="info">store</Badge>}</td>
                <td class="actions">
                  <button type="button" class="small" onClick={() => setTesting(c)}>
                    Test
                  </button>
                  {c.source === 'store' ? (
                    <>
                      <button type="button" class="small" onClick={() => setEditing(c)}>
                        Edit
                      </button>
                      <button type="button" class="small" onClick={() => toggle(c)}>
                        {c.enabled === false ? 'Enable' : 'Disable'}
                      </button>
                      <button type="button" class="small danger" onClick={() => setDeleting(c)}>
                        Delete
                      </button>
                    </>
                  ) : (
                    <span class="muted small">read-only</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </TableWrap>
      )}
      {editing && (
        <ChannelForm
          channel={editing === 'new' ? null : editing}
          onClose={() => setEditing(null)}
          onSaved={() => {
            setEditing(null);
            reload();
          }}
        />
      )}
      {testing && (
        <TestDialog
          channel={testing}
          onClose={() => {
            setTesting(null);
            reload();
          }}
        />
      )}
      {deleting && (
        <Confirm
          title={`Delete ${deleting.name}?`}
          action="Delete channel"
          onClose={() => setDeleting(null)}
          onConfirm={async () => {
            await del(`/channels/${encodeURIComponent(deleting.name)}`);
            reload();
          }}
        >
          <p>Its models are no longer served through it, from the next request on. Its keys are forgotten.</p>
        </Confirm>
      )}
    </section>
  );
}
