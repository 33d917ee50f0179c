#!/usr/bin/env node
/*
 * dashboard.test.js - the dashboard in a real browser (Debian's chromium,
 * driven by playwright-core: no browser is downloaded).
 *
 *   node tests/browser/dashboard.test.js DEMO ARTIFACTS_DIR
 *
 * Starts DEMO (build/coda-demo) on an ephemeral port with a SQLite store in
 * a temp dir and a known admin token, then:
 *  1. adds a report with max_attempts 2 (the demo's report fails its first
 *     two attempts): it ends dead;
 *  2. opens the dashboard link (?token=), checks the token left the address
 *     bar, that every answer carries the CSP, and saves a screenshot of the
 *     overview (ARTIFACTS_DIR/dashboard-overview.png; DOCS_SCREENSHOT=PATH
 *     saves a copy there too);
 *  3. finds the dead task in Tasks > dead, opens it, retries it through the
 *     confirmation dialog, and sees it succeed (attempt 3) with its result;
 *  4. adds a report whose name (so its argument and its error) holds
 *     <img src=x onerror=...> and <script>, opens it and checks both show
 *     as text and nothing ran (window.__xss stays undefined);
 *  5. no console error and no CSP violation on the way.
 * Every wait is for a condition, with a deadline. Exit 0 only if all held.
 */
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const {SLOW, until, request, startDemo, stopDemo, launch} = require('./demo');

const DEMO = process.argv[2];
const ARTIFACTS = process.argv[3];
const TOKEN = 'browser-test-token-' + process.pid + '-0123456789';
const XSS_IMG = '<img src=x onerror=window.__xss=1>';
const XSS_SCRIPT = '<script>window.__xss=1</script>';

let chromium;
try {
  ({chromium} = require('playwright-core'));
} catch (e) {
  console.error('dashboard.test: playwright-core is not installed in tests/browser/node_modules: ' +
    'run scripts/deps test');
  process.exit(1);
}

let passed = 0;
let failed = 0;
function check(ok, what) {
  if (ok) passed++;
  else failed++;
  console.log((ok ? 'ok   ' : 'FAIL ') + what);
  return ok;
}

/* The task as the admin API shows it (bearer: no cookie, no CSRF). */
async function adminTask(port, id) {
  const r = await request(port, 'GET', '/coda/api/tasks/' + id, undefined,
    {Authorization: 'Bearer ' + TOKEN});
  return r.status === 200 ? r.json : null;
}

async function addReport(port, name, maxAttempts) {
  const r = await request(port, 'POST', '/reports', {name, max_attempts: maxAttempts});
  if (r.status !== 202 || !r.json) throw new Error('POST /reports: ' + r.status + ' ' + r.text);
  /* The id as the server wrote it (Location), not a JavaScript number. */
  return String(r.headers.location).replace('/tasks/', '');
}

/* An injected <img src=x> or <script> would be in the view (and its handler,
 * were the CSP to let it run, would set window.__xss). */
async function checkNothingRan(page, where) {
  const r = await page.evaluate(() => ({
    xss: typeof window.__xss,
    nodes: document.querySelectorAll('#view img, #view script').length,
  }));
  check(r.xss === 'undefined' && r.nodes === 0,
    where + ': nothing ran (window.__xss is ' + r.xss + ', ' + r.nodes + ' img/script in the view)');
}

