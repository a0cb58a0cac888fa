// Chat with any model of the catalog through diglot's own /v1/chat/completions,
// streamed, as any client would: with an API token (the admin session does not reach
// /v1). Per answer: time to first token, tokens per second, token counts; the request
// as curl.
import { useEffect, useRef, useState } from 'preact/hooks';
import { get, post } from '../api.js';
import { Confirm, CopyButton, ErrorNote, Field } from '../ui.jsx';
import { ms, num } from '../format.js';

const TOKEN_KEY = 'diglot.playground.token';

/** The models this caller may use: the catalog for an admin, /v1/models for a token. */
function useModels(session, token) {
  const [models, setModels] = useState([]);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    const load =
      session.role === 'admin'
        ? get('/models').then((m) =>
            // Embedding models do not chat.
            m.data.filter((x) => !(x.capabilities.length === 1 && x.capabilities[0] === 'embedding')).map((x) => x.name),
          )
        : fetch('/v1/models', { headers: token ? { authorization: `Bearer ${token}` } : {} }).then(async (res) => {
            const body = await res.json().catch(() => null);
            if (!res.ok) throw new Error(body?.error?.message || `GET /v1/models: ${res.status}`);
            return body.data.map((m) => m.id);
          });
    load.then(
      (names) => live && (setModels(names), setError(null)),
      (e) => live && setError(e),
    );
    return () => {
      live = false;
    };
  }, [session.role, token]);
  return [models, error];
}

function curlOf(body) {
  const json = JSON.stringify(body, null, 2).replaceAll("'", "'\\''");
  return `curl ${location.origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $OPENAI_API_KEY" \\\n  -H 'Content-Type: application/json' \\\n  -d '${json}'`;
}

/** Reads an OpenAI server-sent event stream, calling `onEvent` with each JSON payload. */
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let at;
    while ((at = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      for (const line of frame.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        let event;
        try {
          event = JSON.parse(data);
        } catch {
          continue; // Not JSON: nothing a chat answer carries.
        }
        onEvent(event);
      }
    }
  }
}

function Stats({ m }) {
  if (!m) return null;
  const genSecs = m.firstAt && m.endAt > m.firstAt ? (m.endAt - m.firstAt) / 1000 : 0;
  const tps = m.completion && genSecs ? (m.completion / genSecs).toFixed(1) : '—';
  return (
    <p class="stats small" data-testid="answer-stats">
      <span>TTFT {ms(m.firstAt ? m.firstAt - m.startAt : null)}</span>
      <span>{tps} tokens/s</span>
      <span>
        {num(m.prompt)} in / {num(m.completion)} out{m.estimated ? ' (estimated)' : ''}
      </span>
      <span>total {ms(m.endAt ? m.endAt - m.startAt : null)}</span>
    </p>
  );
}

