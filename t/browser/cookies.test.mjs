// The pass cookie where Chromium's cookie rules bite: a site served over
// both https and http (a Secure cookie of the same name would block the
// http one: a challenge after every solve), and a protected page in a
// cross-site iframe (a SameSite=Lax cookie is never set there; the
// embedded form, SameSite=None; Secure; Partitioned, is).

import assert from 'node:assert/strict';
import { context, suite } from './lib/site.mjs';
import { PAGE, PROOF, landsOn, passCookieHeader, record, solve } from './lib/flows.mjs';

const CHALLENGE = /^https:\/\/esper\.test:\d+\/challenge\?/;
const locations = `
        location /embedded/ { esper on; esper_pass_cookie esper_challenge samesite=none partitioned; }
        location = /host.html { }`;
const { site, check } = suite('cookies', { locations }, () => {
  site.page('app/page.html', PAGE);
  site.page('embedded/page.html', PAGE);
  site.page('host.html', `<!doctype html><title>embedding site</title><h1>embedding site</h1>
<iframe id="frame" width="600" height="400"></iframe>
<script>document.getElementById('frame').src = new URLSearchParams(location.search).get('src');</script>
`);
});

check('a pass earned over https, then a challenge over http: solved once, no loop', async () => {
  const ctx = await context(site);
  const page = await ctx.newPage();
  const secureUrl = site.url('https', '/app/page.html?mock_action=challenge&loop=1');
  await page.goto(secureUrl);
  await solve(page);
  await landsOn(page, secureUrl);

  const seen = record(page);
  const plainUrl = site.url('http', '/app/page.html?mock_action=challenge&loop=2');
  const first = await page.goto(plainUrl);
  assert.match(first.url(), CHALLENGE, 'http: challenged (the https pass is not sent)');
  await solve(page);
  await landsOn(page, plainUrl);
  assert.match(await passCookieHeader(seen), /^esper_challenge=[^;]+; Path=\/; Max-Age=900; HttpOnly; SameSite=Lax$/);
  const challenges = seen.documents.filter((r) => CHALLENGE.test(r.url()));
  assert.equal(challenges.length, 1, 'one challenge page over http');
  const reload = await page.reload();
  assert.equal(reload.request().redirectedFrom(), null, 'reload over http: no new challenge');
  await landsOn(page, plainUrl);

  const names = (await ctx.cookies()).map((c) => `${c.name} ${c.secure}`).sort();
  assert.deepEqual(names, ['__Secure-esper_challenge true', 'esper_challenge false'], 'both passes kept, each under its own name');
  const secureAgain = await page.goto(secureUrl);
  assert.equal(secureAgain.request().redirectedFrom(), null, 'https still passes');
  await landsOn(page, secureUrl);
  await ctx.close();
});

/** Opens the embedding site with `src` in its iframe; returns the frame. */
async function embed(page, src) {
  await page.goto(`${site.url('https', '/host.html', 'embed.test')}?src=${encodeURIComponent(src)}`);
  const frame = page.mainFrame().childFrames()[0];
  assert.ok(frame, 'the iframe');
  return frame;
}

check('cross-site iframe, default cookie: refused by Chromium, challenged again after solving', async () => {
  const ctx = await context(site);
  const page = await ctx.newPage();
  const seen = record(page);
  const src = site.url('https', '/app/page.html?mock_action=challenge&frame=1');
  const frame = await embed(page, src);
  // Esper's page reached through the redirect from the URL with the proof.
  const challengedAgain = page.waitForResponse((r) => {
    let request = r.request();
    if (!CHALLENGE.test(r.url())) return false;
    while ((request = request.redirectedFrom())) if (request.url().includes(PROOF)) return true;
    return false;
  });
  const proofResponse = page.waitForResponse((r) => r.url().includes(PROOF));
  await solve(frame);
  const redeemed = await proofResponse;
  assert.match(await redeemed.headerValue('set-cookie'), /SameSite=Lax; Secure$/, 'the proof was verified and a Lax cookie issued');
  await challengedAgain;
  await frame.waitForURL(CHALLENGE);
  const challenges = seen.documents.filter((r) => CHALLENGE.test(r.url()));
  assert.equal(challenges.length, 2, 'Esper\'s page again: the pass was never kept');
  assert.deepEqual(await ctx.cookies(), [], 'no cookie kept');
  await ctx.close();
});

check('cross-site iframe, esper_pass_cookie samesite=none partitioned: the pass is kept', async () => {
  const ctx = await context(site);
  const page = await ctx.newPage();
  const seen = record(page);
  const src = site.url('https', '/embedded/page.html?mock_action=challenge&frame=2');
  const frame = await embed(page, src);
  await solve(frame);
  await landsOn(frame, src);
  assert.equal(page.url().startsWith(site.url('https', '/host.html', 'embed.test')), true, 'the embedding page stays');
  assert.match(await passCookieHeader(seen),
    /^__Secure-esper_challenge=[^;]+; Path=\/; Max-Age=900; HttpOnly; SameSite=None; Secure; Partitioned$/);
  const [cookie, ...more] = await ctx.cookies();
  assert.equal(more.length, 0, 'one cookie');
  assert.equal(cookie.name, '__Secure-esper_challenge');
  assert.equal(cookie.sameSite, 'None');
  assert.equal(cookie.secure, true);
  assert.equal(cookie.partitionKey, 'https://embed.test', 'partitioned (CHIPS) under the embedding site');

  const runtime = (await site.counts()).runtime;
  await frame.goto(src);
  await landsOn(frame, src);
  assert.equal((await site.counts()).runtime, runtime, 'the frame loads again on its pass, no runtime call');
  await ctx.close();
});
