// The request log: filters, pages (older / newer), a live tail of access lines, CSV
// export and a detail panel per request. `mine` shows the caller's own (/me/logs).
import { useEffect, useRef, useState } from 'preact/hooks';
import { query } from '../api.js';
import { Badge, ErrorNote, Field, Modal, TableWrap, useApi } from '../ui.jsx';
import { dateTime, fromLocalInput, ms, num } from '../format.js';

const EMPTY = { token: '', model: '', channel: '', frontend: '', status: '', since: '', until: '' };

function statusKind(s) {
  return s >= 500 ? 'bad' : s >= 400 ? 'warn' : 'good';
}

function Detail({ entry, onClose }) {
  const rows = [
    ['Time', dateTime(entry.at_ms)],
    ['Status', entry.status],
    ['Token', entry.token_name ? `${entry.token_name} (${entry.token_prefix}…)` : entry.token_prefix || '—'],
    ['Client address', entry.client_ip || '—'],
    ['API', entry.frontend],
    ['Model', entry.model],
    ['Channel', entry.channel || '—'],
    ['Upstream model', entry.upstream_model || '—'],
    ['Attempts', entry.attempts],
    ['Latency', ms(entry.latency_ms)],
    ['Time to first token', ms(entry.ttft_ms)],
    ['Prompt tokens', `${num(entry.prompt_tokens)}${entry.estimated ? ' (estimated)' : ''}`],
    ['Completion tokens', `${num(entry.completion_tokens)}${entry.estimated ? ' (estimated)' : ''}`],
    [
      'Tokens per second',
      entry.completion_tokens && entry.latency_ms > (entry.ttft_ms || 0)
        ? (entry.completion_tokens / ((entry.latency_ms - (entry.ttft_ms || 0)) / 1000)).toFixed(1)
        : '—',
    ],
    ['Cache', entry.cache_hit ? 'hit' : 'no'],
    ['Request id', entry.request_id || '—'],
    ['Trace id', entry.trace_id || '—'],
  ];
  const total = Math.max(1, entry.latency_ms);
  const first = entry.ttft_ms ?? null;
  return (
    <Modal title={`Request ${entry.id}`} onClose={onClose}>
      <div class="dialog-body">
        {first !== null && (
          <div class="timing" aria-label={`First token after ${ms(first)}, done after ${ms(entry.latency_ms)}`} role="img">
            <span class="wait" style={{ width: `${(100 * first) / total}%` }} />
            <span class="gen" style={{ width: `${100 - (100 * first) / total}%` }} />
          </div>
        )}
        <dl class="detail" data-testid="log-detail">
          {rows.map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd class={/id$/.test(k) ? 'mono break' : ''}>{String(v)}</dd>
            </div>
          ))}
        </dl>
      </div>
    </Modal>
  );
}

