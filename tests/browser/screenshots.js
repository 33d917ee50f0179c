#!/usr/bin/env node
/*
 * screenshots.js - the pictures of docs/dashboard.md, taken from a live
 * coda-demo under a little load (not a test: run it by hand when the
 * dashboard changes).
 *
 *   node tests/browser/screenshots.js build/coda-demo docs/img [SECONDS]
 *
 * For SECONDS (default 40) it adds reports, some that fail their first
 * attempts and some that end dead, so the graph has processed and failed
 * lines; then saves dashboard-overview.png, dashboard-queues.png,
 * dashboard-tasks.png (the dead ones) and dashboard-task.png (one task).
 */
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const {chromium} = require('playwright-core');
const {until, request, startDemo, stopDemo, launch} = require('./demo');

const [demoPath, out, secondsArg] = process.argv.slice(2);
const TOKEN = 'docs-screenshots-token-0123456789';

async function main() {
  if (!demoPath || !out) throw new Error('usage: screenshots.js DEMO OUT_DIR [SECONDS]');
  const seconds = Number(secondsArg || 40);
  fs.mkdirSync(out, {recursive: true});
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coda-shots-'));
  const demo = startDemo(demoPath, tmp, TOKEN);
  let context;
  try {
    const port = await demo.port;
    const base = 'http://127.0.0.1:' + port;
    context = await launch(chromium, path.join(tmp, 'profile'), {width: 1280, height: 800});
    const page = context.pages()[0] || await context.newPage();
    await page.goto(base + '/coda/?token=' + TOKEN);
    /* The load: a few reports a second, in waves; one in five ends dead. */
    const end = Date.now() + seconds * 1000;
    let n = 0;
    let lastId = null;
    while (Date.now() < end) {
      const burst = 2 + Math.round(3 * (1 + Math.sin(n / 4)));
      for (let i = 0; i < burst; i++, n++) {
        const r = await request(port, 'POST', '/reports',
          {name: 'monthly-' + n, max_attempts: n % 5 === 0 ? 2 : 5});
        if (n % 5 === 0) lastId = String(r.headers.location).replace('/tasks/', '');
      }
      await page.waitForTimeout(1000); /* pacing the load, not waiting for it */
    }
    await page.evaluate(() => { location.hash = '#/'; });
    await until('the graph', () => page.locator('#graph').getAttribute('data-samples')
      .then((v) => Number(v) >= seconds - 5));
    await page.screenshot({path: path.join(out, 'dashboard-overview.png')});
    await page.evaluate(() => { location.hash = '#/queues'; });
    await page.locator('#queues table').waitFor();
    await page.screenshot({path: path.join(out, 'dashboard-queues.png')});
    await page.evaluate(() => { location.hash = '#/tasks?state=dead'; });
    await page.locator('#tasks table').waitFor();
    await page.screenshot({path: path.join(out, 'dashboard-tasks.png')});
    await until('a dead task', async () => {
      const r = await request(port, 'GET', '/coda/api/tasks/' + lastId, undefined,
        {Authorization: 'Bearer ' + TOKEN});
      return r.json && r.json.state === 'dead';
    });
    await page.evaluate((id) => { location.hash = '#/tasks/' + id; }, lastId);
    await page.locator('#task-errors').waitFor();
    await page.click('[data-action=retry]');
    await page.locator('dialog#confirm').waitFor({state: 'visible'});
    await page.screenshot({path: path.join(out, 'dashboard-task.png')});
    await page.click('#confirm-no');
    console.log('screenshots in ' + out);
  } finally {
    if (context) await context.close();
    await stopDemo(demo);
    fs.rmSync(tmp, {recursive: true, force: true});
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
