// The challenge round trip in Chromium, over http and https on non-default
// ports: allow; challenged, solved on Esper's page, back on the URL asked
// for with the pass cookie; what the address bar, history and referrer
// keep; back, forward and reload.

import assert from 'node:assert/strict';
import { context, suite } from './lib/site.mjs';
import { PAGE, PROOF, landsOn, passCookieHeader, record, solve } from './lib/flows.mjs';

const { site, check } = suite('round-trip', {}, () => {
  site.page('app/page.html', PAGE);
});

check('allow: the page, no challenge, no cookie', async () => {
  const ctx = await context(site);
  const page = await ctx.newPage();
  const response = await page.goto(site.url('http', '/app/page.html'));
  assert.equal(response.status(), 200);
  assert.equal(response.request().redirectedFrom(), null, 'no redirect');
  assert.equal(await page.locator('h1').textContent(), 'protected page');
  assert.deepEqual(await ctx.cookies(), []);
  await ctx.close();
});

for (const scheme of ['http', 'https']) {
  check(`${scheme}: the round trip, its redirects and the pass cookie`, async () => {
    const ctx = await context(site);
    const page = await ctx.newPage();
    const seen = record(page);
    const url = site.url(scheme, '/app/page.html?mock_action=challenge&x=1');
    const before = await site.counts();

    const first = await page.goto(url);
    assert.equal(first.status(), 200, "Esper's page");
    const challenge = new URL(first.url());
    assert.equal(challenge.origin, `https://esper.test:${site.https}`);
    assert.equal(challenge.searchParams.get('return_url'), url, 'return_url: the URL asked for, its port included');
    await solve(page);
    await landsOn(page, url);

    const statuses = seen.documents.map((r) => r.status());
    assert.deepEqual(statuses, [302, 200, 302, 302, 200], 'three redirects: to the challenge, from solve, to the clean URL');
    const back = seen.documents[3].url();
    assert.ok(back.startsWith(`${url}&${PROOF}=proof-`), `back with a proof: ${back}`);
    assert.ok(!seen.committed.some((u) => u.includes(PROOF)), 'the proof was never in the address bar');
    assert.ok(!(await page.evaluate(() => document.referrer)).includes(PROOF), 'nor in document.referrer');

    const header = await passCookieHeader(seen);
    const name = scheme === 'https' ? '__Secure-esper_challenge' : 'esper_challenge';
    const secure = scheme === 'https' ? '; Secure' : '';
    assert.match(header, new RegExp(`^${name}=v\\d+\\.[\\w.-]+; Path=/; Max-Age=900; HttpOnly; SameSite=Lax${secure}$`));
    const cookies = await ctx.cookies();
    assert.equal(cookies.length, 1, 'one cookie');
    const [cookie] = cookies;
    assert.equal(cookie.name, name);
    assert.equal(cookie.domain, 'app.test');
    assert.equal(cookie.path, '/');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Lax');
    assert.equal(cookie.secure, scheme === 'https');
    const lifetime = cookie.expires - Date.now() / 1000;
    assert.ok(lifetime > 890 && lifetime <= 901, `Max-Age 900 kept: ${lifetime}`);
    assert.equal(await page.evaluate(() => document.cookie), '', 'HttpOnly: not readable by scripts');

    const after = await site.counts();
    assert.equal(after.runtime - before.runtime, 1, 'one decision');
    assert.equal(after.verify - before.verify, 1, 'one verification');
    await ctx.close();
  });
}

check('back, forward and reload: no loop, no new challenge', async () => {
  const ctx = await context(site);
  const page = await ctx.newPage();
  const seen = record(page);
  const url = site.url('https', '/app/page.html?mock_action=challenge&nav=1');
  await page.goto(url);
  await solve(page);
  await landsOn(page, url);
  const runtime = (await site.counts()).runtime;

  const reload = await page.reload();
  assert.equal(reload.status(), 200, 'reload: the page');
  assert.equal(reload.request().redirectedFrom(), null, 'reload: no redirect');
  assert.equal(page.url(), url);

  await page.goBack();
  assert.match(page.url(), /^https:\/\/esper\.test:\d+\/challenge\?/, "back: Esper's page, where the visitor was");
  await page.goForward();
  await landsOn(page, url);
  await page.goBack();
  await page.goBack();
  assert.equal(page.url(), 'about:blank', 'back again: where the tab started (the proof URL is no history entry)');
  await page.goForward();
  await page.goForward();
  await landsOn(page, url);
  await page.reload();
  await landsOn(page, url);

  assert.equal((await site.counts()).runtime, runtime, 'the pass cookie answered every one, no runtime call');
  assert.ok(!seen.committed.some((u) => u.includes(PROOF)), 'the proof never in the address bar');
  assert.equal(await page.evaluate(() => history.length), 3, 'history: blank, challenge, page');
  await ctx.close();
});

check('a non-default port: back on it after the challenge', async () => {
  const ctx = await context(site);
  const page = await ctx.newPage();
  const url = site.url('http', '/app/page.html?mock_action=challenge&port=1');
  assert.notEqual(site.http, 80);
  await page.goto(url);
  await solve(page);
  await landsOn(page, url);
  assert.equal(new URL(page.url()).port, String(site.http));
  await ctx.close();
});
