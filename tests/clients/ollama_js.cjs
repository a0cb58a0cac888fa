// The official ollama-js client against diglot (Ollama frontend) in front of the fake OpenAI upstream.
//
// Run by tests/clients.rs as `node ollama_js.cjs http://127.0.0.1:PORT` with NODE_PATH at the npm
// folder that holds ollama. Expected values come from fixtures/openai/**. Prints one line per check
// and "ALL OK" at the end; exits 1 at the first failure.
'use strict';

const fs = require('fs');
const path = require('path');
const { Ollama } = require('ollama');

const FIXTURES = path.resolve(__dirname, '..', '..', 'fixtures', 'openai');

class Failure extends Error {}

function fail(message) {
  throw new Failure(message);
}

function check(condition, message) {
  if (!condition) fail(message);
}

function eq(got, want, what) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) fail(`${what}: got ${g}, want ${w}`);
}

function ok(name) {
  console.log(`ok   ${name}`);
}

/** The JSON chunks of fixtures/openai/chat/MODEL.sse, without the [DONE] marker. */
function sse(model) {
  return fs
    .readFileSync(path.join(FIXTURES, 'chat', `${model}.sse`), 'utf8')
    .split('\n\n')
    .filter((frame) => frame.trim())
    .map((frame) => frame.slice('data: '.length))
    .filter((data) => data !== '[DONE]')
    .map((data) => JSON.parse(data));
}

function content(model) {
  return sse(model)
    .filter((c) => c.choices && c.choices.length)
    .map((c) => c.choices[0].delta.content || '')
    .join('');
}

function usage(model) {
  return sse(model).filter((c) => c.usage).pop().usage;
}

const user = (text) => [{ role: 'user', content: text }];

async function main(host) {
  const ollama = new Ollama({ host });
  const text = content('oai-text');
  const used = usage('oai-text');
  check(text, 'the oai-text fixture has content');

  // 1. Streamed chat: ollama-js throws unless a done chunk arrives.
  const chunks = [];
  for await (const chunk of await ollama.chat({ model: 'oai-text', messages: user('Why is the sky blue?'), stream: true })) {
    chunks.push(chunk);
  }
  check(chunks.length > 1, `more than one chunk, got ${chunks.length}`);
  eq(chunks.map((c) => c.message.content).join(''), text, 'streamed content');
  eq(chunks.map((c) => c.done), [...Array(chunks.length - 1).fill(false), true], 'done flags');
  const last = chunks[chunks.length - 1];
  eq(last.done_reason, 'stop', 'done_reason');
  eq([last.prompt_eval_count, last.eval_count], [used.prompt_tokens, used.completion_tokens], 'token counts');
  check(Number.isInteger(last.eval_duration) && last.eval_duration > 0, `eval_duration: ${last.eval_duration}`);
  ok(`chat stream: ${chunks.length} chunks, joined text, done chunk last`);

  // 2. Whole chat.
  const answer = await ollama.chat({ model: 'oai-text', messages: user('Why is the sky blue?') });
  eq(answer.message.content, text, 'whole chat content');
  eq(answer.message.role, 'assistant', 'role');
  eq(answer.done, true, 'done');
  eq(answer.done_reason, 'stop', 'whole done_reason');
  eq(answer.eval_count, used.completion_tokens, 'whole eval_count');
  ok('chat: whole answer with content and done_reason stop');

  // 3. list.
  const { models } = await ollama.list();
  const names = models.map((m) => m.name);
  check(names.includes('oai-text:latest'), `oai-text:latest in list(): ${JSON.stringify(names)}`);
  const entry = models.find((m) => m.name === 'oai-text:latest');
  eq(entry.model, 'oai-text:latest', 'model field');
  check(!Number.isNaN(new Date(entry.modified_at).getTime()), `modified_at parses: ${entry.modified_at}`);
  ok(`list: ${models.length} models including oai-text:latest`);

  // 4. show.
  const show = await ollama.show({ model: 'oai-text:latest' });
  check((show.capabilities || []).includes('completion'), `capabilities include completion: ${JSON.stringify(show.capabilities)}`);
  const arch = show.model_info && show.model_info['general.architecture'];
  check(typeof arch === 'string' && arch, `general.architecture: ${JSON.stringify(show.model_info)}`);
  const length = show.model_info[`${arch}.context_length`];
  check(Number.isInteger(length) && length > 0, `${arch}.context_length: ${length}`);
  ok(`show: capabilities ${JSON.stringify(show.capabilities)}, ${arch}.context_length ${length}`);

  // 5. Errors.
  let error = null;
  try {
    await ollama.chat({ model: 'ghost', messages: user('x') });
  } catch (e) {
    error = e;
  }
  check(error, "model 'ghost' did not reject");
  eq(error.name, 'ResponseError', 'error class');
  eq(error.status_code, 404, 'status_code');
  check(/not found/.test(error.error), `'not found' in the error: ${error.error}`);
  ok('unknown model rejects with ResponseError 404');

  console.log('ALL OK');
}

if (process.argv.length !== 3) {
  console.log(`FAIL: usage: node ${process.argv[1]} HOST`);
  process.exit(1);
}
main(process.argv[2]).catch((e) => {
  if (!(e instanceof Failure)) console.error(e);
  console.log(`FAIL: ${e instanceof Failure ? e.message : `unexpected exception: ${e}`}`);
  process.exit(1);
});
