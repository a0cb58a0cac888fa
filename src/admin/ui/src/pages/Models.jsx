// The catalog as clients see it (aliases, display names, capabilities, context length,
// the channels serving each model) and the per-model policy editor: `[models."PATTERN"]`
// entries kept in the store, which replace the profile's of the same pattern.
import { useMemo, useState } from 'preact/hooks';
import { del, put } from '../api.js';
import { Badge, Confirm, ErrorNote, Field, Modal, TableWrap, useApi } from '../ui.jsx';
import { list, num } from '../format.js';

const json = (v) => (v && Object.keys(v).length ? JSON.stringify(v, null, 2) : '');

function PolicyForm({ pattern, settings, onSaved, onClose }) {
  const s = settings || {};
  const [form, setForm] = useState({
    pattern: pattern || '',
    display_name: s.display_name || '',
    description: s.description || '',
    aliases: (s.aliases || []).join(', '),
    capabilities: (s.capabilities || []).join(', '),
    context_length: s.context_length ?? '',
    family: s.family || '',
    parameter_size: s.parameter_size || '',
    quantization: s.quantization || '',
    defaults: json(s.defaults),
    forced: json(s.forced),
  });
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  const fieldError = (k) => (error?.field === k ? error.message : null);
  const save = async (e) => {
    e.preventDefault();
    setError(null);
    const body = {};
    for (const k of ['display_name', 'description', 'family', 'parameter_size', 'quantization']) {
      if (form[k].trim()) body[k] = form[k].trim();
    }
    if (list(form.aliases).length) body.aliases = list(form.aliases);
    if (list(form.capabilities).length) body.capabilities = list(form.capabilities);
    if (String(form.context_length).trim()) body.context_length = Number(form.context_length);
    for (const k of ['defaults', 'forced']) {
      if (!form[k].trim()) continue;
      try {
        body[k] = JSON.parse(form[k]);
      } catch (err) {
        setError({ field: k, message: `${k}: not JSON (${err.message})` });
        return;
      }
    }
    setBusy(true);
    try {
      onSaved(await put(`/models/${encodeURIComponent(form.pattern.trim())}`, body));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return (
    <Modal title={pattern ? `Settings for ${pattern}` : 'New model settings'} onClose={onClose} wide>
      <form class="dialog-body" onSubmit={save}>
        <p class="muted">
          Kept in the store; replaces a profile entry of the same pattern. The most specific pattern wins, option by option.
        </p>
        <div class="form-grid">
          <Field label="Pattern" hint="a model name (an alias too) or a glob: qwen3*" error={fieldError('pattern')} wide>
            <input value={form.pattern} onInput={set('pattern')} required disabled={!!pattern} />
          </Field>
          <Field label="Display name" error={fieldError('display_name')}>
            <input value={form.display_name} onInput={set('display_name')} />
          </Field>
          <Field label="Context length" error={fieldError('context_length')}>
            <input type="number" min="1" value={form.context_length} onInput={set('context_length')} />
          </Field>
          <Field label="Description" wide error={fieldError('description')}>
            <input value={form.description} onInput={set('description')} />
          </Field>
          <Field label="Aliases" hint="comma-separated" error={fieldError('aliases')}>
            <input value={form.aliases} onInput={set('aliases')} />
          </Field>
          <Field label="Capabilities" hint="completion, tools, vision, thinking, embedding…" error={fieldError('capabilities')}>
            <input value={form.capabilities} onInput={set('capabilities')} />
          </Field>
          <Field label="Family" error={fieldError('family')}>
            <input value={form.family} onInput={set('family')} />
          </Field>
          <Field label="Parameter size" error={fieldError('parameter_size')}>
            <input value={form.parameter_size} onInput={set('parameter_size')} placeholder="8B" />
          </Field>
          <Field label="Quantization" error={fieldError('quantization')}>
            <input value={form.quantization} onInput={set('quantization')} placeholder="Q4_K_M" />
          </Field>
          <Field label="Defaults (JSON)" hint='used when the client sends none: {"temperature": 0.7, "num_ctx": 32768}' wide error={fieldError('defaults')}>
            <textarea rows="4" class="mono" value={form.defaults} onInput={set('defaults')} spellcheck={false} />
          </Field>
          <Field label="Forced (JSON)" hint='replaces what the client sends: {"max_tokens": 4096, "keep_alive": "30m"}' wide error={fieldError('forced')}>
            <textarea rows="4" class="mono" value={form.forced} onInput={set('forced')} spellcheck={false} />
          </Field>
        </div>
        <ErrorNote error={error} />
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            Save
          </button>
        </footer>
      </form>
    </Modal>
  );
}

const options = (o) =>
  Object.entries(o || {})
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(', ');

export function Models() {
  const { data, error, reload } = useApi('/models');
  const [search, setSearch] = useState('');
  const [editing, setEditing] = useState(null); // {pattern, settings} or 'new'
  const [deleting, setDeleting] = useState(null);
  const models = useMemo(() => {
    const q = search.trim().toLowerCase();
    return (data?.data ?? []).filter(
      (m) => !q || m.name.toLowerCase().includes(q) || (m.display_name || '').toLowerCase().includes(q) || m.aliases.some((a) => a.toLowerCase().includes(q)),
    );
  }, [data, search]);
  const policies = data?.policies ?? [];
  const storeEntry = (name) => policies.find((p) => p.pattern === name && p.source === 'store');

  return (
    <section>
      <div class="page-head">
        <h1>Models</h1>
        <div class="toolbar">
          <label class="search">
            <span class="visually-hidden">Search models</span>
            <input type="search" placeholder="Search models" value={search} onInput={(e) => setSearch(e.currentTarget.value)} />
          </label>
          <button type="button" class="primary" onClick={() => setEditing('new')}>
            New settings
          </button>
        </div>
      </div>
      <ErrorNote error={error} />
      {data && models.length === 0 && <p class="muted">No model: no channel lists one (or none answers).</p>}
      {models.length > 0 && (
        <TableWrap label="Model catalog">
          <thead>
            <tr>
              <th scope="col">Model</th>
              <th scope="col">Aliases</th>
              <th scope="col">Capabilities</th>
              <th scope="col" class="num">
                Context
              </th>
              <th scope="col">Channels</th>
              <th scope="col">Policy</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {models.map((m) => (
              <tr key={m.name}>
                <td>
                  <strong class="mono">{m.name}</strong>
                  {m.display_name && <div>{m.display_name}</div>}
                  {m.description && <div class="muted small">{m.description}</div>}
                </td>
                <td class="small mono">{m.aliases.join(', ') || '—'}</td>
                <td>
                  {m.capabilities.map((c) => (
                    <Badge key={c}>{c}</Badge>
                  ))}
                </td>
                <td class="num">{num(m.context_length)}</td>
                <td class="small">
                  {m.channels.map((c) => (
                    <div key={c.channel}>
                      <span class="mono">{c.channel}</span>
                      {c.upstream_model !== m.name && <span class="muted"> as {c.upstream_model}</span>}
                    </div>
                  ))}
                </td>
                <td class="small">
                  {m.policy_source ? <Badge kind={m.policy_source === 'store' ? 'info' : ''}>{m.policy_source}</Badge> : <span class="muted">none</span>}
                  {Object.keys(m.defaults).length > 0 && <div>defaults: {options(m.defaults)}</div>}
                  {Object.keys(m.forced).length > 0 && <div>forced: {options(m.forced)}</div>}
                </td>
                <td class="actions">
                  <button
                    type="button"
                    class="small"
                    onClick={() => setEditing({ pattern: m.name, settings: storeEntry(m.name)?.settings || { display_name: m.display_name } })}
                  >
                    Edit
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </TableWrap>
      )}
      <h2 class="section-title">Model settings</h2>
      <p class="muted">Every [models] entry, also those no listed model matches now. The profile's are edited in its file.</p>
      {policies.length === 0 ? (
        <p class="muted">None.</p>
      ) : (
        <TableWrap label="Model settings">
          <thead>
            <tr>
              <th scope="col">Pattern</th>
              <th scope="col">Source</th>
              <th scope="col">Settings</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {policies.map((p) => (
              <tr key={`${p.source}:${p.pattern}`}>
                <td class="mono">{p.pattern}</td>
                <td>
                  <Badge kind={p.source === 'store' ? 'info' : ''}>{p.source}</Badge>
                </td>
                <td class="mono small break">{JSON.stringify(p.settings)}</td>
                <td class="actions">
                  {p.source === 'store' ? (
                    <>
                      <button type="button" class="small" onClick={() => setEditing({ pattern: p.pattern, settings: p.settings })}>
                        Edit
                      </button>
                      <button type="button" class="small danger" onClick={() => setDeleting(p.pattern)}>
                        Delete
                      </button>
                    </>
                  ) : (
                    <button type="button" class="small" onClick={() => setEditing({ pattern: p.pattern, settings: p.settings })}>
                      Override
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </TableWrap>
      )}
      {editing && (
        <PolicyForm
          pattern={editing === 'new' ? null : editing.pattern}
          settings={editing === 'new' ? null : editing.settings}
          onClose={() => setEditing(null)}
          onSaved={() => {
            setEditing(null);
            reload();
          }}
        />
      )}
      {deleting && (
        <Confirm
          title={`Delete the settings for ${deleting}?`}
          action="Delete"
          onClose={() => setDeleting(null)}
          onConfirm={async () => {
            await del(`/models/${encodeURIComponent(deleting)}`);
            reload();
          }}
        >
          <p>The store's entry goes; the profile's entry of the same pattern, if any, applies again.</p>
        </Confirm>
      )}
    </section>
  );
}
