// Pieces every page uses: data loading, errors, dialogs, fields, bars, copy buttons,
// links that stay in the page, and a uPlot chart that follows the theme.
import { cloneElement } from 'preact';
import { useCallback, useEffect, useId, useLayoutEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { get } from './api.js';

/** GET `path` (null: nothing yet); reloads when `path` changes or `reload()` is called. */
export function useApi(path, { every = 0 } = {}) {
  const [state, setState] = useState({ data: null, error: null, loading: !!path });
  const [round, setRound] = useState(0);
  const reload = useCallback(() => setRound((r) => r + 1), []);
  useEffect(() => {
    if (!path) return undefined;
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    get(path).then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState((s) => ({ data: s.data, error, loading: false })),
    );
    return () => {
      live = false;
    };
  }, [path, round]);
  useEffect(() => {
    if (!every || !path) return undefined;
    const id = setInterval(() => {
      if (!document.hidden) reload();
    }, every);
    return () => clearInterval(id);
  }, [every, path, reload]);
  return { ...state, reload };
}

export function ErrorNote({ error }) {
  if (!error) return null;
  return (
    <p class="note error" role="alert">
      {error.message || String(error)}
    </p>
  );
}

/** An in-page link under /admin (history navigation, no reload). */
export function Link({ href, children, ...rest }) {
  const click = (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return (
    <a href={href} onClick={click} {...rest}>
      {children}
    </a>
  );
}

export function navigate(href) {
  if (href === location.pathname + location.search) return;
  history.pushState(null, '', href);
  dispatchEvent(new PopStateEvent('popstate'));
}

/** A modal dialog (the browser's <dialog>: focus kept inside, Escape closes). */
export function Modal({ title, onClose, children, wide }) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.open && dialog.close();
  }, []);
  return (
    <dialog
      ref={ref}
      class={wide ? 'wide' : ''}
      aria-labelledby="dialog-title"
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      <header class="dialog-head">
        <h2 id="dialog-title">{title}</h2>
        <button type="button" class="ghost" onClick={onClose} aria-label="Close">
          ✕
        </button>
      </header>
      {children}
    </dialog>
  );
}

