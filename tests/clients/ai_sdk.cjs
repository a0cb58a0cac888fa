// The Vercel AI SDK's default OpenAI provider (`ai` + `@ai-sdk/openai`, which calls /v1/responses)
// against diglot in front of the fake Ollama.
//
// Run by tests/clients.rs as `node ai_sdk.cjs http://127.0.0.1:PORT/v1` with NODE_PATH at the npm
// folder that holds them, diglot having a store. Expected values come from fixtures/ollama/**.
// Prints one line per check and "ALL OK" at the end; exits 1 at the first failure.
'use strict';

const { generateText, streamText, tool } = require('ai');
const { createOpenAI } = require('@ai-sdk/openai');
const { z } = require('zod');

const SKY = 'The sky is blue because of Rayleigh scattering.';

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
  const openai = createOpenAI({ baseURL: base, apiKey: 'unused' });

  const first = await generateText({ model: openai('chat-text'), prompt: 'Why is the sky blue?', maxRetries: 0 });
  eq(first.text, SKY, 'text');
  eq(first.finishReason, 'stop', 'finish reason');
  eq([first.usage.inputTokens, first.usage.outputTokens], [31, 7], 'usage');
  ok('generateText');

  // The next turn refers to the stored answer by its item id.
  const next = await generateText({
    model: openai('chat-text'),
    messages: [{ role: 'user', content: 'Why is the sky blue?' }, ...first.response.messages, { role: 'user', content: 'Sure?' }],
    maxRetries: 0,
  });
  eq(next.text, SKY, 'second turn');
  ok('generateText: a conversation');

  const streamed = streamText({ model: openai('chat-text'), prompt: 'Why is the sky blue?', maxRetries: 0 });
  const pieces = [];
  for await (const piece of streamed.textStream) pieces.push(piece);
  check(pieces.length > 1, `pieces ${pieces}`);
  eq(pieces.join(''), SKY, 'streamed text');
  eq(await streamed.finishReason, 'stop', 'streamed finish reason');
  eq((await streamed.usage).outputTokens, 7, 'streamed usage');
  ok('streamText');

  const asked = [];
  const weather = tool({
    description: 'The weather in a city',
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      asked.push(city);
      return `sunny in ${city}`;
    },
  });
  const called = await generateText({ model: openai('chat-tools'), prompt: 'Weather?', tools: { get_weather: weather }, maxRetries: 0 });
  eq(called.toolCalls.map((c) => [c.toolName, c.input]), [['get_weather', { city: 'Paris' }], ['get_weather', { city: 'Tokyo' }]], 'tool calls');
  eq(asked, ['Paris', 'Tokyo'], 'tools run');
  const answered = await generateText({
    model: openai('chat-text'),
    tools: { get_weather: weather },
    messages: [{ role: 'user', content: 'Weather?' }, ...called.response.messages],
    maxRetries: 0,
  });
  eq(answered.text, SKY, 'answer after the tool results');
  ok('generateText: a tool call round trip');

  const streamedCalls = streamText({ model: openai('chat-tools'), prompt: 'Weather?', tools: { get_weather: weather }, maxRetries: 0 });
  eq((await streamedCalls.toolCalls).map((c) => c.input.city), ['Paris', 'Tokyo'], 'streamed tool calls');
  ok('streamText: tool calls');

  console.log('ALL OK');
}

main(process.argv[2]).catch((e) => {
  console.log(`FAIL: ${e instanceof Failure ? e.message : e.stack}`);
  process.exit(1);
});
