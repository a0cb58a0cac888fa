// The official @anthropic-ai/sdk against diglot's Messages frontend in front of the fake Ollama upstream.
//
// Run by tests/clients.rs as `node anthropic_js.cjs http://127.0.0.1:PORT` with NODE_PATH at the npm
// folder that holds @anthropic-ai/sdk. Expected values come from fixtures/ollama/chat/**. Prints one
// line per check and "ALL OK" at the end; exits 1 at the first failure.
'use strict';

const fs = require('fs');
const path = require('path');
const Anthropic = require('@anthropic-ai/sdk');

const FIXTURES = path.resolve(__dirname, '..', '..', 'fixtures', 'ollama', 'chat');

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

function lines(model) {
  return fs
    .readFileSync(path.join(FIXTURES, `${model}.ndjson`), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

function text(model, field = 'content') {
  return lines(model)
    .map((l) => (l.message && l.message[field]) || '')
    .join('');
}

const WEATHER = {
  name: 'get_weather',
  description: 'The weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

async function main(base) {
  const client = new Anthropic({ baseURL: base, apiKey: 'unused-without-tokens', maxRetries: 0 });
  const ask = [{ role: 'user', content: 'Why is the sky blue?' }];

  const message = await client.messages.create({ model: 'chat-text', max_tokens: 256, messages: ask });
  eq(message.content[0].text, text('chat-text'), 'text');
  eq(message.stop_reason, 'end_turn', 'stop_reason');
  eq(message.usage.input_tokens, 31, 'input_tokens');
  ok('messages.create');

  const stream = client.messages.stream({ model: 'chat-text', max_tokens: 256, messages: ask });
  const pieces = [];
  stream.on('text', (t) => pieces.push(t));
  const final = await stream.finalMessage();
  check(pieces.length > 1, `text came in pieces: ${pieces}`);
  eq(pieces.join(''), text('chat-text'), 'streamed text');
  eq(final.usage.output_tokens, 7, 'output_tokens from message_delta');
  ok('messages.stream');

  const tools = await client.messages
    .stream({
      model: 'chat-tools',
      max_tokens: 256,
      tools: [WEATHER],
      tool_choice: { type: 'tool', name: 'get_weather' },
      messages: [{ role: 'user', content: 'Weather in Paris and Tokyo?' }],
    })
    .finalMessage();
  eq(
    tools.content.map((b) => [b.type, b.name, b.input]),
    [
      ['tool_use', 'get_weather', { city: 'Paris' }],
      ['tool_use', 'get_weather', { city: 'Tokyo' }],
    ],
    'tool calls',
  );
  eq(tools.stop_reason, 'tool_use', 'tool stop_reason');
  ok('tool use, streamed');

  const count = await client.messages.countTokens({ model: 'chat-text', messages: ask });
  eq(count.input_tokens, 31, 'count_tokens');
  ok('messages.countTokens');

  try {
    await client.messages.create({ model: 'no-such-model', max_tokens: 5, messages: ask });
    fail('an unknown model was answered');
  } catch (e) {
    if (e instanceof Failure) throw e;
    check(e instanceof Anthropic.NotFoundError, `NotFoundError, got ${e}`);
    eq(e.error.error.type, 'not_found_error', 'error type');
  }
  ok('errors as the SDK error classes');

  console.log('ALL OK');
}

main(process.argv[2]).catch((e) => {
  console.log(`FAIL: ${e instanceof Failure ? e.message : e.stack}`);
  process.exit(1);
});
