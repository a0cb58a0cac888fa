// ollama-js and openai-node against diglot, driven by tests/e2e/suite/test_node.py.
// Records what the official clients got (prints one JSON object on the last line of stdout);
// the assertions, and the comparison with llama.cpp's own answers, are in test_node.py.
// Needs NODE_PATH=<e2e home>/node/node_modules and the E2E_* URLs set by run.sh.
'use strict';
const { Ollama } = require('ollama');
const OpenAI = require('openai');

const env = process.env;
const MODEL = 'gemma-3-270m';
const EMBED_MODEL = 'gemma-embed';
const MESSAGES = [{ role: 'user', content: 'Write a short story about a lighthouse keeper.' }];
const SCHEMA = {
  type: 'object',
  properties: {
    color: { type: 'string', enum: ['red', 'green', 'blue'] },
    count: { type: 'integer', minimum: 0, maximum: 99 },
    ok: { type: 'boolean' },
  },
  required: ['color', 'count', 'ok'],
  additionalProperties: false,
};

const out = {};
async function step(name, fn) {
  try {
    out[name] = await fn();
  } catch (e) {
    out[name] = { error: String(e && e.stack ? e.stack : e), status: e && e.status };
  }
}

async function slotsBusy() {
  const r = await fetch(`${env.E2E_LLAMA_URL}/slots`);
  const slots = await r.json();
  return slots.some((s) => s.is_processing);
}
// seconds until llama-server's slot is idle (null if still busy after 10 s)
async function idleAfter() {
  const t0 = Date.now();
  while (Date.now() - t0 < 10000) {
    if (!(await slotsBusy())) return (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 50));
  }
  return null;
}