export function Playground({ session }) {
  const [token, setToken] = useState(() => sessionStorage.getItem(TOKEN_KEY) || '');
  const [models, modelsError] = useModels(session, token);
  const [model, setModel] = useState('');
  const [system, setSystem] = useState('');
  const [temperature, setTemperature] = useState('');
  const [maxTokens, setMaxTokens] = useState('');
  const [effort, setEffort] = useState('');
  const [messages, setMessages] = useState([]); // {role, content, reasoning?, metrics?, error?}
  const [input, setInput] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [making, setMaking] = useState(false);
  const abort = useRef(null);
  const end = useRef(null);

  useEffect(() => {
    if (!model && models.length) setModel(models[0]);
  }, [models]);
  useEffect(() => {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }, [token]);
  useEffect(() => end.current?.scrollIntoView({ block: 'nearest' }), [messages]);

  const requestBody = (history) => {
    const body = { model, stream: true, stream_options: { include_usage: true }, messages: [] };
    if (system.trim()) body.messages.push({ role: 'system', content: system });
    body.messages.push(...history.map(({ role, content }) => ({ role, content })));
    if (temperature !== '') body.temperature = Number(temperature);
    if (maxTokens !== '') body.max_tokens = Number(maxTokens);
    if (effort) body.reasoning_effort = effort;
    return body;
  };
  const preview = requestBody([...messages.filter((m) => !m.error), ...(input.trim() ? [{ role: 'user', content: input }] : [])]);

  const send = async (e) => {
    e.preventDefault();
    if (!input.trim() || !model || busy) return;
    setError(null);
    const history = [...messages.filter((m) => !m.error), { role: 'user', content: input }];
    const body = requestBody(history);
    const metrics = { startAt: performance.now(), firstAt: 0, endAt: 0, prompt: null, completion: null };
    const answer = { role: 'assistant', model, content: '', reasoning: '', metrics };
    setMessages([...history, answer]);
    setInput('');
    setBusy(true);
    const controller = new AbortController();
    abort.current = controller;
    const show = () => setMessages([...history, { ...answer, metrics: { ...metrics } }]);
    try {
      const res = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!res.ok) {
        const problem = await res.json().catch(() => null);
        let message = problem?.error?.message || `${res.status} ${res.statusText}`;
        if (res.status === 401) message += ' — paste an API token above' + (session.role === 'admin' ? ', or make a playground token.' : '.');
        throw new Error(message);
      }
      let frames = 0;
      await readEvents(res, (event) => {
        if (event.error) throw new Error(event.error.message || JSON.stringify(event.error));
        const delta = event.choices?.[0]?.delta;
        const text = delta?.content || '';
        const thought = delta?.reasoning_content || delta?.reasoning || '';
        if ((text || thought) && !metrics.firstAt) metrics.firstAt = performance.now();
        answer.content += text;
        answer.reasoning += thought;
        if (event.usage) {
          metrics.prompt = event.usage.prompt_tokens;
          metrics.completion = event.usage.completion_tokens;
        }
        frames += 1;
        show();
      });
      metrics.endAt = performance.now();
      if (metrics.completion === null) {
        // No usage chunk: a rough count, said as such.
        metrics.completion = Math.max(frames - 1, Math.ceil(answer.content.length / 4));
        metrics.estimated = true;
      }
      show();
    } catch (err) {
      metrics.endAt = performance.now();
      if (err.name === 'AbortError') {
        answer.content += ' [stopped]';
        show();
      } else {
        setMessages([...history, { ...answer, metrics: { ...metrics }, error: err.message }]);
        setError(err);
      }
    } finally {
      setBusy(false);
      abort.current = null;
    }
  };

  return (
    <section class="playground">
      <div class="page-head">
        <h1>Playground</h1>
        <div class="toolbar">
          <button type="button" class="small" onClick={() => setMessages([])} disabled={busy || !messages.length}>
            New chat
          </button>
        </div>
      </div>
      <div class="play-grid">
        <aside class="card play-settings" aria-label="Chat settings">
          <Field label="API token for /v1" hint="Sent as a client would (Authorization: Bearer); kept in this tab only. Not needed while diglot requires no token.">
            <input type="password" autoComplete="off" value={token} onInput={(e) => setToken(e.currentTarget.value.trim())} placeholder="dg-…" />
          </Field>
          {session.role === 'admin' && (
            <button type="button" class="small" onClick={() => setMaking(true)}>
              Make a playground token
            </button>
          )}
          <Field label="Model">
            <select value={model} onChange={(e) => setModel(e.currentTarget.value)}>
              {models.length === 0 && <option value="">no model</option>}
              {models.map((m) => (
                <option key={m} value={m}>
                  {m}
                </option>
              ))}
            </select>
          </Field>
          <ErrorNote error={modelsError} />
          <Field label="System prompt">
            <textarea rows="3" value={system} onInput={(e) => setSystem(e.currentTarget.value)} />
          </Field>
          <Field label="Temperature" hint="empty: the model's default">
            <input type="number" min="0" max="2" step="0.1" value={temperature} onInput={(e) => setTemperature(e.currentTarget.value)} />
          </Field>
          <Field label="Max tokens" hint="empty: no limit">
            <input type="number" min="1" step="1" value={maxTokens} onInput={(e) => setMaxTokens(e.currentTarget.value)} />
          </Field>
          <Field label="Reasoning effort">
            <select value={effort} onChange={(e) => setEffort(e.currentTarget.value)}>
              <option value="">not sent</option>
              <option value="none">none</option>
              <option value="low">low</option>
              <option value="medium">medium</option>
              <option value="high">high</option>
            </select>
          </Field>
        </aside>
        <div class="play-chat">
          <div class="messages card" aria-live="polite" aria-label="Conversation">
            {messages.length === 0 && <p class="muted">Send a message to start. Each answer shows its time to first token, speed and token counts.</p>}
            {messages.map((m, i) => (
              <div key={i} class={`message ${m.role}`} data-testid={m.role === 'assistant' ? 'answer' : undefined}>
                <div class="who small">{m.role === 'user' ? 'You' : m.model}</div>
                {m.reasoning && (
                  <details class="reasoning">
                    <summary>Reasoning</summary>
                    <div class="text">{m.reasoning}</div>
                  </details>
                )}
                <div class="text">{m.content || (busy && i === messages.length - 1 ? '…' : '')}</div>
                {m.error && <p class="error-text small">{m.error}</p>}
                {m.role === 'assistant' && <Stats m={m.metrics} />}
              </div>
            ))}
            <div ref={end} />
          </div>
          <form class="composer" onSubmit={send}>
            <label class="visually-hidden" for="prompt">
              Message
            </label>
            <textarea
              id="prompt"
              rows="3"
              value={input}
              onInput={(e) => setInput(e.currentTarget.value)}
              onKeyDown={(e) => {
                if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send(e);
              }}
              placeholder="Message (Ctrl+Enter sends)"
            />
            <div class="composer-buttons">
              {busy ? (
                <button type="button" class="danger" onClick={() => abort.current?.abort()}>
                  Stop
                </button>
              ) : (
                <button type="submit" class="primary" disabled={!input.trim() || !model}>
                  Send
                </button>
              )}
            </div>
          </form>
          <ErrorNote error={error} />
          <details class="curl">
            <summary>The request as curl</summary>
            <pre class="code small">
              <code>{curlOf(preview)}</code>
            </pre>
            <CopyButton text={curlOf(preview)} />
          </details>
        </div>
      </div>
      {making && (
        <MakeToken
          onClose={() => setMaking(false)}
          onMade={(secret) => {
            setToken(secret);
          }}
        />
      )}
    </section>
  );
}

/** An admin makes a user token that expires in a day, for this tab's playground. */
function MakeToken({ onClose, onMade }) {
  const [count, setCount] = useState(null);
  useEffect(() => {
    get('/tokens').then((t) => setCount(t.data.length), () => setCount(null));
  }, []);
  return (
    <Confirm
      title="Make a playground token?"
      action="Make token"
      danger={false}
      onClose={onClose}
      onConfirm={async () => {
        const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
        const made = await post('/tokens', {
          name: `playground-${stamp}`,
          role: 'user',
          expires_at: Math.floor(Date.now() / 1000) + 86400,
        });
        onMade(made.secret);
      }}
    >
      <p>
        The admin session does not reach <code>/v1</code>: the playground calls it as any client does, with an API token. This
        makes a <strong>user</strong> token that expires in 24 hours, kept in this tab only; revoke it on the Tokens page
        whenever you like.
      </p>
      {count === 0 && (
        <p class="note warn">
          No token exists yet, so diglot asks none of its callers on loopback for one. Once this one exists, every /v1 and /api
          call needs a token.
        </p>
      )}
    </Confirm>
  );
}
