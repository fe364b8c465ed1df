// What a page's scripts and subresources get, from an http and an https
// page: fetch() asking for JSON gets the JSON forms (also on plain http,
// where Chromium sends no Sec-Fetch-*), and a page that follows the JSON
// challenge comes back to itself; <img> and <script> to blocked and
// challenged URLs get the block page and the redirect, and the page stays.

import assert from 'node:assert/strict';
import { context, suite } from './lib/site.mjs';
import { PAGE, landsOn, solve } from './lib/flows.mjs';

const { site, check } = suite('scripts', {}, () => {
  site.page('app/page.html', PAGE);
  site.page('app/data.json', '{"ok":true}\n');
  site.page('app/script.js', '(window.ran = window.ran || []).push(document.currentScript.src);\n');
  // 1x1 transparent PNG.
  site.page('app/img.png', Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'base64'));
  site.page('app/sub.html', `<!doctype html><title>subresources</title><h1>subresources</h1>
<img id="allowed" src="/app/img.png?sub=1">
<img id="blocked" src="/app/img.png?sub=2&mock_action=block">
<img id="challenged" src="/app/img.png?sub=3&mock_action=challenge">
<script src="/app/script.js?sub=4"></script>
<script src="/app/script.js?sub=5&mock_action=block"></script>
<script src="/app/script.js?sub=6&mock_action=challenge"></script>
`);
});

/** fetch() from the page, as the README's example does. */
function call(page, path) {
  return page.evaluate(async (path) => {
    const r = await fetch(path, { headers: { Accept: 'application/json' } });
    return {
      status: r.status,
      contentType: r.headers.get('content-type'),
      cacheControl: r.headers.get('cache-control'),
      vary: r.headers.get('vary'),
      body: await r.json(),
    };
  }, path);
}

for (const scheme of ['http', 'https']) {
  check(`${scheme}: fetch() gets the JSON block and challenge; the page follows it and comes back to itself`, async () => {
    const ctx = await context(site);
    const page = await ctx.newPage();
    const pageUrl = site.url(scheme, '/app/page.html?from=fetch');
    await page.goto(pageUrl);
    const fetchMode = await page.evaluate(async () => (await fetch('/echo-fetch-mode')).text());
    assert.equal(fetchMode, scheme === 'https' ? '[cors]' : '[]', 'Chromium sends Sec-Fetch-Mode to https origins only');

    const blocked = await call(page, '/app/data.json?mock_action=block&mock_decision_id=b-1');
    assert.equal(blocked.status, 403);
    assert.deepEqual(blocked.body, { action: 'block', decision_id: 'b-1' });
    assert.equal(blocked.contentType, 'application/json');
    assert.equal(blocked.cacheControl, 'no-store');
    assert.equal(blocked.vary, 'Accept, Sec-Fetch-Mode, X-Requested-With');

    const challenged = await call(page, '/app/data.json?mock_action=challenge');
    assert.equal(challenged.status, 403);
    assert.equal(challenged.body.action, 'challenge');
    assert.equal(challenged.cacheControl, 'no-store');
    assert.equal(challenged.vary, 'Accept, Sec-Fetch-Mode, X-Requested-With');
    const redirect = new URL(challenged.body.redirect_url);
    assert.equal(redirect.searchParams.get('return_url'), pageUrl, 'return_url: the page that called, not the API URL');

    await page.evaluate((url) => { window.location.href = url; }, challenged.body.redirect_url);
    await solve(page);
    await landsOn(page, pageUrl);
    const again = await call(page, '/app/data.json?mock_action=challenge');
    assert.equal(again.status, 200, 'the pass cookie now lets the call through');
    assert.deepEqual(again.body, { ok: true });
    await ctx.close();
  });

  check(`${scheme}: <img> and <script> to blocked and challenged URLs`, async () => {
    const ctx = await context(site);
    const page = await ctx.newPage();
    const responses = new Map();
    page.on('response', (r) => {
      const sub = new URL(r.url()).searchParams.get('sub');
      if (sub) responses.set(sub, r);
    });
    const url = site.url(scheme, '/app/sub.html');
    const response = await page.goto(url);
    assert.equal(response.status(), 200);
    assert.equal(page.url(), url, 'the page stays where it is');

    const width = (id) => page.evaluate((id) => document.getElementById(id).naturalWidth, id);
    assert.equal(await width('allowed'), 1, 'allowed image shown');
    assert.equal(await width('blocked'), 0, 'blocked image not shown');
    assert.equal(await width('challenged'), 0, 'challenged image not shown');
    const ran = await page.evaluate(() => (window.ran || []).map((src) => new URL(src).search));
    assert.deepEqual(ran, ['?sub=4'], 'only the allowed script ran');

    for (const sub of ['2', '5']) {
      const r = responses.get(sub);
      assert.equal(r.status(), 403, `sub=${sub}: the block status`);
      assert.match(r.headers()['content-type'], /^text\/html/, `sub=${sub}: the block page, not JSON`);
    }
    for (const sub of ['3', '6']) {
      const r = responses.get(sub);
      assert.equal(r.status(), 302, `sub=${sub}: the redirect, not JSON`);
      assert.match(r.headers().location, /^https:\/\/esper\.test:\d+\/challenge\?/, `sub=${sub}: to Esper's page`);
    }
    await ctx.close();
  });
}
