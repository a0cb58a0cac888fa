// The admin web UI in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), as an operator and as a token holder use it:
// sign in; create a token and call /v1 with it; find the request in Logs (the live tail
// too) and in the Dashboard's totals; add a channel pointing at a second mock upstream and
// see Test report it healthy; stream an answer in the Playground; revoke the token and see
// its next call refused; sign in with a user token and see only its own page and the
// Playground. Every page is checked in the light and dark themes and at 375 px: no console
// error, no serious or critical axe-core violation, no sideways scrolling of the page;
// a screenshot of each goes to SHOTS.
// A second diglot without an admin password shows the page that says how to set one.
// Usage: node admin.cjs DIGLOT_URL ADMIN_PASSWORD SECOND_UPSTREAM_URL SHOTS_DIR NO_PASSWORD_URL
'use strict';
const assert = require('node:assert/strict');
const path = require('node:path');
const { chromium } = require('playwright-core');

const [diglot, password, secondUpstream, shots, noPassword] = process.argv.slice(2);
const AXE = require.resolve('axe-core/axe.min.js');
const ADMIN_PAGES = ['', 'tokens', 'channels', 'models', 'logs', 'settings', 'audit', 'playground'];

// Console errors: every one fails the test, but for the browser's own network line about
// an answer the page expects and handles (the sign-in probe's 401 while signed out, the
// 401 of a wrong password the test types on purpose).
const consoleErrors = [];
let tolerated = [];
function watch(page, who) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const url = msg.location()?.url || '';
    const text = msg.text();
    const expected = tolerated.some((t) => text.startsWith('Failed to load resource') && text.includes(`status of ${t.status}`) && url.endsWith(t.path));
    if (!expected) consoleErrors.push(`${who}: ${text} (${url})`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`${who}: uncaught ${e.message}`));
}
async function expecting(allowed, fn) {
  tolerated = allowed;
  try {
    return await fn();
  } finally {
    tolerated = [];
  }
}
function noConsoleErrors(step) {
  assert.deepEqual(consoleErrors, [], `console errors ${step}`);
}

async function axe(page, label) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `axe-core: serious or critical violations on ${label}: ${JSON.stringify(bad, null, 2)}`);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

/** Opens an admin page by its link in the navigation (a client-side route). */
async function open(page, slug) {
  await page.goto(`${diglot}/admin/${slug}`);
  await page.waitForSelector('main#main h1');
  await page.waitForLoadState('networkidle');
}

