// What a person does in the browser: open a page, solve Esper's challenge
// on the mock's page, and what the browser keeps of it.

import assert from 'node:assert/strict';

export const PROOF = 'esper_challenge_proof';
export const PAGE = '<!doctype html><title>protected page</title><h1 id="page">protected page</h1>\n';

/**
 * Every document URL a frame of `page` showed and every document response it
 * got (redirects included), from now on.
 */
export function record(page) {
  const seen = { committed: [], documents: [] };
  page.on('framenavigated', (frame) => seen.committed.push(frame.url()));
  page.on('response', (response) => {
    if (response.request().resourceType() === 'document') seen.documents.push(response);
  });
  return seen;
}

/** Waits for the challenge page in `frame` and solves it, as a person would. */
export async function solve(frame) {
  await frame.waitForURL(/^https:\/\/esper\.test:\d+\/challenge\?/, { timeout: 10000 });
  await frame.locator('#solve').click();
}

/** Waits until `frame` shows exactly `url`, and checks it shows the page. */
export async function landsOn(frame, url, text = 'protected page') {
  await frame.waitForURL(url, { timeout: 10000 });
  assert.equal(await frame.locator('h1').textContent(), text);
}

/** The challenge round trip from `url`: challenged, solved, back on `url`. */
export async function roundTrip(page, url) {
  const first = await page.goto(url);
  assert.match(first.url(), /^https:\/\/esper\.test:\d+\/challenge\?return_url=/, 'challenged');
  await solve(page);
  await landsOn(page, url);
}

/** The Set-Cookie of the response that redeemed the proof. */
export async function passCookieHeader(seen) {
  const redeemed = seen.documents.find((r) => r.url().includes(PROOF));
  assert.ok(redeemed, 'a response to the URL with the proof');
  assert.equal(redeemed.status(), 302);
  return redeemed.headerValue('set-cookie');
}
