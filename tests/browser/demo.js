/*
 * demo.js - what the browser tests share: coda-demo started on an ephemeral
 * port and stopped, plain HTTP requests, and waits for a condition with a
 * deadline (never a fixed sleep).
 */
'use strict';

const {spawn} = require('child_process');
const http = require('http');
const path = require('path');

/* Sanitizer builds run slower: deadlines are generous, waits end early. */
const SLOW = 30000;

/* Waits until fn() is truthy (it may be async), or throws after ms. */
async function until(what, fn, ms = SLOW) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error('timed out waiting for ' + what + (last instanceof Error ? ': ' + last.message : ''));
    await new Promise((r) => setTimeout(r, 50));
  }
}

function request(port, method, target, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const req = http.request({host: '127.0.0.1', port, method, path: target,
      headers: Object.assign(data ? {'Content-Type': 'application/json', 'Content-Length': data.length} : {}, headers)},
    (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
        resolve({status: res.statusCode, headers: res.headers, text, json});
      });
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error('request timed out')));
    if (data) req.write(data);
    req.end();
  });
}

/* Starts DEMO on an ephemeral port with a SQLite store in `dir` and the
 * admin token `token`; .port resolves once it printed its dashboard link. */
function startDemo(demoPath, dir, token, extra = []) {
  const child = spawn(demoPath, ['--listen', '127.0.0.1:0', '--store', 'sqlite:' + path.join(dir, 'coda.db'),
    '--admin-token', token, '--threads', '2', '--quiet'].concat(extra), {stdio: ['ignore', 'ignore', 'pipe']});
  let log = '';
  child.stderr.on('data', (d) => {
    log += d.toString();
    if (process.env.VERBOSE) process.stderr.write(d);
  });
  const port = until('the demo to print its dashboard link', () => {
    if (child.exitCode !== null) throw new Error('coda-demo exited ' + child.exitCode + ':\n' + log);
    const m = /dashboard at http:\/\/127\.0\.0\.1:(\d+)\/coda\//.exec(log);
    return m && Number(m[1]);
  });
  return {child, port, log: () => log};
}

async function stopDemo(demo) {
  if (!demo || demo.child.exitCode !== null) return demo ? demo.child.exitCode : 0;
  const exited = new Promise((r) => demo.child.once('exit', (code, sig) => r(code === null ? sig : code)));
  demo.child.kill('SIGTERM');
  const timer = setTimeout(() => demo.child.kill('SIGKILL'), 15000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}


/* The dashboard's browser: Debian's chromium with a fresh profile in
 * `profileDir`; playwright-core drives it and never downloads one. */
function launch(chromium, profileDir, viewport = {width: 1280, height: 860}) {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport,
  });
}

module.exports = {SLOW, until, request, startDemo, stopDemo, launch};
