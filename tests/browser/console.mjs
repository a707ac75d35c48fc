// console.mjs - the admin console in Debian's chromium (headless), as a team lead uses
// it: sign in, see the keys table and the chart with the usage the test made, create a
// key, use it through the gateway, lower its budget, revoke it (confirming), and see the
// gateway refuse it. Run by test_console.py, which starts the gateway and the stub:
//   node console.mjs   with env ADMIN_URL, GW_URL, ADMIN_KEY, SCREENSHOT, CHROMIUM
// Prints one JSON line of what it saw; exits non-zero on any failed expectation.
import { chromium } from 'playwright-core';

const env = (n) => { if (!process.env[n]) throw new Error('missing env ' + n); return process.env[n]; };
const ADMIN_URL = env('ADMIN_URL'), GW_URL = env('GW_URL'), ADMIN_KEY = env('ADMIN_KEY');
const seen = {};

function expect(cond, what) {
  if (!cond) throw new Error('expected: ' + what + '\nseen so far: ' + JSON.stringify(seen));
}

async function gw(secret, method, path, body) {
  const r = await fetch(GW_URL + path, {
    method, body: body ? JSON.stringify(body) : undefined,
    headers: { Authorization: 'Bearer ' + secret, 'Content-Type': 'application/json' },
  });
  return r.status;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1400 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));

  const resp = await page.goto(ADMIN_URL + '/admin/');
  const csp = resp.headers()['content-security-policy'] || '';
  seen.csp = csp;
  expect(/script-src 'self'/.test(csp) && !/unsafe-inline/.test(csp), 'a strict CSP');

  // a wrong key is told so, and the page stays on the sign-in form
  await page.fill('#signin-key', 'sk-vgw-wrong');
  await page.click('#signin-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('signin-error').textContent !== '');
  seen.wrong_key = await page.textContent('#signin-error');
  expect(seen.wrong_key === 'Unknown key.', 'a wrong key told so');

  await page.fill('#signin-key', ADMIN_KEY);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#keys-table tbody tr[data-key="alice"]');
  seen.alice_bar = await page.textContent('#keys-table tr[data-key="alice"] .bar-text');
  expect(seen.alice_bar.startsWith('12 /'), 'alice spent 12 s today, in her bar');
  // the key's name is text, never markup (a model name in the chart legend too)
  seen.stored = await page.evaluate(() => Object.keys(sessionStorage));
  expect(seen.stored.includes('gw-admin-key'), 'the admin key in sessionStorage');
  const chart = await page.waitForSelector('#chart .uplot canvas');
  seen.legend = await page.$$eval('#chart .u-legend .u-label', (els) => els.map((e) => e.textContent));
  expect(seen.legend.includes('alice') && seen.legend.includes('bob'), 'alice and bob in the chart');
  seen.models = await page.$$eval('#models-table tbody tr td:first-child', (els) => els.map((e) => e.textContent));
  expect(seen.models.includes('<img src=x onerror=alert(1)>'), 'a hostile model name shown as text');
  expect(await page.$('#models-table img') === null, 'no element made from a model name');
  seen.jobs = await page.$$eval('#jobs-table tbody tr', (els) => els.length);
  expect(seen.jobs >= 3, 'recent jobs listed');
  expect(chart !== null, 'a chart');

  // create a key: the secret once, with a copy button
  await page.fill('#create-form input[name=name]', 'newbie');
  await page.fill('#create-form input[name=daily_seconds]', '12');
  await page.click('#create-form button[type=submit]');
  await page.waitForSelector('#secret-box:not([hidden])');
  const secret = (await page.textContent('#secret')).trim();
  expect(/^sk-vgw-[A-Za-z0-9_-]{32}$/.test(secret), 'a secret shown');
  await page.click('#copy');
  await page.waitForFunction(() => document.getElementById('copied').textContent !== '');
  seen.copied = await page.textContent('#copied');
  await page.waitForSelector('#keys-table tbody tr[data-key="newbie"]');

  // the new member uses it through the gateway; their usage shows after a refresh
  const create = { model: 'veo3', prompt: 'p', seconds: '4', size: '16x9' };
  seen.create1 = await gw(secret, 'POST', '/v1/videos', create);
  seen.create2 = await gw(secret, 'POST', '/v1/videos', create);
  expect(seen.create1 === 200 && seen.create2 === 200, 'the new key works');
  await page.reload();
  await page.waitForSelector('#keys-table tbody tr[data-key="newbie"]');
  seen.newbie_bar = await page.textContent('#keys-table tr[data-key="newbie"] .bar-text');
  expect(seen.newbie_bar === '8 / 12', 'newbie 8 of 12 s');
  await page.waitForFunction(() => [...document.querySelectorAll('#chart .u-legend .u-label')].some((e) => e.textContent === 'newbie'));

  // lower the budget: the next create is refused
  await page.click('#keys-table tr[data-key="newbie"] button:text("Edit")');
  await page.fill('#edit-form input[name=daily_seconds]', '8');
  await page.click('#edit-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#keys-table tr[data-key="newbie"] .bar-text').textContent === '8 / 8');
  seen.create_over = await gw(secret, 'POST', '/v1/videos', create);
  expect(seen.create_over === 429, 'over the lowered budget: 429');

  await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });

  // revoke with a confirm: the gateway refuses the key at once
  page.once('dialog', (d) => { seen.confirm = d.message(); d.accept(); });
  await page.click('#keys-table tr[data-key="newbie"] button.danger');
  await page.waitForSelector('#keys-table tbody tr[data-key="newbie"]', { state: 'detached' });
  seen.after_revoke = await gw(secret, 'GET', '/v1/videos');
  expect(seen.after_revoke === 401, 'revoked: 401');
  expect(seen.confirm && seen.confirm.includes('newbie'), 'a confirm before revoking');

  // sign out: the key leaves the tab
  await page.click('#signout');
  seen.after_signout = await page.evaluate(() => Object.keys(sessionStorage));
  expect(!seen.after_signout.includes('gw-admin-key'), 'signed out');
  expect(!requests.some((u) => u.includes(ADMIN_KEY)), 'the admin key in no URL');
  expect(requests.every((u) => u.startsWith(ADMIN_URL)), 'nothing fetched from elsewhere');
  // the wrong key's 401s are the browser's "failed to load" lines: expected
  seen.problems = problems.filter((p) => !p.includes('status of 401'));
  expect(seen.problems.length === 0, 'no page errors, no CSP violations');
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