export function Logs({ mine = false, compact = false }) {
  const [draft, setDraft] = useState(EMPTY);
  const [filters, setFilters] = useState(EMPTY);
  const [pages, setPages] = useState([null]); // the `before` of each page shown so far
  const [live, setLive] = useState(false);
  const [tail, setTail] = useState([]);
  const [tailState, setTailState] = useState('');
  const [open, setOpen] = useState(null);
  const base = mine ? '/me/logs' : '/logs';
  const params = {
    ...filters,
    token: mine ? '' : filters.token,
    since: filters.since ? fromLocalInput(filters.since) * 1000 : '',
    until: filters.until ? fromLocalInput(filters.until) * 1000 : '',
    limit: compact ? 20 : 50,
  };
  const before = pages[pages.length - 1];
  const { data, error, reload } = useApi(`${base}${query({ ...params, before })}`);
  const reloadSoon = useRef(null);

  useEffect(() => {
    if (!live || mine) return undefined;
    const source = new EventSource('/admin/api/logs/stream');
    setTailState('connecting');
    source.onopen = () => setTailState('live');
    source.onerror = () => setTailState('reconnecting');
    source.onmessage = (e) => {
      try {
        const line = JSON.parse(e.data);
        setTail((t) => [line, ...t].slice(0, 50));
      } catch {
        return;
      }
      // The records are written in batches: read the first page again a moment later.
      clearTimeout(reloadSoon.current);
      reloadSoon.current = setTimeout(() => pages.length === 1 && reload(), 1500);
    };
    return () => {
      source.close();
      clearTimeout(reloadSoon.current);
      setTailState('');
    };
  }, [live, mine]);

  const set = (k) => (e) => setDraft({ ...draft, [k]: e.currentTarget.value });
  const apply = (e) => {
    e.preventDefault();
    setFilters(draft);
    setPages([null]);
  };
  const csv = `/admin/api${base}${query({ ...params, limit: '', format: 'csv' })}`;
  const entries = data?.data ?? [];

  return (
    <section>
      {!compact && (
        <div class="page-head">
          <h1>{mine ? 'My requests' : 'Logs'}</h1>
          <div class="toolbar">
            {!mine && (
              <label class="check">
                <input type="checkbox" checked={live} onChange={(e) => setLive(e.currentTarget.checked)} />
                <span>Live tail</span>
              </label>
            )}
            <a class="button small" href={csv} download="diglot-logs.csv">
              Export CSV
            </a>
            <button type="button" class="small" onClick={reload}>
              Refresh
            </button>
          </div>
        </div>
      )}
      {!compact && (
        <form class="filters" onSubmit={apply} aria-label="Filters">
          {!mine && (
            <Field label="Token (id or prefix)">
              <input value={draft.token} onInput={set('token')} />
            </Field>
          )}
          <Field label="Model">
            <input value={draft.model} onInput={set('model')} />
          </Field>
          <Field label="Channel">
            <input value={draft.channel} onInput={set('channel')} />
          </Field>
          <Field label="API">
            <select value={draft.frontend} onChange={set('frontend')}>
              <option value="">any</option>
              <option value="openai">OpenAI</option>
              <option value="ollama">Ollama</option>
              <option value="anthropic">Anthropic</option>
            </select>
          </Field>
          <Field label="Status">
            <select value={draft.status} onChange={set('status')}>
              <option value="">any</option>
              <option value="2xx">2xx</option>
              <option value="3xx">3xx</option>
              <option value="4xx">4xx</option>
              <option value="5xx">5xx</option>
            </select>
          </Field>
          <Field label="Since">
            <input type="datetime-local" value={draft.since} onInput={set('since')} />
          </Field>
          <Field label="Until">
            <input type="datetime-local" value={draft.until} onInput={set('until')} />
          </Field>
          <div class="filter-buttons">
            <button type="submit" class="primary small">
              Apply
            </button>
            <button
              type="button"
              class="small"
              onClick={() => {
                setDraft(EMPTY);
                setFilters(EMPTY);
                setPages([null]);
              }}
            >
              Clear
            </button>
          </div>
        </form>
      )}
      {live && (
        <section class="card tail" aria-live="polite" aria-label="Live requests">
          <h2>
            Live <span class="muted small">{tailState}</span>
          </h2>
          {tail.length === 0 ? (
            <p class="muted">Waiting for requests…</p>
          ) : (
            <ul class="tail-lines mono small">
              {tail.map((l, i) => (
                <li key={`${l.request_id || ''}${i}`}>
                  {dateTime(l.at_ms)} <Badge kind={statusKind(l.status)}>{l.status}</Badge> {l.method} {l.path}{' '}
                  {l.model && <strong>{l.model}</strong>} {l.channel && `via ${l.channel}`} {ms(l.duration_ms)}
                  {l.token_prefix && ` · ${l.token_prefix}…`}
                </li>
              ))}
            </ul>
          )}
        </section>
      )}
      <ErrorNote error={error} />
      {data && entries.length === 0 && <p class="muted">No request matches.</p>}
      {entries.length > 0 && (
        <TableWrap label="Requests">
          <thead>
            <tr>
              <th scope="col">Time</th>
              {!mine && <th scope="col">Token</th>}
              <th scope="col">Model</th>
              <th scope="col">Channel</th>
              <th scope="col">Status</th>
              <th scope="col" class="num">
                Latency
              </th>
              <th scope="col" class="num">
                TTFT
              </th>
              <th scope="col" class="num">
                Tokens in / out
              </th>
              <th scope="col">
                <span class="visually-hidden">Details</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr key={e.id} data-log={e.id}>
                <td class="small nowrap">{dateTime(e.at_ms)}</td>
                {!mine && <td class="small">{e.token_name || (e.token_prefix ? `${e.token_prefix}…` : '—')}</td>}
                <td class="mono small">{e.model}</td>
                <td class="mono small">{e.channel || '—'}</td>
                <td>
                  <Badge kind={statusKind(e.status)}>{e.status}</Badge>
                  {e.cache_hit && <Badge kind="info">cache</Badge>}
                </td>
                <td class="num">{ms(e.latency_ms)}</td>
                <td class="num">{ms(e.ttft_ms)}</td>
                <td class="num">
                  {num(e.prompt_tokens)} / {num(e.completion_tokens)}
                </td>
                <td>
                  <button type="button" class="small" onClick={() => setOpen(e)} aria-label={`Details of request ${e.id}`}>
                    Details
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </TableWrap>
      )}
      {!compact && (pages.length > 1 || data?.next) && (
        <div class="pager">
          <button type="button" class="small" disabled={pages.length === 1} onClick={() => setPages(pages.slice(0, -1))}>
            Newer
          </button>
          <span class="muted small">page {pages.length}</span>
          <button type="button" class="small" disabled={!data?.next} onClick={() => setPages([...pages, data.next])}>
            Older
          </button>
        </div>
      )}
      {open && <Detail entry={open} onClose={() => setOpen(null)} />}
    </section>
  );
}
