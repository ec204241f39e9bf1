// Drives the agent's web UI in headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core, by role and accessible name, as a user would. Run by
// tests/tests/ui_browser.rs, which starts the sample service and the agent; every step asserts
// and the script exits non-zero on the first failure.
//
// Environment: UI_URL (with ?token=), SERVICE_PID, CART_FILE (the absolute path of
// shop/cart.py), SCREENSHOTS (a directory), CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const url = env('UI_URL');
const pid = env('SERVICE_PID');
const cartFile = env('CART_FILE');
const shots = env('SCREENSHOTS');
const base = new URL(url).origin;
const token = new URL(url).searchParams.get('token');
mkdirSync(shots, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

async function waitFor(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) { console.log(`ok: ${what}`); return v; }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- HTTP checks (no browser): the token and the loaded-files rule ---------------------------
{
  const wrong = await fetch(`${base}/api/state`, { headers: { 'X-Libdebugger-Token': 'wrong' } });
  check(wrong.status === 401, `a wrong token gets 401 (got ${wrong.status})`);
  const none = await fetch(`${base}/`);
  check(none.status === 401, `the page without a token gets 401 (got ${none.status})`);
  const cookieOnly = await fetch(`${base}/api/breakpoints`, {
    method: 'POST',
    headers: { Cookie: `libdebugger_token=${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ file: cartFile, line: 40 }),
  });
  check(cookieOnly.status === 403, `a change with the token only in a cookie gets 403 (got ${cookieOnly.status})`);
  const notLoaded = await fetch(`${base}/api/processes/${pid}/source?path=${encodeURIComponent('/etc/hostname')}`,
    { headers: { 'X-Libdebugger-Token': token } });
  const body = await notLoaded.json();
  check(notLoaded.status === 404, `a file the process has not loaded gets 404 (got ${notLoaded.status}: ${body.error})`);
}

const profile = mkdtempSync(join(tmpdir(), 'ldbg-ui-chromium-'));
// A fresh profile (playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1600, height: 1000 },
});
let page;
try {
  page = browser.pages()[0] || await browser.newPage();
  const offsite = [];
  page.on('request', (r) => { if (!r.url().startsWith(base)) offsite.push(r.url()); });
  page.on('pageerror', (e) => { console.log(`page error: ${e.message}`); process.exitCode = 1; });
  await page.goto(url);
  check(!page.url().includes('token='), 'the token leaves the address bar');

  // Processes: the service, by its visible text.
  const proc = page.getByRole('button', { name: new RegExp(`pid ${pid} · .*shop\\.service`) });
  await proc.click();
  // Files: search, pick shop/cart.py.
  const search = page.getByRole('searchbox', { name: 'Search files' });
  await search.fill('shop/cart.py');
  await page.getByRole('button', { name: cartFile, exact: true }).click();
  const line40 = page.getByRole('button', { name: 'Line 40', exact: true });
  await line40.waitFor();
  check(await page.getByRole('button', { name: 'Line 30', exact: true }).count() === 0,
    'a line without code (30, blank) is not clickable');
  check((await page.locator('#source .line[data-line="40"] code span').count()) > 0,
    'line 40 is syntax-highlighted');
  await line40.click();

  // Condition checked as typed, with the helper parser's message.
  const cond = page.getByRole('textbox', { name: 'Condition' });
  await cond.fill('subtotal >');
  await waitFor('a bad condition is reported with its column', async () =>
    /condition error at column \d+/.test(await page.locator('#condition-message').textContent()));
  check(await page.getByRole('button', { name: 'Add breakpoint' }).isDisabled(), 'Add is disabled while the condition is bad');
  await cond.fill('subtotal > 50');
  await waitFor('a good condition is accepted', async () =>
    (await page.locator('#condition-message').textContent()) === 'Condition OK');
  check(await page.getByRole('radio', { name: 'Breakpoint' }).isChecked(), 'a click offers a breakpoint first');
  check(await page.getByRole('radio', { name: 'Logpoint' }).count() === 1, 'a click offers a logpoint too');
  await page.getByRole('button', { name: 'Add breakpoint' }).click();

  // Status: the breakpoint becomes armed.
  const bpId = `${cartFile}:40`;
  const row = page.locator(`#breakpoints tr[data-breakpoint="${bpId}"]`);
  await waitFor('the breakpoint is armed', async () => (await row.count()) > 0
    && /armed/.test(await row.locator('td').nth(2).textContent()));

  // Hits: with subtotal in the locals tree, typed; the redacted token marked.
  const hits = page.locator('#hits > li.hit');
  await waitFor('hits arrive', async () => (await hits.count()) >= 2);
  // New hits arrive on top: hold on to one by its number.
  const seq = await hits.first().getAttribute('data-seq');
  const first = page.locator(`#hits > li.hit[data-seq="${seq}"]`);
  const subtotal = first.locator('ul.tree > li', { hasText: /^subtotal (int|float) = / });
  check(await subtotal.count() === 1, 'subtotal is in the locals tree, with its type');
  const value = Number((await subtotal.locator('.val').textContent()));
  check(value > 50, `the condition holds in the hit (subtotal = ${value})`);
  check(await first.locator('.redacted', { hasText: '[redacted]' }).count() > 0, 'the redacted api_token is marked as such');
  await first.locator('ul.tree > li', { hasText: /^cart / }).locator('summary').first().click();
  await first.getByText('Stack (', { exact: false }).click();
  await waitFor('the stack shows the source line of the breakpoint frame', async () =>
    (await first.locator('.stack li', { hasText: 'cart.py:40 in cart_total' }).locator('pre').textContent())
      .includes('total = round(subtotal'));
  // Every frame asks for its file at once: each question gets its answer.
  await waitFor('the stack shows the source line of the caller frame too', async () =>
    (await first.locator('.stack li', { hasText: 'service.py:25 in handle_checkout' }).locator('pre').textContent())
      .includes('total = cart_total(cart)'));
  await page.screenshot({ path: join(shots, 'ui-hits.png') });

  // Pause: hits wait in the buffer, the list stays; resume shows them.
  await page.getByRole('button', { name: 'Pause' }).click();
  const shownAtPause = await hits.count();
  await waitFor('hits wait while paused', async () =>
    /paused: [1-9]\d* waiting/.test(await page.locator('#hit-counts').textContent()));
  check(await hits.count() === shownAtPause, 'no hit is shown while paused');
  const waiting = Number((await page.locator('#hit-counts').textContent()).match(/paused: (\d+)/)[1]);
  await page.screenshot({ path: join(shots, 'ui-paused.png') });
  await page.getByRole('button', { name: 'Resume' }).click();
  check(await hits.count() >= Math.min(200, shownAtPause + waiting), `resume shows the ${waiting} waiting hits`);

  // A logpoint on the same line: a message with {expr} parts and its own condition.
  await line40.click();
  await page.getByRole('radio', { name: 'Logpoint' }).check();
  const message = page.getByRole('textbox', { name: 'Message' });
  check(await message.isVisible(), 'a logpoint has a message field');
  await message.fill('customer {cart.customer.customer_id}: subtotal={subtotal} items={len(cart.items)}');
  await page.getByRole('textbox', { name: 'Condition' }).fill('subtotal >');
  await waitFor('the logpoint condition is checked as typed', async () =>
    /condition error at column \d+/.test(await page.locator('#condition-message').textContent()));
  check(await page.getByRole('button', { name: 'Add logpoint' }).isDisabled(), 'Add logpoint is disabled while its condition is bad');
  await page.getByRole('textbox', { name: 'Condition' }).fill('subtotal > 0');
  await waitFor('the logpoint condition is accepted', async () =>
    (await page.locator('#condition-message').textContent()) === 'Condition OK');
  await page.getByRole('button', { name: 'Add logpoint' }).click();
  const logId = `${cartFile}:40:log`;
  const logRow = page.locator(`#breakpoints tr[data-breakpoint="${logId}"]`);
  await waitFor('the logpoint is armed, shown as a logpoint', async () => (await logRow.count()) > 0
    && /armed/.test(await logRow.locator('td').nth(2).textContent())
    && /logpoint/.test(await logRow.locator('td').nth(1).textContent()));
  check(await page.locator('#source .line[data-line="40"].has-bp.has-log').count() === 1,
    'line 40 is marked with both probes');
  const logs = page.locator(`#hits > li.hit.log[data-breakpoint="${logId}"]`);
  await waitFor('logpoint messages arrive', async () => (await logs.count()) >= 2);
  const text = await logs.first().locator('.message').textContent();
  check(/^customer \d+: subtotal=\d+(\.\d+)? items=\d+$/.test(text), `the message is rendered (${text})`);
  check(Number(text.match(/subtotal=([\d.]+)/)[1]) > 0, 'the logpoint condition holds');
  await waitFor('logpoint hits count in the table', async () =>
    Number(await logRow.locator('td').nth(4).textContent()) >= 2);
  await page.screenshot({ path: join(shots, 'ui-logpoint.png') });

  // Remove both: they go, and so do the hits.
  await page.getByRole('button', { name: `Remove breakpoint ${bpId}`, exact: true }).click();
  await page.getByRole('button', { name: `Remove logpoint ${logId}`, exact: true }).click();
  await waitFor('both are gone from the table', async () => (await row.count()) === 0 && (await logRow.count()) === 0);
  // Hits already on their way may still land; then the stream must stay quiet.
  let last = await hits.count();
  let quietSince = Date.now();
  await waitFor('no hit arrives for 3 s after the removal', async () => {
    const n = await hits.count();
    if (n !== last) { last = n; quietSince = Date.now(); }
    return Date.now() - quietSince >= 3000;
  }, 20000);
  await page.screenshot({ path: join(shots, 'ui-removed.png') });
  check(offsite.length === 0, `the page loads nothing from elsewhere (${offsite.join(', ')})`);
} catch (e) {
  if (page) await page.screenshot({ path: join(shots, 'ui-failure.png') }).catch(() => {});
  throw e;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log('browser test passed');
