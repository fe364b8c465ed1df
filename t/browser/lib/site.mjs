// The browser suite's site: its own mock Esper, test certificates and nginx
// with the built module, on loopback ports, as t/lib/EsperTest.pm starts
// them; and headless Chromium (Debian's /usr/bin/chromium) through
// playwright-core, with the suite's hostnames mapped to 127.0.0.1.
//
// Names: app.test is the protected site, embed.test a second site that
// embeds it in an iframe, esper.test the challenge page (an https server of
// the same nginx in front of the mock). Every name is served over http on
// site.http and over https on site.https.

import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const TARGET = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const HOSTS = ['app.test', 'embed.test', 'esper.test'];

function nginxBinary() {
  if (process.env.TEST_NGINX_BINARY) return process.env.TEST_NGINX_BINARY;
  const dir = readFileSync(join(TARGET, 'release/nginx-build-dir'), 'utf8').trim();
  return join(dir, 'nginx');
}

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

function listening(port) {
  return new Promise((ok) => {
    const socket = connect(port, '127.0.0.1');
    socket.on('connect', () => { socket.destroy(); ok(true); });
    socket.on('error', () => ok(false));
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// Processes started by any site of this file, killed at exit whatever happens.
const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));

/**
 * Starts the mock and nginx. `locations` are extra lines for the app server
 * (directives of other tests' locations); pages are written by `page()`.
 */
export async function startSite(name, { locations = '' } = {}) {
  const dir = join(ROOT, 't/tmp', `browser-${name}-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'logs'), { recursive: true });
  mkdirSync(join(dir, 'html/app'), { recursive: true });
  const [http, https] = [await freePort(), await freePort()];

  const mock = spawn(join(TARGET, 'release/esper-mock'),
    ['--listen', '127.0.0.1:0', '--api-key', 'k', '--challenge-origin', `https://esper.test:${https}`],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(mock);
  const mockPort = await new Promise((ok, fail) => {
    let out = '';
    mock.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on 127\.0\.0\.1:(\d+)/);
      if (m) ok(Number(m[1]));
    });
    mock.on('exit', () => fail(new Error(`the mock exited: ${out}`)));
  });

  const sans = HOSTS.map((h) => `DNS:${h}`).join(',');
  writeFileSync(join(dir, 'leaf.ext'), `subjectAltName=${sans}\nbasicConstraints=CA:FALSE\n`);
  for (const args of [
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=esper-browser-ca', '-keyout', 'ca.key', '-out', 'ca.pem'],
    ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=app.test', '-keyout', 'leaf.key', '-out', 'leaf.csr'],
    ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'leaf.ext', '-out', 'leaf.pem'],
  ]) {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  }

  const tls = `ssl_certificate ${dir}/leaf.pem;\n        ssl_certificate_key ${dir}/leaf.key;`;
  const conf = `
load_module ${process.env.TEST_ESPER_MODULE || join(TARGET, 'release/libngx_http_esper_module.so')};
daemon off;
worker_processes 1;
pid ${dir}/logs/nginx.pid;
error_log ${dir}/logs/error.log info;
events { worker_connections 1024; }
http {
    access_log ${dir}/logs/access.log;
    default_type text/plain;
    types { text/html html; application/json json; image/png png; text/javascript js; }
    esper_api_url http://127.0.0.1:${mockPort};
    esper_api_key k;
    esper_timeout 3s;
    server {
        listen 127.0.0.1:${http};
        listen 127.0.0.1:${https} ssl;
        server_name app.test embed.test;
        ${tls}
        root ${dir}/html;
        location /app/ { esper on; }
        location = /echo-fetch-mode { return 200 "[$http_sec_fetch_mode]"; }
${locations}
    }
    server {
        listen 127.0.0.1:${https} ssl;
        server_name esper.test;
        ${tls}
        location / { proxy_pass http://127.0.0.1:${mockPort}; }
    }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const nginx = spawn(nginxBinary(), ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf')],
    { stdio: ['ignore', 'inherit', 'inherit'] });
  children.add(nginx);
  const deadline = Date.now() + 5000;
  while (!(await listening(http) && await listening(https))) {
    if (Date.now() > deadline || nginx.exitCode !== null) throw new Error('nginx did not start');
    await sleep(20);
  }

  const site = {
    dir, http, https, mockPort,
    /** http://app.test:PORT/PATH or https://… */
    url: (scheme, path, host = 'app.test') => `${scheme}://${host}:${scheme === 'https' ? https : http}${path}`,
    /** Writes a file under html/. */
    page: (path, content) => {
      mkdirSync(dirname(join(dir, 'html', path)), { recursive: true });
      writeFileSync(join(dir, 'html', path), content);
    },
    /** The mock's counts: runtime and verify calls. */
    counts: async () => (await fetch(`http://127.0.0.1:${mockPort}/__mock/count`)).json(),
    /** Error-log lines more severe than `error`, and worker crashes. */
    seriousErrors: () => readFileSync(join(dir, 'logs/error.log'), 'utf8').split('\n')
      .filter((l) => /\[(alert|crit|emerg)\]/.test(l) || /exited on signal/.test(l)),
    browser: null,
  };
  site.browser = await launch();
  site.stop = async (passed) => {
    await site.browser.close().catch(() => {});
    await stop(nginx, 'SIGQUIT');
    await stop(mock, 'SIGTERM');
    if (passed && !process.env.TEST_KEEP) rmSync(dir, { recursive: true, force: true });
  };
  return site;
}

async function stop(child, signal) {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((ok) => child.once('exit', ok));
    child.kill(signal);
    await Promise.race([exited, sleep(5000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  children.delete(child);
}

/** Headless Chromium with a new, empty profile (playwright's temporary one). */
export function launch() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/install-deps.sh --browser`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--host-resolver-rules=${HOSTS.map((h) => `MAP ${h} 127.0.0.1`).join(', ')}`,
    ],
  });
}

/** A fresh context (its own cookie jar) that trusts the test certificates. */
export function context(site) {
  return site.browser.newContext({ ignoreHTTPSErrors: true });
}

/**
 * One test file's site, started before its tests and stopped after them
 * (its directory kept when a test failed or nginx logged an alert), and
 * `check`, its tests. `setup(site)` writes the pages.
 */
export function suite(name, options, setup) {
  const site = {};
  let started = false;
  let failed = false;
  before(async () => {
    Object.assign(site, await startSite(name, options));
    started = true;
    setup(site);
  });
  after(async () => {
    if (!started) return;
    const errors = site.seriousErrors();
    await site.stop(!failed && errors.length === 0);
    assert.deepEqual(errors, [], 'no alerts or crashes');
  });
  const check = (title, body) => test(title, async () => {
    try { await body(); } catch (e) { failed = true; throw e; }
  });
  return { site, check };
}
