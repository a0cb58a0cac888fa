// Limits, address rules, trusted proxies and the cache: each value with where it comes
// from (default, profile, store); a change applies at once, "reset" returns a key to the
// profile's value.
import { useEffect, useState } from 'preact/hooks';
import { patch } from '../api.js';
import { Badge, ErrorNote, TableWrap, useApi } from '../ui.jsx';
import { list } from '../format.js';

const text = (v) => (Array.isArray(v) ? v.join(', ') : v === null || v === undefined ? '' : String(v));

function parse(raw, was) {
  if (Array.isArray(was)) return list(raw);
  if (typeof was === 'boolean') return raw === 'true';
  if (typeof was === 'number' || was === null) {
    if (raw.trim() === '') return null;
    if (/^-?\d+(\.\d+)?$/.test(raw.trim())) return Number(raw);
  }
  return raw;
}

export function Settings() {
  const { data, error, reload } = useApi('/settings');
  const [draft, setDraft] = useState({});
  const [saveError, setSaveError] = useState(null);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  useEffect(() => setDraft({}), [data]);
  const settings = data?.settings ?? {};
  const changed = Object.keys(draft);

  const send = async (body) => {
    setBusy(true);
    setSaveError(null);
    setSaved(false);
    try {
      await patch('/settings', body);
      setSaved(true);
      reload();
    } catch (e) {
      setSaveError(e);
    }
    setBusy(false);
  };
  const save = (e) => {
    e.preventDefault();
    const body = {};
    for (const k of changed) body[k] = parse(draft[k], settings[k].value);
    send(body);
  };

  const groups = { limits: [], auth: [], cache: [] };
  for (const [k, v] of Object.entries(settings)) (groups[k.split('.')[0]] ||= []).push([k, v]);
  for (const k of Object.keys(groups)) if (!groups[k].length) delete groups[k];

  return (
    <section>
      <div class="page-head">
        <h1>Settings</h1>
      </div>
      <p class="muted">
        Values in force and where each comes from. A change here is kept in the store and applies at once; “Reset” takes a key
        back to the profile's value.
      </p>
      <ErrorNote error={error} />
      <form onSubmit={save}>
        {Object.entries(groups).map(([group, rows]) => (
          <section class="card" key={group}>
            <h2>{{ limits: 'Limits', auth: 'Addresses and proxies', cache: 'Cache' }[group] || group}</h2>
            <TableWrap label={`${group} settings`}>
              <thead>
                <tr>
                  <th scope="col">Setting</th>
                  <th scope="col">Value</th>
                  <th scope="col">Source</th>
                  <th scope="col">
                    <span class="visually-hidden">Reset</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {rows.map(([k, s]) => {
                  const id = `setting-${k.replace('.', '-')}`;
                  const value = k in draft ? draft[k] : text(s.value);
                  const onValue = (e) => setDraft({ ...draft, [k]: e.currentTarget.value });
                  return (
                    <tr key={k} data-setting={k}>
                      <td>
                        <label for={id} class="mono">
                          {k}
                        </label>
                        <div class="muted small">{s.description}</div>
                      </td>
                      <td>
                        {typeof s.value === 'boolean' ? (
                          <select id={id} value={value} onChange={onValue}>
                            <option value="true">on</option>
                            <option value="false">off</option>
                          </select>
                        ) : (
                          <input
                            id={id}
                            type={typeof s.value === 'number' ? 'number' : 'text'}
                            value={value}
                            onInput={onValue}
                            placeholder={Array.isArray(s.value) ? 'comma-separated' : ''}
                          />
                        )}
                      </td>
                      <td>
                        <Badge kind={s.source === 'store' ? 'info' : ''}>{s.source}</Badge>
                      </td>
                      <td>
                        {s.source === 'store' && (
                          <button type="button" class="small" disabled={busy} onClick={() => send({ [k]: null })}>
                            Reset
                          </button>
                        )}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </TableWrap>
          </section>
        ))}
        <ErrorNote error={saveError} />
        {saved && (
          <p class="note good" role="status">
            Saved and applied.
          </p>
        )}
        <div class="sticky-actions">
          <button type="submit" class="primary" disabled={busy || changed.length === 0}>
            Save {changed.length ? `${changed.length} change${changed.length > 1 ? 's' : ''}` : ''}
          </button>
          <button type="button" disabled={changed.length === 0} onClick={() => setDraft({})}>
            Undo
          </button>
        </div>
      </form>
    </section>
  );
}