async function v1Chat(token, model, extra = {}) {
  const res = await fetch(`${diglot}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Why is the sky blue?' }], ...extra }),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** Clicks `button` until `check` passes (records are written in batches), for up to 20 s. */
async function until(page, check, refresh, what) {
  const deadline = Date.now() + 20000;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await refresh();
    await page.waitForTimeout(400);
  }
}

async function createToken(page, name, fill = async () => {}) {
  await open(page, 'tokens');
  await page.getByRole('button', { name: 'New token' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel('Name').fill(name);
  await fill(dialog);
  await dialog.getByRole('button', { name: 'Create token' }).click();
  const secret = (await page.getByTestId('secret').textContent()).trim();
  assert.match(secret, /^dg-/, 'the secret is shown once');
  return secret;
}

(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    // axe-core is injected as a script tag, which the UI's CSP would refuse.
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, bypassCSP: true, colorScheme: 'light' });
    const page = await context.newPage();
    watch(page, 'admin');

    // Signed out: the sign-in page (its session probe answers 401, as expected).
    await expecting([{ status: 401, path: '/admin/api/session' }], async () => {
      await page.goto(`${diglot}/admin/`);
      await page.getByLabel('Admin password').waitFor();
    });
    await axe(page, 'sign-in');
    await shot(page, 'signin-light');
    await expecting([{ status: 401, path: '/admin/api/login' }], async () => {
      await page.getByLabel('Admin password').fill('not the password');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('alert').filter({ hasText: 'wrong password' }).waitFor();
    });
    await page.getByLabel('Admin password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    noConsoleErrors('signing in');
    console.log('signed in with the password');

    // A token, made in the UI, used on /v1 at once.
    const secret = await createToken(page, 'ci-ui', async (dialog) => {
      await dialog.getByLabel('Monthly quota (tokens)').fill('100000');
    });
    const lines = await page.locator('pre.code').textContent();
    assert.match(lines, new RegExp(`OPENAI_API_KEY=${secret}`));
    assert.match(lines, new RegExp(`OPENAI_BASE_URL=${diglot}/v1`));
    await axe(page, 'the new token dialog');
    await shot(page, 'token-created');
    await page.getByRole('button', { name: 'Done' }).click();
    await page.locator('tr[data-token="ci-ui"]').waitFor();

    // The live tail is on before the call, so the call's access line shows up there.
    await open(page, 'logs');
    await page.getByLabel('Live tail').check();
    await page.getByText('live', { exact: true }).waitFor();
    const models = await (await fetch(`${diglot}/v1/models`, { headers: { authorization: `Bearer ${secret}` } })).json();
    const model = models.data[0].id;
    const called = await v1Chat(secret, model);
    assert.equal(called.status, 200, JSON.stringify(called));
    const tokensUsed = called.body.usage.prompt_tokens + called.body.usage.completion_tokens;
    console.log(`a /v1 call with the new token: 200, model ${model}, ${tokensUsed} tokens`);
    await page.locator('.tail-lines li').filter({ hasText: '/v1/chat/completions' }).first().waitFor();
    const row = page.locator('tr[data-log]').filter({ hasText: 'ci-ui' }).first();
    await until(page, async () => (await row.count()) > 0, () => page.getByRole('button', { name: 'Refresh' }).click(), 'the request in Logs');
    await row.getByRole('button', { name: /Details/ }).click();
    const detail = page.getByTestId('log-detail');
    await detail.waitFor();
    const detailText = await detail.textContent();
    for (const expected of ['ci-ui', model, 'Attempts', 'Time to first token', 'Trace id', String(called.body.usage.completion_tokens)]) {
      assert.ok(detailText.includes(expected), `the detail panel shows ${expected}: ${detailText}`);
    }
    await axe(page, 'a request detail');
    await shot(page, 'log-detail');
    await page.keyboard.press('Escape');
    const csv = await page.getByRole('link', { name: 'Export CSV' }).getAttribute('href');
    const exported = await page.evaluate(async (href) => (await fetch(href)).text(), csv);
    assert.match(exported, /^id,time,token_prefix/);
    assert.ok(exported.includes('ci-ui'), exported);
    await page.getByLabel('Live tail').uncheck();
    console.log('the request is in Logs (live tail, table, detail, CSV)');

    // The Dashboard's totals count it.
    await open(page, '');
    const total = page.getByTestId('total-requests');
    await until(page, async () => Number((await total.textContent()).replace(/\D/g, '')) >= 1, () => page.getByRole('button', { name: 'Refresh' }).click(), 'the Dashboard total');
    await page.locator('.chart canvas').first().waitFor();
    assert.ok((await page.locator('.chart').count()) >= 5, 'the dashboard has its charts');
    console.log(`the Dashboard counts ${await total.textContent()} request(s)`);

    // A channel to the second upstream, tested from the UI.
    await open(page, 'channels');
    await page.getByRole('button', { name: 'New channel' }).click();
    let dialog = page.getByRole('dialog');
    await dialog.getByLabel('Name').fill('second');
    await dialog.getByLabel('Kind').selectOption('ollama');
    await dialog.getByLabel('URL').fill(secondUpstream);
    await dialog.getByLabel('Keys', { exact: true }).fill('# a comment line\nsk-test-key-0123456789abcdefghij');
    await axe(page, 'the channel form');
    await dialog.getByRole('button', { name: 'Create channel' }).click();
    const channelRow = page.locator('tr[data-channel="second"]');
    await channelRow.waitFor();
    assert.ok((await channelRow.textContent()).includes('sk-'), 'the key shows as a prefix');
    assert.ok(!(await channelRow.textContent()).includes('sk-test-key-0123456789abcdefghij'), 'never the whole key');
    await channelRow.getByRole('button', { name: 'Test' }).click();
    dialog = page.getByRole('dialog');
    await dialog.getByLabel('Also send a short chat').check();
    await dialog.getByRole('button', { name: 'Run test' }).click();
    const report = page.getByTestId('test-report');
    await report.waitFor();
    const reportText = await report.textContent();
    assert.ok(reportText.includes('healthy') && reportText.includes('Everything asked for worked'), reportText);
    assert.match(reportText, /\d+ models/);
    await axe(page, 'the channel test report');
    await shot(page, 'channel-test');
    await page.keyboard.press('Escape');
    console.log('a channel made in the UI: Test reports it healthy');

    // The Playground streams an answer through /v1 with the token.
    await open(page, 'playground');
    // An admin may make a short-lived user token for it (the session does not reach /v1).
    await page.getByRole('button', { name: 'Make a playground token' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Make token' }).click();
    await page.waitForFunction(() => document.querySelector('#main input[type=password]')?.value.startsWith('dg-'));
    await page.getByLabel('API token for /v1').fill(secret);
    await page.getByLabel('Model', { exact: true }).selectOption(model);
    await page.getByLabel('System prompt').fill('Answer briefly.');
    await page.getByLabel('Temperature').fill('0.3');
    await page.getByLabel('Max tokens').fill('64');
    await page.getByLabel('Message').fill('Say hello.');
    await page.getByRole('button', { name: 'Send' }).click();
    // While it streams, the answer grows piece by piece.
    const answer = page.getByTestId('answer').last();
    await page.getByRole('button', { name: 'Stop' }).waitFor();
    const early = await answer.locator('.text').textContent();
    await page.getByRole('button', { name: 'Send' }).waitFor({ timeout: 20000 });
    const finalText = await answer.locator('.text').textContent();
    assert.ok(finalText.length > early.length && /hello/.test(finalText), `streamed: "${early}" then "${finalText}"`);
    const stats = await answer.getByTestId('answer-stats').textContent();
    assert.match(stats, /TTFT \d+ ms/);
    assert.match(stats, /[\d.]+ tokens\/s/);
    assert.match(stats, /\d+ in \/ \d+ out/);
    const curl = await page.locator('details.curl code').textContent();
    assert.ok(curl.includes('/v1/chat/completions') && curl.includes('"max_tokens": 64') && !curl.includes(secret), curl);
    await shot(page, 'playground-answer');
    console.log(`the Playground streamed an answer: ${stats}`);

    // Edits through every editor, each seen in its page and in the audit log.
    await open(page, 'channels');
    await page.locator('tr[data-channel="second"]').getByRole('button', { name: 'Edit' }).click();
    dialog = page.getByRole('dialog');
    await dialog.getByLabel('Weight').fill('3');
    await dialog.getByRole('button', { name: 'Save' }).click();
    await page.locator('tr[data-channel="second"]').filter({ hasText: 'weight 3' }).waitFor();
    assert.ok((await page.locator('tr[data-channel="second"]').textContent()).includes('sk-test'), 'the keys stay');
    // Disabled, the channel says so (and the API agrees); enabled, it is healthy again.
    const second = page.locator('tr[data-channel="second"]');
    await second.getByRole('button', { name: 'Disable' }).click();
    await second.filter({ hasText: 'disabled' }).getByRole('button', { name: 'Enable' }).waitFor();
    const view = await page.evaluate(async () => (await fetch('/admin/api/channels', { credentials: 'same-origin' })).json());
    assert.equal(view.data.find((c) => c.name === 'second').enabled, false, 'the API shows it disabled');
    await second.getByRole('button', { name: 'Enable' }).click();
    await second.getByRole('button', { name: 'Disable' }).waitFor();
    await open(page, 'tokens');
    await page.locator('tr[data-token="ci-ui"]').getByRole('button', { name: 'Edit' }).click();
    dialog = page.getByRole('dialog');
    await dialog.getByLabel('Requests a minute').fill('600');
    await dialog.getByRole('button', { name: 'Save' }).click();
    await page.locator('tr[data-token="ci-ui"]').filter({ hasText: 'rpm: 600' }).waitFor();
    await open(page, 'models');
    await page.getByRole('row').filter({ hasText: model }).first().getByRole('button', { name: 'Edit' }).click();
    dialog = page.getByRole('dialog');
    await dialog.getByLabel('Display name').fill('Llama UI');
    await dialog.getByLabel('Defaults (JSON)').fill('{"temperature": 0.5}');
    await dialog.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('row').filter({ hasText: 'Llama UI' }).filter({ hasText: 'temperature=0.5' }).first().waitFor();
    await open(page, 'settings');
    await page.getByLabel('limits.rpm').fill('5000');
    await page.getByRole('button', { name: /Save 1 change/ }).click();
    await page.getByRole('status').filter({ hasText: 'Saved and applied' }).waitFor();
    const rpmRow = page.locator('tr[data-setting="limits.rpm"]');
    await rpmRow.filter({ hasText: 'store' }).waitFor();
    await rpmRow.getByRole('button', { name: 'Reset' }).click();
    await rpmRow.filter({ hasText: 'default' }).waitFor();
    await open(page, 'audit');
    const audit = await page.locator('main table').textContent();
    for (const action of ['token.create', 'token.update', 'channel.create', 'channel.update', 'model.put', 'settings.update']) {
      assert.ok(audit.includes(action), `the audit log has ${action}: ${audit}`);
    }
    assert.ok(!audit.includes(secret), 'no secret in the audit log');
    console.log('edits of a channel, a token, a model and a setting apply and are audited');

    // A user token for the token holder's view.
    const userSecret = await createToken(page, 'ci-user', async (d) => {
      await d.getByLabel('Monthly quota (tokens)').fill('5000');
    });
    await page.getByRole('button', { name: 'Done' }).click();
    assert.equal((await v1Chat(userSecret, model)).status, 200);

    // Every admin page: light, dark (the system's), dark chosen over a light system, 375 px.
    for (const [theme, scheme, choice] of [
      ['light', 'light', 'system'],
      ['dark', 'dark', 'system'],
    ]) {
      await page.emulateMedia({ colorScheme: scheme });
      for (const slug of ADMIN_PAGES) {
        await open(page, slug);
        await page.getByLabel('Theme').selectOption(choice);
        await page.waitForFunction((dark) => getComputedStyle(document.body).backgroundColor === (dark ? 'rgb(15, 18, 22)' : 'rgb(246, 247, 249)'), theme === 'dark');
        const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
        const dark = bg === 'rgb(15, 18, 22)';
        assert.equal(dark, theme === 'dark', `${slug || 'dashboard'} in the ${theme} theme has background ${bg}`);
        await axe(page, `${slug || 'dashboard'} (${theme})`);
        await shot(page, `${slug || 'dashboard'}-${theme}`);
      }
    }
    // The switch: light chosen while the system is dark.
    await page.getByLabel('Theme').selectOption('light');
    await page.waitForFunction(() => getComputedStyle(document.body).backgroundColor === 'rgb(246, 247, 249)');
    await page.reload();
    await page.getByRole('heading', { name: 'Playground' }).waitFor();
    assert.equal(await page.evaluate(() => getComputedStyle(document.body).backgroundColor), 'rgb(246, 247, 249)', 'the choice is kept');
    await page.getByLabel('Theme').selectOption('system');
    await page.emulateMedia({ colorScheme: 'light' });
    console.log('every admin page in both themes: no serious accessibility violation');

    await page.setViewportSize({ width: 375, height: 812 });
    for (const slug of ADMIN_PAGES) {
      await open(page, slug);
      const wide = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(wide <= 375, `${slug || 'dashboard'} at 375 px scrolls sideways: ${wide} px wide`);
      await axe(page, `${slug || 'dashboard'} (375 px)`);
      await shot(page, `${slug || 'dashboard'}-375`);
    }
    // The menu opens from the keyboard at phone width.
    await page.getByRole('button', { name: 'Menu' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Tokens' }).click();
    await page.getByRole('heading', { name: 'Tokens' }).waitFor();
    await page.setViewportSize({ width: 1280, height: 900 });
    console.log('every admin page at 375 px: no sideways scrolling');

    // Keyboard: the first Tab reaches the skip link, which lands on the page's content.
    await open(page, 'tokens');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');

    // Revoke, with confirmation: the next call with it is refused.
    const tokenRow = page.locator('tr[data-token="ci-ui"]');
    await tokenRow.getByRole('button', { name: 'Revoke' }).click();
    dialog = page.getByRole('dialog');
    await dialog.getByText('cannot be undone').waitFor();
    await shot(page, 'token-revoke-confirm');
    await dialog.getByRole('button', { name: 'Revoke token' }).click();
    await tokenRow.waitFor({ state: 'detached' });
    const refused = await v1Chat(secret, model);
    assert.equal(refused.status, 401, `a revoked token's next call: ${JSON.stringify(refused)}`);
    console.log('revoked in the UI: its next call gets 401');
    noConsoleErrors('on the admin pages');

    // A token holder signs in with a user token: its own page and the Playground only.
    for (const [theme, width] of [
      ['light', 1280],
      ['dark', 375],
    ]) {
      const userContext = await browser.newContext({ viewport: { width, height: 900 }, bypassCSP: true, colorScheme: theme });
      const user = await userContext.newPage();
      watch(user, `user (${theme}, ${width} px)`);
      await expecting([{ status: 401, path: '/admin/api/session' }], async () => {
        await user.goto(`${diglot}/admin/`);
        await user.getByRole('button', { name: 'API token' }).click();
      });
      await user.getByLabel('API token').fill(userSecret);
      await user.getByRole('button', { name: 'Sign in' }).click();
      await user.getByRole('heading', { name: 'My usage' }).waitFor();
      await user.waitForLoadState('networkidle');
      const nav = await user.locator('nav#nav').textContent();
      assert.ok(!/Tokens|Channels|Settings|Audit|Logs/.test(nav), `a user sees none of the admin pages: ${nav}`);
      const mine = await user.locator('main').textContent();
      assert.ok(mine.includes('ci-user') && mine.includes('5,000'), 'its own name and quota');
      assert.ok(!mine.includes('ci-ui'), 'nothing of another token');
      await user.locator('tr[data-log]').first().waitFor();
      assert.ok((await user.getByRole('progressbar', { name: 'My quota used' }).count()) === 1);
      await axe(user, `the user page (${theme})`);
      await shot(user, `user-${theme}-${width}`);
      assert.ok((await user.evaluate(() => document.documentElement.scrollWidth)) <= width);
      await user.goto(`${diglot}/admin/playground`);
      await user.getByRole('heading', { name: 'Playground' }).waitFor();
      await user.waitForLoadState('networkidle');
      assert.equal(await user.getByLabel('API token for /v1').inputValue(), userSecret, 'the token signed in with');
      assert.equal(await user.getByRole('button', { name: 'Make a playground token' }).count(), 0);
      await user.getByLabel('Message').fill('hi');
      await user.getByRole('button', { name: 'Send' }).click();
      await user.getByTestId('answer-stats').waitFor();
      await user.getByRole('button', { name: 'Send' }).waitFor();
      await axe(user, `the user playground (${theme})`);
      await shot(user, `user-playground-${theme}-${width}`);
      // An admin route answers 403 to this session.
      const status = await expecting([{ status: 403, path: '/admin/api/tokens' }], () =>
        user.evaluate(async () => (await fetch('/admin/api/tokens')).status),
      );
      assert.equal(status, 403);
      await userContext.close();
    }
    console.log('a user token sees its own usage and the Playground only');
    noConsoleErrors('as a token holder');

    // No password set: the page says how to set one (the session probe's 503 is expected).
    const fresh = await browser.newContext({ viewport: { width: 375, height: 900 }, bypassCSP: true });
    const unset = await fresh.newPage();
    watch(unset, 'no password');
    await expecting([{ status: 503, path: '/admin/api/session' }], async () => {
      await unset.goto(`${noPassword}/admin/`);
      await unset.getByRole('heading', { name: 'No admin password is set' }).waitFor();
    });
    const howTo = await unset.locator('main').textContent();
    for (const hint of ['diglot admin set-password', 'DIGLOT_ADMIN__PASSWORD']) assert.ok(howTo.includes(hint), howTo);
    assert.equal(await unset.getByLabel('API token').count(), 1, 'a token may still sign in');
    await axe(unset, 'the no-password page');
    await shot(unset, 'no-password-375');
    await fresh.close();
    noConsoleErrors('on the no-password page');
    console.log('without a password: the page says how to set one');
    console.log('no console errors');
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
