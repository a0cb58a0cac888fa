// Drives headless Chromium (Debian's /usr/bin/chromium) with playwright-core: pages on
// two origins call diglot with fetch. Usage: node check.cjs DIGLOT_URL ALLOWED_ORIGIN FOREIGN_ORIGIN
// (FOREIGN_ORIGIN's host is mapped to 127.0.0.1 inside the browser). Exits non-zero on
// the first broken expectation.
'use strict';
const assert = require('node:assert/strict');
const { chromium } = require('playwright-core');

const [diglot, allowedOrigin, foreignOrigin] = process.argv.slice(2);
const foreignHost = new URL(foreignOrigin).hostname;

// In the page: a streamed chat through the SDK-style headers (a preflight first), read
// chunk by chunk as a browser client renders it.
async function streamedChat(diglot) {
  const res = await fetch(`${diglot}/v1/chat/completions`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: 'Bearer unused',
      'x-stainless-os': 'Linux',
      'x-stainless-lang': 'js',
    },
    body: JSON.stringify({ model: 'llama3.2:latest', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
  });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let reads = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    reads += 1;
    text += decoder.decode(value, { stream: true });
  }
  return { status: res.status, reads, text };
}

// In the page: an embedding, whose answer says whether the cache served it, in a header
// the page may read only when diglot exposes it.
async function embedding(diglot) {
  const res = await fetch(`${diglot}/v1/embeddings`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer unused' },
    body: JSON.stringify({ model: 'llama3.2:latest', input: 'hello' }),
  });
  const body = await res.json();
  return { status: res.status, cache: res.headers.get('x-diglot-cache'), dims: body.data?.[0]?.embedding?.length };
}

// In the page: an NDJSON stream from the Ollama API.
async function ollamaStream(diglot) {
  const res = await fetch(`${diglot}/api/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'llama3.2:latest', prompt: 'hi' }),
  });
  const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
  return { status: res.status, lines };
}

// In the page: a POST no browser preflights (text/plain), readable when the origin is allowed.
async function textPlain([diglot, path]) {
  const res = await fetch(`${diglot}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
  });
  return { status: res.status, body: await res.json() };
}

// In the page: any fetch, reporting whether the browser let the page read the answer.
async function tryFetch([diglot, path, init]) {
  try {
    const res = await fetch(`${diglot}${path}`, init);
    return { read: true, status: res.status, type: res.type };
  } catch (e) {
    return { read: false, error: String(e) };
  }
}

(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', `--host-resolver-rules=MAP ${foreignHost} 127.0.0.1`],
  });
  try {
    const page = await browser.newPage();

    await page.goto(`${allowedOrigin}/index.html`);
    const chat = await page.evaluate(streamedChat, diglot);
    assert.equal(chat.status, 200, JSON.stringify(chat));
    const data = chat.text.split('\n\n').filter((f) => f.startsWith('data: '));
    assert.equal(data.at(-1), 'data: [DONE]', chat.text);
    const content = data
      .slice(0, -1)
      .map((f) => JSON.parse(f.slice(6)).choices[0]?.delta?.content ?? '')
      .join('');
    assert.ok(content.length > 0, chat.text);
    assert.ok(chat.reads > 1, `the stream arrived in pieces, not whole: ${chat.reads} read(s)`);
    console.log(`allowed origin: streamed ${data.length - 1} chunks in ${chat.reads} reads`);

    const embedded = await page.evaluate(embedding, diglot);
    assert.equal(embedded.status, 200, JSON.stringify(embedded));
    assert.ok(embedded.dims > 0, JSON.stringify(embedded));
    assert.equal(embedded.cache, 'miss', 'x-diglot-cache is exposed to the page');
    console.log('allowed origin: embedding, x-diglot-cache readable');

    const ollama = await page.evaluate(ollamaStream, diglot);
    assert.equal(ollama.status, 200);
    assert.equal(ollama.lines.at(-1).done, true);
    assert.ok(ollama.lines.length > 2, JSON.stringify(ollama.lines));
    console.log(`allowed origin: Ollama NDJSON stream of ${ollama.lines.length} lines`);

    const plain = await page.evaluate(textPlain, [diglot, '/v1/chat/completions']);
    assert.equal(plain.status, 415, JSON.stringify(plain));
    assert.equal(plain.body.error.code, 'unsupported_media_type');
    console.log('allowed origin: text/plain POST refused with 415');

    await page.goto(`${foreignOrigin}/index.html`);
    assert.equal(await page.evaluate(() => location.origin), foreignOrigin);
    const json = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":"gpt-4o","messages":[]}' };
    const refused = await page.evaluate(tryFetch, [diglot, '/v1/chat/completions', json]);
    assert.equal(refused.read, false, `a foreign page must not read diglot: ${JSON.stringify(refused)}`);
    const get = await page.evaluate(tryFetch, [diglot, '/api/tags', {}]);
    assert.equal(get.read, false, `a foreign page must not read diglot's model list: ${JSON.stringify(get)}`);
    // The classic CSRF: a "simple" POST needs no preflight, so the browser sends it; diglot
    // must refuse it (run.sh checks its log for the 403 on /api/chat).
    const simple = {
      method: 'POST',
      mode: 'no-cors',
      headers: { 'content-type': 'text/plain' },
      body: '{"model":"gpt-4o","messages":[{"role":"user","content":"spend the keys"}]}',
    };
    const sent = await page.evaluate(tryFetch, [diglot, '/api/chat', simple]);
    assert.equal(sent.type, 'opaque', JSON.stringify(sent));
    console.log('foreign origin: refused (preflighted and simple requests)');
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
