// A Socket.IO room-call page served from static_dir (tests/browser/socketio-app): two Chromium
// pages connect a call through `[compat] socketio`, with media forced through signalbox's TURN
// relay using the credentials of the `iceServers` event.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO, cleanupAll, expectVideoFlowing, launchParticipant, mediaStats, roomName, startServer } from './harness.mjs';

after(cleanupAll);

const CONFIG = [
  '[compat]',
  'socketio = true',
  '',
  '[turn]',
  'listen = ["127.0.0.1:0"]',
  'relay_ip = "127.0.0.1"',
  'allow_loopback_peers = true',
].join('\n');

// The page uses inline styles, as such pages do: the operator relaxes the policy for it.
const CSP = `content_security_policy = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'"`;

test('two pages of a Socket.IO room-call app connect a call through the relay', { timeout: 90000 }, async (t) => {
  const server = await startServer(CONFIG, {
    staticDir: join(REPO, 'tests/browser/socketio-app'),
    httpToml: CSP,
  });
  t.after(() => server.stop());
  const alice = await launchParticipant('sio-alice', { forceRelay: true });
  t.after(() => alice.stop());
  const bob = await launchParticipant('sio-bob', { forceRelay: true });
  t.after(() => bob.stop());
  for (const p of [alice, bob]) p.page.on('response', (r) => { if (r.status() >= 400) p.errors.push(`${r.status()} ${r.url()}`); });
  const url = `${server.url}/index.html?room=${roomName('sio')}`;
  await alice.page.goto(url);
  await alice.page.locator('#status', { hasText: 'waiting' }).waitFor();
  await bob.page.goto(url);
  for (const p of [alice, bob]) {
    await p.page.locator('#status', { hasText: 'connected' }).waitFor({ timeout: 30000 });
    const stats = await expectVideoFlowing(p.page);
    assert.ok(stats.framesDecoded > 0);
    const { pairs } = await mediaStats(p.page);
    assert.equal(pairs[0].local, 'relay', JSON.stringify(pairs));
  }
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
});
