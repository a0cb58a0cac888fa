// Every change made through the admin API: who, what (before and after, never a
// secret), when, from where.
import { useState } from 'preact/hooks';
import { query } from '../api.js';
import { ErrorNote, TableWrap, useApi } from '../ui.jsx';
import { dateTime } from '../format.js';

export function Audit() {
  const [pages, setPages] = useState([null]);
  const { data, error } = useApi(`/audit${query({ before: pages[pages.length - 1], limit: 50 })}`);
  const entries = data?.data ?? [];
  return (
    <section>
      <div class="page-head">
        <h1>Audit log</h1>
      </div>
      <ErrorNote error={error} />
      {data && entries.length === 0 && <p class="muted">No change has been made through the admin API yet.</p>}
      {entries.length > 0 && (
        <TableWrap label="Audit log">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Who</th>
              <th scope="col">From</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Change</th>
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr key={e.id}>
                <td class="small nowrap">{dateTime(e.at_ms)}</td>
                <td class="small">{e.actor}</td>
                <td class="mono small">{e.ip}</td>
                <td class="mono small">{e.action}</td>
                <td class="mono small">{e.target}</td>
                <td>
                  <details>
                    <summary>before / after</summary>
                    <div class="diff">
                      <pre class="small">{e.before === null ? '—' : JSON.stringify(e.before, null, 2)}</pre>
                      <pre class="small">{e.after === null ? '—' : JSON.stringify(e.after, null, 2)}</pre>
                    </div>
                  </details>
                </td>
              </tr>
            ))}
          </tbody>
        </TableWrap>
      )}
      {(pages.length > 1 || data?.next) && (
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
    </section>
  );
}