async function main() {
  const ollama = new Ollama({ host: env.E2E_DIGLOT_CHAT });
  const ollamaEmbed = new Ollama({ host: env.E2E_DIGLOT_EMBED });
  const opts = { temperature: 0, seed: 7, num_predict: 16 };

  // ---------------- ollama-js ----------------
  await step('ollama_chat', async () => {
    const r = await ollama.chat({ model: MODEL, messages: MESSAGES, options: opts });
    return { content: r.message.content, role: r.message.role, done: r.done, done_reason: r.done_reason,
      prompt_eval_count: r.prompt_eval_count, eval_count: r.eval_count, total_duration: r.total_duration };
  });
  await step('ollama_chat_stream', async () => {
    const it = await ollama.chat({ model: MODEL, messages: MESSAGES, options: opts, stream: true });
    let text = ''; let contentChunks = 0; let last = null; let n = 0;
    for await (const part of it) {
      n += 1;
      if (part.message && part.message.content) { contentChunks += 1; text += part.message.content; }
      last = part;
    }
    return { text, content_chunks: contentChunks, chunks: n, done: last.done, done_reason: last.done_reason,
      prompt_eval_count: last.prompt_eval_count, eval_count: last.eval_count };
  });
  await step('ollama_num_predict', async () => {
    const r = await ollama.chat({ model: MODEL, messages: MESSAGES, options: { temperature: 0, num_predict: 4 } });
    return { done_reason: r.done_reason, eval_count: r.eval_count };
  });
  await step('ollama_generate', async () => {
    const r = await ollama.generate({ model: MODEL, prompt: MESSAGES[0].content, options: opts });
    return { response: r.response, done: r.done, done_reason: r.done_reason,
      prompt_eval_count: r.prompt_eval_count, eval_count: r.eval_count };
  });
  await step('ollama_generate_stream', async () => {
    const it = await ollama.generate({ model: MODEL, prompt: MESSAGES[0].content, options: opts, stream: true });
    let text = ''; let chunks = 0; let last = null;
    for await (const part of it) { if (part.response) { chunks += 1; text += part.response; } last = part; }
    return { text, content_chunks: chunks, done_reason: last.done_reason, eval_count: last.eval_count };
  });
  await step('ollama_format', async () => {
    const r = await ollama.chat({ model: MODEL, messages: [{ role: 'user', content: 'Describe a box as JSON.' }],
      format: SCHEMA, options: { temperature: 0, num_predict: 64 } });
    return { content: r.message.content, done_reason: r.done_reason };
  });
  await step('ollama_list', async () => (await ollama.list()).models.map((m) => m.name));
  await step('ollama_show', async () => {
    const r = await ollama.show({ model: MODEL });
    return { capabilities: r.capabilities, model_info: r.model_info };
  });
  await step('ollama_ps', async () => (await ollama.ps()).models.map((m) => m.name));
  await step('ollama_embed', async () => {
    const r = await ollamaEmbed.embed({ model: EMBED_MODEL, input: ['the sea at night', 'a lamp'] });
    return { n: r.embeddings.length, dims: r.embeddings.map((e) => e.length),
      norms: r.embeddings.map((e) => Math.sqrt(e.reduce((a, x) => a + x * x, 0))), first: r.embeddings[0] };
  });
  await step('ollama_abort', async () => {
    const it = await ollama.chat({ model: MODEL, messages: MESSAGES, stream: true,
      options: { temperature: 0, num_predict: 1500, stop: [] } });
    let got = 0;
    const busyBefore = await (async () => {
      for await (const part of it) { got += 1; if (got === 3) break; }
      return slotsBusy();
    })();
    it.abort();
    return { chunks_before_abort: got, busy_before: busyBefore, idle_after_s: await idleAfter() };
  });

  // ---------------- openai-node ----------------
  const openai = new OpenAI({ baseURL: `${env.E2E_DIGLOT_CHAT}/v1`, apiKey: 'unused' });
  const chain = new OpenAI({ baseURL: `${env.E2E_DIGLOT_CHAIN}/v1`, apiKey: 'unused' });
  const openaiEmbed = new OpenAI({ baseURL: `${env.E2E_DIGLOT_EMBED}/v1`, apiKey: 'unused' });
  const body = { model: MODEL, messages: MESSAGES, temperature: 0, seed: 7, max_tokens: 16 };
  for (const [label, client] of [['openai', openai], ['openai_chain', chain]]) {
    await step(`${label}_chat`, async () => {
      const r = await client.chat.completions.create(body);
      return { content: r.choices[0].message.content, finish_reason: r.choices[0].finish_reason, usage: r.usage,
        object: r.object, id: r.id };
    });
    await step(`${label}_stream`, async () => {
      const s = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
      let text = ''; let contentChunks = 0; let usage = null; let finish = null; let roles = 0; const ids = new Set();
      for await (const c of s) {
        ids.add(c.id);
        if (c.usage) usage = c.usage;
        for (const ch of c.choices) {
          if (ch.delta && ch.delta.role) roles += 1;
          if (ch.delta && ch.delta.content) { contentChunks += 1; text += ch.delta.content; }
          if (ch.finish_reason) finish = ch.finish_reason;
        }
      }
      return { text, content_chunks: contentChunks, usage, finish_reason: finish, role_deltas: roles, ids: ids.size };
    });
    await step(`${label}_length`, async () => {
      const r = await client.chat.completions.create({ ...body, max_tokens: 4 });
      return { finish_reason: r.choices[0].finish_reason, usage: r.usage };
    });
    await step(`${label}_models`, async () => {
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      return ids;
    });
    await step(`${label}_abort`, async () => {
      const controller = new AbortController();
      const s = await client.chat.completions.create({ ...body, max_tokens: 1500, stream: true },
        { signal: controller.signal });
      let got = 0; let busyBefore = null;
      try {
        for await (const c of s) {
          if (c.choices.length && c.choices[0].delta.content) got += 1;
          if (got === 3) { busyBefore = await slotsBusy(); controller.abort(); }
        }
      } catch (e) { /* the abort error */ }
      return { chunks_before_abort: got, busy_before: busyBefore, idle_after_s: await idleAfter() };
    });
  }
  await step('openai_embeddings', async () => {
    const r = await openaiEmbed.embeddings.create({ model: EMBED_MODEL, input: ['the sea at night', 'a lamp'] });
    return { n: r.data.length, dims: r.data.map((d) => d.embedding.length), first: r.data[0].embedding,
      usage: r.usage };
  });

  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