/** Asks before something that cannot be undone. */
export function Confirm({ title, children, action, danger = true, onConfirm, onClose }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const go = async () => {
    setBusy(true);
    try {
      await onConfirm();
      onClose();
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  return (
    <Modal title={title} onClose={onClose}>
      <div class="dialog-body">{children}</div>
      <ErrorNote error={error} />
      <footer class="dialog-foot">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button type="button" class={danger ? 'danger' : 'primary'} onClick={go} disabled={busy}>
          {action}
        </button>
      </footer>
    </Modal>
  );
}

/**
 * A labelled field: its one child (an input, select or textarea) gets the label, the
 * hint as its description, and `error` when the API named this field.
 */
export function Field({ label, hint, error, children, wide }) {
  const id = useId();
  const described = [hint && `${id}-hint`, error && `${id}-error`].filter(Boolean).join(' ') || undefined;
  const control = cloneElement(children, { id, 'aria-describedby': described, 'aria-invalid': error ? 'true' : undefined });
  return (
    <div class={`field${wide ? ' wide' : ''}${error ? ' invalid' : ''}`}>
      <label class="label" for={id}>
        {label}
      </label>
      {control}
      {hint && (
        <small class="hint" id={`${id}-hint`}>
          {hint}
        </small>
      )}
      {error && (
        <small class="field-error" id={`${id}-error`}>
          {error}
        </small>
      )}
    </div>
  );
}

export function Check({ label, checked, onChange }) {
  return (
    <label class="check">
      <input type="checkbox" checked={checked} onChange={(e) => onChange(e.currentTarget.checked)} />
      <span>{label}</span>
    </label>
  );
}

/** used / quota as a bar (no quota: just the count). */
export function QuotaBar({ used, quota, label = 'Quota used' }) {
  if (!quota) return <span class="muted">{used ? `${used.toLocaleString('en')} tokens, no quota` : 'no quota'}</span>;
  const share = Math.min(1, used / quota);
  const level = share >= 0.9 ? 'high' : share >= 0.7 ? 'mid' : 'low';
  return (
    <div class="quota">
      <div
        class={`bar ${level}`}
        role="progressbar"
        aria-label={label}
        aria-valuemin="0"
        aria-valuemax={quota}
        aria-valuenow={Math.min(used, quota)}
        aria-valuetext={`${used.toLocaleString('en')} of ${quota.toLocaleString('en')} tokens`}
      >
        <span style={{ width: `${(share * 100).toFixed(1)}%` }} />
      </div>
      <small>
        {used.toLocaleString('en')} / {quota.toLocaleString('en')} ({Math.round(share * 100)} %)
      </small>
    </div>
  );
}

export function CopyButton({ text, label = 'Copy' }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // No clipboard permission (an old browser, plain http from afar): copy by selection.
      const area = document.createElement('textarea');
      area.value = text;
      area.setAttribute('readonly', '');
      area.style.position = 'fixed';
      area.style.opacity = '0';
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    setDone(true);
    setTimeout(() => setDone(false), 1500);
  };
  return (
    <button type="button" class="small" onClick={copy}>
      {done ? 'Copied' : label}
    </button>
  );
}

export function Badge({ kind = '', children }) {
  return <span class={`badge ${kind}`}>{children}</span>;
}

/** A table that scrolls sideways on narrow screens (focusable, so keys scroll it too). */
export function TableWrap({ label, children }) {
  return (
    <div class="table-wrap" tabIndex={0} role="region" aria-label={label}>
      <table>{children}</table>
    </div>
  );
}

/** A health report's state as a badge. */
export function HealthBadge({ health }) {
  if (!health) return <Badge>unknown</Badge>;
  // "healthy", "half_open" (probing after failures), "open" or "down".
  const state = health.state || 'unknown';
  const kind = !health.usable ? 'bad' : state === 'healthy' ? 'good' : 'warn';
  return <Badge kind={kind}>{state.replace('_', ' ')}</Badge>;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/**
 * A time series chart. `data` is uPlot's: [xs (unix seconds), ...ys]; `series` names
 * each y with a colour variable (`--c1`..`--c4`) and a unit for its axis.
 */
export function Chart({ title, data, series, unit = '', theme, height = 180 }) {
  const caption = unit ? `${title} (${unit.trim()})` : title;
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const grid = cssVar('--grid');
    const text = cssVar('--muted');
    const opts = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [
        { stroke: text, grid: { stroke: grid }, ticks: { stroke: grid } },
        {
          stroke: text,
          grid: { stroke: grid },
          ticks: { stroke: grid },
          size: 50,
          values: (u, splits) => splits.map((v) => (v >= 1e4 ? `${+(v / 1e3).toFixed(1)}k` : `${+v.toFixed(2)}`)),
        },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: cssVar(s.color),
          fill: s.fill ? `${cssVar(s.color)}22` : undefined,
          width: 2,
          spanGaps: true,
          // Percentiles and rates exist only for steps with requests: dots, so a lone
          // step still shows.
          points: { show: !!s.sparse, size: 5 },
        })),
      ],
    };
    plot.current = new uPlot(opts, data, el);
    const resize = new ResizeObserver(() => {
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // Rebuilt when the theme or the series change; data alone is set below.
  }, [theme, series.map((s) => s.label).join(), height]);
  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);
  return (
    <figure class="chart">
      <figcaption>
        <span class="chart-title">{caption}</span>
        <span class="legend">
          {series.map((s) => (
            <span key={s.label}>
              <i style={{ background: `var(${s.color})` }} aria-hidden="true" />
              {s.label}
            </span>
          ))}
        </span>
      </figcaption>
      <div ref={box} class="plot" role="img" aria-label={`${caption} over time`} />
    </figure>
  );
}
