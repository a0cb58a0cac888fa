// Requests, tokens, errors, latency and time to first token over a window, the top
// tokens, models and channels, and every channel's health; refreshed while shown.
import { useMemo, useState } from 'preact/hooks';
import { Chart, ErrorNote, HealthBadge, TableWrap, useApi } from '../ui.jsx';
import { ago, ms, num, pct, short } from '../format.js';

const WINDOWS = [
  ['1h', 'Last hour', 3600],
  ['24h', '24 hours', 86400],
  ['7d', '7 days', 7 * 86400],
  ['30d', '30 days', 30 * 86400],
];

/** The series over the whole window, one point per step (steps without requests: 0). */
function columns(dash, span) {
  const step = dash.step_secs;
  const now = Math.floor(Date.now() / 1000);
  const start = Math.floor((now - span) / step) * step;
  const byStep = new Map(dash.series.map((p) => [Math.floor(p.at_ms / 1000 / step) * step, p]));
  const xs = [];
  const cols = { requests: [], errors: [], rate: [], tin: [], tout: [], p50: [], p95: [], ttft: [] };
  for (let t = start + step; t <= now; t += step) {
    const p = byStep.get(t);
    xs.push(t);
    cols.requests.push(p ? p.requests : 0);
    cols.errors.push(p ? p.errors : 0);
    cols.rate.push(p && p.requests ? (100 * p.errors) / p.requests : p ? 0 : null);
    cols.tin.push(p ? p.prompt_tokens : 0);
    cols.tout.push(p ? p.completion_tokens : 0);
    cols.p50.push(p?.latency_p50_ms ?? null);
    cols.p95.push(p?.latency_p95_ms ?? null);
    cols.ttft.push(p?.ttft_p50_ms ?? null);
  }
  return { xs, ...cols };
}

function Top({ title, rows, keyLabel }) {
  return (
    <section class="card">
      <h2>{title}</h2>
      {rows.length === 0 ? (
        <p class="muted">No requests in this window.</p>
      ) : (
        <TableWrap label={title}>
          <thead>
            <tr>
              <th scope="col">{keyLabel}</th>
              <th scope="col" class="num">
                Requests
              </th>
              <th scope="col" class="num">
                Errors
              </th>
              <th scope="col" class="num">
                Tokens in / out
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.key}>
                <td>
                  {r.name ? (
                    <>
                      {r.name} <span class="muted mono">{r.key}</span>
                    </>
                  ) : (
                    <span class="mono">{r.key || '—'}</span>
                  )}
                </td>
                <td class="num">{num(r.requests)}</td>
                <td class="num">{num(r.errors)}</td>
                <td class="num">
                  {short(r.prompt_tokens)} / {short(r.completion_tokens)}
                </td>
              </tr>
            ))}
          </tbody>
        </TableWrap>
      )}
    </section>
  );
}

export function Dashboard({ theme }) {
  const [win, setWin] = useState('24h');
  const [auto, setAuto] = useState(true);
  const span = WINDOWS.find((w) => w[0] === win)[2];
  const { data, error, loading, reload } = useApi(`/dashboard?window=${win}`, {
    every: auto ? (win === '1h' ? 5000 : 30000) : 0,
  });
  const cols = useMemo(() => (data ? columns(data, span) : null), [data, span]);
  const t = data?.totals;

  return (
    <section>
      <div class="page-head">
        <h1>Dashboard</h1>
        <div class="toolbar">
          <div class="tabs" role="group" aria-label="Window">
            {WINDOWS.map(([w, label]) => (
              <button type="button" key={w} aria-pressed={w === win} onClick={() => setWin(w)}>
                {label}
              </button>
            ))}
          </div>
          <label class="check">
            <input type="checkbox" checked={auto} onChange={(e) => setAuto(e.currentTarget.checked)} />
            <span>Auto-refresh</span>
          </label>
          <button type="button" class="small" onClick={reload} disabled={loading}>
            Refresh
          </button>
        </div>
      </div>
      <ErrorNote error={error} />
      {t && (
        <div class="tiles" data-testid="totals">
          <div class="tile">
            <span class="tile-label">Requests</span>
            <strong data-testid="total-requests">{num(t.requests)}</strong>
          </div>
          <div class="tile">
            <span class="tile-label">Error rate</span>
            <strong>{pct(t.errors, t.requests)}</strong>
            <small>{num(t.errors)} errors</small>
          </div>
          <div class="tile">
            <span class="tile-label">Tokens in / out</span>
            <strong>
              {short(t.prompt_tokens)} / {short(t.completion_tokens)}
            </strong>
          </div>
          <div class="tile">
            <span class="tile-label">Latency p50 / p95</span>
            <strong>
              {ms(t.latency_p50_ms)} / {ms(t.latency_p95_ms)}
            </strong>
          </div>
          <div class="tile">
            <span class="tile-label">Time to first token p50</span>
            <strong>{ms(t.ttft_p50_ms)}</strong>
          </div>
          <div class="tile">
            <span class="tile-label">Cache hits</span>
            <strong>{num(t.cache_hits)}</strong>
            <small>{pct(t.cache_hits, t.requests)}</small>
          </div>
        </div>
      )}
      {cols && (
        <div class="charts">
          <Chart
            theme={theme}
            title="Requests"
            data={[cols.xs, cols.requests, cols.errors]}
            series={[
              { label: 'requests', color: '--c1', fill: true },
              { label: 'errors', color: '--c3' },
            ]}
          />
          <Chart
            theme={theme}
            title="Tokens"
            data={[cols.xs, cols.tin, cols.tout]}
            series={[
              { label: 'in (prompt)', color: '--c1' },
              { label: 'out (completion)', color: '--c2' },
            ]}
          />
          <Chart
            theme={theme}
            title="Error rate"
            unit="%"
            data={[cols.xs, cols.rate]}
            series={[{ label: 'errors / requests', color: '--c3', sparse: true }]}
          />
          <Chart
            theme={theme}
            title="Latency"
            unit=" ms"
            data={[cols.xs, cols.p50, cols.p95]}
            series={[
              { label: 'p50', color: '--c1', sparse: true },
              { label: 'p95', color: '--c4', sparse: true },
            ]}
          />
          <Chart
            theme={theme}
            title="Time to first token"
            unit=" ms"
            data={[cols.xs, cols.ttft]}
            series={[{ label: 'p50', color: '--c2', sparse: true }]}
          />
        </div>
      )}
      {data && (
        <>
          <h2 class="section-title">Channels</h2>
          <div class="health-tiles">
            {data.channels.map((c) => (
              <div class="tile health" key={c.name}>
                <div class="tile-row">
                  <strong class="mono">{c.name}</strong>
                  <HealthBadge health={c.health} />
                </div>
                <small class="muted">
                  {c.source} · {c.health?.window?.requests ?? 0} requests, {c.health?.window?.failures ?? 0} failures lately
                  {c.health?.latency_ms != null && ` · ${ms(c.health.latency_ms)}`}
                </small>
                {c.health?.last_error && (
                  <small class="error-text">
                    {ago(c.health.last_error.at * 1000)}: {c.health.last_error.message}
                  </small>
                )}
              </div>
            ))}
          </div>
          <div class="grid-3">
            <Top title="Top tokens" rows={data.top_tokens} keyLabel="Token" />
            <Top title="Top models" rows={data.top_models} keyLabel="Model" />
            <Top title="Top channels" rows={data.top_channels} keyLabel="Channel" />
          </div>
        </>
      )}
    </section>
  );
}