async function main() {
  if (!DEMO || !ARTIFACTS) {
    console.error('usage: dashboard.test.js DEMO ARTIFACTS_DIR');
    process.exit(2);
  }
  fs.mkdirSync(ARTIFACTS, {recursive: true});
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coda-dashboard-'));
  let demo = null;
  let context = null;
  try {
    demo = startDemo(DEMO, tmp, TOKEN);
    const port = await demo.port;
    const base = 'http://127.0.0.1:' + port;

    /* 1. A dead task: two attempts, both fail (backoff ~1 s between). */
    const deadId = await addReport(port, 'browser-test', 2);
    await until('task ' + deadId + ' to be dead', async () => {
      const t = await adminTask(port, deadId);
      return t && t.state === 'dead';
    });
    check(true, 'report ' + deadId + ' (max_attempts 2) is dead');

    /* 2. The browser: a fresh profile in the temp dir, nothing from the net. */
    context = await launch(chromium, path.join(tmp, 'profile'));
    const page = context.pages()[0] || await context.newPage();
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    const foreign = [];
    const noCsp = [];
    page.on('response', (r) => {
      const url = r.url();
      if (!url.startsWith(base)) foreign.push(url);
      else if (url.includes('/coda/') && !url.includes('/coda/api/') && r.status() !== 303 &&
               !/default-src 'self'/.test(r.headers()['content-security-policy'] || ''))
        noCsp.push(url + ' ' + r.status());
    });
    page.on('request', (r) => { if (!r.url().startsWith(base)) foreign.push(r.url()); });

    await page.goto(base + '/coda/?token=' + encodeURIComponent(TOKEN));
    check(page.url() === base + '/coda/', 'the ?token= link logs in and leaves the address bar (' + page.url() + ')');
    const cookies = await context.cookies(base + '/coda/');
    const cookie = cookies.find((c) => c.name === 'coda_admin');
    check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/coda',
          'the cookie is HttpOnly, SameSite=Strict, Path=/coda');
    check(!(await context.cookies(base + '/plain')).some((c) => c.name === 'coda_admin'),
          'the cookie is not sent to the application\'s own routes');

    /* The overview: counts, and the graph once a few seconds of deltas are in
     * (the demo's periodic tick task is processed every second). */
    await until('the overview counts', () => page.locator('#counts [data-count=dead]').textContent()
      .then((t) => Number(t) >= 1), SLOW);
    await until('five seconds of samples in the graph', () =>
      page.locator('#graph').getAttribute('data-samples').then((n) => Number(n) >= 5));
    const shot = path.join(ARTIFACTS, 'dashboard-overview.png');
    await page.screenshot({path: shot, fullPage: true});
    check(fs.statSync(shot).size > 10000, 'overview screenshot saved: ' + shot);
    if (process.env.DOCS_SCREENSHOT) fs.copyFileSync(shot, process.env.DOCS_SCREENSHOT);

    /* 3. Tasks > dead: find it, open it, retry it through the dialog. */
    await page.click('#nav a[data-view=tasks]');
    await page.click('.tabs a[data-tab=dead]');
    const row = page.locator('#tasks tr[data-id="' + deadId + '"]');
    await row.waitFor({timeout: SLOW});
    check(/upstream unavailable \(attempt 2\) for report browser-test/.test(await row.textContent()),
      'the dead task is listed with its last error');
    await row.locator('a').first().click();
    await page.locator('#task-state [data-state=dead]').waitFor({timeout: SLOW});
    check(await page.locator('#task-errors tbody tr').count() === 2, 'its two failed attempts are listed');
    await page.click('[data-action=retry]');
    const dialog = page.locator('dialog#confirm');
    await dialog.waitFor({state: 'visible', timeout: SLOW});
    check(/Retry "build_report" \(task \d+\) now\?/.test(await dialog.textContent()), 'a confirmation asks first');
    await page.click('#confirm-yes');
    await dialog.waitFor({state: 'hidden', timeout: SLOW});
    await page.locator('#task-state [data-state=succeeded]').waitFor({timeout: 60000});
    check(true, 'after the retry the task succeeded (shown on its page)');
    check(/"rows": 42/.test(await page.locator('#task-result').textContent()), 'its result is shown');
    const after = await adminTask(port, deadId);
    check(after && after.state === 'succeeded' && after.attempts === 3,
      'the API agrees: succeeded on attempt ' + (after && after.attempts));

    /* 4. Markup in the arguments and the error is shown as text. */
    const xssName = XSS_IMG + XSS_SCRIPT;
    const xssId = await addReport(port, xssName, 1);
    await until('task ' + xssId + ' to be dead', async () => {
      const t = await adminTask(port, xssId);
      return t && t.state === 'dead';
    });
    await page.evaluate((id) => { location.hash = '#/tasks/' + id; }, xssId);
    await page.locator('#task-error').waitFor({timeout: SLOW});
    const errorText = await page.locator('#task-error').textContent();
    const argsText = await page.locator('#task-args').textContent();
    check(errorText.includes(XSS_IMG) && errorText.includes(XSS_SCRIPT), 'the error shows the markup as text');
    check(argsText.includes(JSON.stringify(xssName).slice(1, -1)), 'the arguments show the markup as text');
    await checkNothingRan(page, 'the task page');
    await page.evaluate(() => { location.hash = '#/tasks?state=dead'; });
    await page.locator('#tasks tr[data-id="' + xssId + '"]').waitFor({timeout: SLOW});
    check((await page.locator('#tasks tr[data-id="' + xssId + '"] td.error').textContent()).includes(XSS_SCRIPT),
      'the list shows it as text too');
    await checkNothingRan(page, 'the list');

    /* The other views: a queue paused and resumed through the dialog, this
     * node, the periodic tick. */
    await page.click('#nav a[data-view=queues]');
    const queue = page.locator('#queues tr[data-queue=default]');
    await queue.locator('[data-action=pause]').click();
    await page.click('#confirm-yes');
    await queue.locator('.badge.paused').waitFor({timeout: SLOW});
    const paused = await request(port, 'GET', '/coda/api/queues', undefined, {Authorization: 'Bearer ' + TOKEN});
    check(paused.json.queues.some((q) => q.name === 'default' && q.paused === true), 'queue default paused from the page');
    await queue.locator('[data-action=resume]').click();
    await page.click('#confirm-yes');
    await queue.locator('[data-action=pause]').waitFor({timeout: SLOW});
    check(true, 'and resumed');
    await page.click('#nav a[data-view=nodes]');
    await page.locator('#nodes tr[data-node]').first().waitFor({timeout: SLOW});
    check(/server/.test(await page.locator('#nodes tbody').textContent()), 'this node is listed as a server');
    await page.click('#nav a[data-view=schedules]');
    await page.locator('#schedules tr[data-schedule=tick]').waitFor({timeout: SLOW});
    check(/1(\.0)? s/.test(await page.locator('#schedules tr[data-schedule=tick]').textContent()),
      'the tick schedule is listed, every 1 s');

    /* 5. The page kept to itself. */
    check(foreign.length === 0, 'no request left the origin' + (foreign.length ? ': ' + foreign.join(', ') : ''));
    check(noCsp.length === 0, 'every dashboard answer carries the CSP' + (noCsp.length ? ': ' + noCsp.join(', ') : ''));
    const csp = problems.filter((p) => /Content Security Policy|Refused to/.test(p));
    check(csp.length === 0, 'no CSP violation' + (csp.length ? ': ' + csp.join('; ') : ''));
    check(problems.length === 0, 'no console error' + (problems.length ? ': ' + problems.join('; ') : ''));
  } catch (e) {
    check(false, e.stack || String(e));
    if (demo) console.log('--- coda-demo log ---\n' + demo.log().slice(-4000));
  } finally {
    if (context) await context.close().catch(() => {});
    const code = await stopDemo(demo);
    check(code === 0, 'coda-demo stopped cleanly (' + code + ')');
    fs.rmSync(tmp, {recursive: true, force: true});
  }
  console.log(passed + ' passed, ' + failed + ' failed');
  process.exit(failed ? 1 : 0);
}

main();
