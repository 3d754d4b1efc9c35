// The connection-check page in a real browser against the real server: every path the server
// lists (STUN, TURN over each enabled transport) must be reported as working on loopback, with
// the plain-words verdict filled in.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanupAll, ensureArtifacts, launchParticipant, REPO, startServer } from './harness.mjs';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';

after(cleanupAll);

test('the diag page reports every path to the server as working', { timeout: 90000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const visitor = await launchParticipant('diag');
  t.after(() => visitor.stop());
  const { page } = visitor;
  await page.goto(`${server.url}/diag`);
  await page.waitForSelector('body[data-done="true"]', { timeout: 30000 });
  const rows = await page.$$eval('#results tbody tr', (trs) => trs.map((tr) => ({
    check: tr.dataset.check,
    result: tr.dataset.result,
    addresses: tr.querySelector('td.addr')?.textContent,
  })));
  assert.ok(rows.some((r) => r.check === 'turn-udp'), `TURN over UDP is checked: ${JSON.stringify(rows)}`);
  for (const row of rows) {
    assert.equal(row.result, 'working', `${row.check}: ${JSON.stringify(rows)}`);
    assert.notEqual(row.addresses, '—', `${row.check} shows the addresses it saw`);
  }
  const summary = await page.textContent('#summary');
  assert.ok(summary && !summary.startsWith('Checking'), `a verdict is shown: ${summary}`);
  const file = join(ensureArtifacts(), 'diag.png');
  await page.screenshot({ path: file, fullPage: true });
  // The README's picture is refreshed only on request, so a test run leaves the tree clean.
  if (process.env.SIGNALBOX_UPDATE_SCREENSHOTS === '1') copyFileSync(file, join(REPO, 'docs/screenshot-diag.png'));
  assert.deepEqual(visitor.errors, []);
});
