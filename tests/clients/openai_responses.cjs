// The official openai-node SDK's Responses API against diglot in front of the fake Ollama.
//
// Run by tests/clients.rs as `node openai_responses.cjs http://127.0.0.1:PORT/v1` with NODE_PATH at
// the npm folder that holds openai, diglot having a store. Expected values come from
// fixtures/ollama/**. Prints one line per check and "ALL OK" at the end; exits 1 at the first failure.
'use strict';

const OpenAI = require('openai');

const SKY = 'The sky is blue because of Rayleigh scattering.';
const WEATHER = {
  type: 'function',
  name: 'get_weather',
  description: 'The weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  strict: false,
};

class Failure extends Error {}

function check(condition, message) {
  if (!condition) throw new Failure(message);
}

function eq(got, want, what) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new Failure(`${what}: got ${g}, want ${w}`);
}

function ok(name) {
  console.log(`ok   ${name}`);
}

async function main(base) {
  const client = new OpenAI({ baseURL: base, apiKey: 'unused', maxRetries: 0 });

  const first = await client.responses.create({ model: 'chat-text', input: 'Why is the sky blue?' });
  eq(first.output_text, SKY, 'output_text');
  eq(first.status, 'completed', 'status');
  eq(first.usage.total_tokens, 38, 'total tokens');
  ok('responses.create');

  const next = await client.responses.create({ model: 'chat-text', previous_response_id: first.id, input: 'More?' });
  eq((await client.responses.retrieve(next.id)).id, next.id, 'retrieve');
  ok('previous_response_id and retrieve');

  const called = await client.responses.create({ model: 'chat-tools', input: 'Weather?', tools: [WEATHER] });
  const calls = called.output.filter((item) => item.type === 'function_call');
  eq(calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['get_weather', { city: 'Paris' }], ['get_weather', { city: 'Tokyo' }]], 'calls');
  const answered = await client.responses.create({
    model: 'chat-text',
    tools: [WEATHER],
    input: [
      { role: 'user', content: 'Weather?' },
      ...calls.map(({ call_id, name, arguments: args }) => ({ type: 'function_call', call_id, name, arguments: args })),
      ...calls.map((c) => ({ type: 'function_call_output', call_id: c.call_id, output: 'sunny' })),
    ],
  });
  eq(answered.output_text, SKY, 'answer after the tool results');
  ok('function call round trip');

  const stream = client.responses.stream({ model: 'chat-text', input: 'Why is the sky blue?' });
  const deltas = [];
  const kinds = [];
  for await (const event of stream) {
    kinds.push(event.type);
    if (event.type === 'response.output_text.delta') deltas.push(event.delta);
  }
  const final = await stream.finalResponse();
  check(deltas.length > 1, `deltas ${deltas}`);
  eq(deltas.join(''), SKY, 'streamed text');
  eq(final.output_text, SKY, 'final response');
  eq([kinds[0], kinds[1], kinds[kinds.length - 1]], ['response.created', 'response.in_progress', 'response.completed'], 'event order');
  ok('responses.stream');

  try {
    await client.responses.create({ model: 'chat-text', input: 'x', background: true });
    throw new Failure('background mode was accepted');
  } catch (e) {
    if (e instanceof Failure) throw e;
    check(e instanceof OpenAI.BadRequestError, `error ${e}`);
    eq(e.param, 'background', 'error param');
  }
  ok('errors');

  console.log('ALL OK');
}

main(process.argv[2]).catch((e) => {
  console.log(`FAIL: ${e instanceof Failure ? e.message : e.stack}`);
  process.exit(1);
});
