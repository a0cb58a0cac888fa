// A token holder's own page: its limits, quota, allowed models, its requests and tokens
// over time, and its recent requests; nothing of anyone else's.
import { useMemo, useState } from 'preact/hooks';
import { Badge, Chart, ErrorNote, QuotaBar, useApi } from '../ui.jsx';
import { dateTime, num, short } from '../format.js';
import { Logs } from './Logs.jsx';

const SPANS = [
  ['24h', '24 hours', 86400, 3600],
  ['7d', '7 days', 7 * 86400, 6 * 3600],
];

/** Requests and tokens per step, from the caller's own records (the newest 1000). */
function series(entries, span, step) {
  const now = Math.floor(Date.now() / 1000);
  const start = Math.floor((now - span) / step) * step;
  const xs = [];
  const req = [];
  const tin = [];
  const tout = [];
  for (let t = start + step; t <= now; t += step) {
    xs.push(t);
    req.push(0);
    tin.push(0);
    tout.push(0);
  }
  for (const e of entries) {
    const i = Math.floor((e.at_ms / 1000 - start - step) / step);
    if (i < 0 || i >= xs.length) continue;
    req[i] += 1;
    tin[i] += e.prompt_tokens;
    tout[i] += e.completion_tokens;
  }
  return { xs, req, tin, tout };
}

export function Me({ theme }) {
  const me = useApi('/me');
  const [span, setSpan] = useState('24h');
  const [, , secs, step] = SPANS.find((s) => s[0] === span);
  const since = useMemo(() => Date.now() - secs * 1000, [secs]);
  const logs = useApi(`/me/logs?limit=1000&since=${Math.floor(since / 60000) * 60000}`, { every: 30000 });
  const cols = useMemo(() => (logs.data ? series(logs.data.data, secs, step) : null), [logs.data, secs, step]);
  const t = me.data;

  return (
    <section>
      <div class="page-head">
        <h1>My usage</h1>
      </div>
      <ErrorNote error={me.error} />
      {t && (
        <div class="grid-2">
          <section class="card">
            <h2>
              {t.name} <span class="muted mono small">{t.prefix}…</span>
            </h2>
            <p>
              {t.enabled ? <Badge kind="good">enabled</Badge> : <Badge kind="bad">disabled</Badge>} <Badge>{t.role}</Badge>{' '}
              {t.expires_at ? `expires ${dateTime(t.expires_at * 1000)}` : 'never expires'}
            </p>
            <h3>This month</h3>
            <QuotaBar used={t.used_this_month} quota={t.monthly_quota} label="My quota used" />
            {t.quota_left !== null && <p class="small">{num(t.quota_left)} tokens left this month</p>}
          </section>
          <section class="card">
            <h2>Limits</h2>
            <dl class="detail">
              <div>
                <dt>Requests a minute</dt>
                <dd>{t.rpm ? num(t.rpm) : 'the default'}</dd>
              </div>
              <div>
                <dt>Tokens a minute</dt>
                <dd>{t.tpm ? num(t.tpm) : 'the default'}</dd>
              </div>
              <div>
                <dt>Requests at once</dt>
                <dd>{t.max_concurrent ? num(t.max_concurrent) : 'the default'}</dd>
              </div>
              <div>
                <dt>Models</dt>
                <dd>{t.models.length ? t.models.join(', ') : 'every model'}</dd>
              </div>
              <div>
                <dt>From addresses</dt>
                <dd>{t.ips.length ? t.ips.join(', ') : 'anywhere'}</dd>
              </div>
            </dl>
          </section>
        </div>
      )}
      <div class="page-head">
        <h2>Over time</h2>
        <div class="tabs" role="group" aria-label="Window">
          {SPANS.map(([s, label]) => (
            <button type="button" key={s} aria-pressed={s === span} onClick={() => setSpan(s)}>
              {label}
            </button>
          ))}
        </div>
      </div>
      <ErrorNote error={logs.error} />
      {cols && (
        <>
          <p class="muted small">
            {num(cols.req.reduce((a, b) => a + b, 0))} requests, {short(cols.tin.reduce((a, b) => a + b, 0))} tokens in,{' '}
            {short(cols.tout.reduce((a, b) => a + b, 0))} out
            {logs.data.next ? ' (the newest 1,000 requests)' : ''}
          </p>
          <div class="charts">
            <Chart theme={theme} title="Requests" data={[cols.xs, cols.req]} series={[{ label: 'requests', color: '--c1', fill: true }]} />
            <Chart
              theme={theme}
              title="Tokens"
              data={[cols.xs, cols.tin, cols.tout]}
              series={[
                { label: 'in', color: '--c1' },
                { label: 'out', color: '--c2' },
              ]}
            />
          </div>
        </>
      )}
      <h2 class="section-title">Recent requests</h2>
      <Logs mine compact />
    </section>
  );
}
