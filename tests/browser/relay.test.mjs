// Proves that media can flow through signalbox's own TURN relay: every RTCPeerConnection in
// both browsers is forced to `iceTransportPolicy: 'relay'` by an init script, so the only
// candidates are relayed ones from the iceServers the server hands out in `joined`.
//
// Needs the TURN server and the credentials that `joined` carries; `npm test` runs this file
// only when SIGNALBOX_RELAY_TESTS=1. SIGNALBOX_RELAY_TOML replaces the [turn] section below
// if a deployment of the tests needs other listener settings.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanupAll, expectVideoFlowing, joinRoom, launchParticipant, mediaStats, remoteTiles, roomName, startServer } from './harness.mjs';

const TEST_TIMEOUT_MS = 90000;

/** TURN on loopback only, with a fixed secret; relaying between two loopback allocations is allowed. */
const RELAY_TOML = process.env.SIGNALBOX_RELAY_TOML || [
  '[turn]',
  'listen = ["127.0.0.1:0"]',
  'relay_ip = "127.0.0.1"',
  'secrets = ["browser-relay-test-secret"]',
  'allow_loopback_peers = true',
].join('\n');

after(cleanupAll);

test('with relay forced, both sides decode video over a relayed candidate pair from signalbox', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServer(RELAY_TOML);
  t.after(() => server.stop());
  const alice = await launchParticipant('alice', { forceRelay: true });
  t.after(() => alice.stop());
  const bob = await launchParticipant('bob', { forceRelay: true });
  t.after(() => bob.stop());
  const url = `${server.url}/r/${roomName('relay')}`;

  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');

  const stats = await Promise.all([expectVideoFlowing(alice.page, { timeoutMs: 40000 }), expectVideoFlowing(bob.page, { timeoutMs: 40000 })]);
  for (const [who, s] of [['alice', stats[0]], ['bob', stats[1]]]) {
    assert.equal(s.peers, 1, `${who} has one connection`);
    assert.equal(s.pairs[0].local, 'relay', `${who}'s selected pair uses a relayed local candidate: ${JSON.stringify(s.pairs)}`);
    assert.equal(s.pairs[0].remote, 'relay', `${who}'s remote candidate is the other side's relay: ${JSON.stringify(s.pairs)}`);
  }

  // The relay is signalbox's: the only ICE servers the pages were given point at this server.
  for (const p of [alice, bob]) {
    const urls = await p.page.evaluate(() =>
      window.__signalboxPeers.flatMap((pc) => pc.getConfiguration().iceServers.flatMap((s) => [].concat(s.urls))),
    );
    assert.ok(urls.some((u) => /^turns?:127\.0\.0\.1:\d+/.test(u)), `a TURN server on this host: ${JSON.stringify(urls)}`);
    assert.ok(urls.every((u) => /^(stun|turns?):127\.0\.0\.1(:|\?|$)/.test(u)), `only this server: ${JSON.stringify(urls)}`);
    assert.deepEqual(p.errors, [], `${p.label} logged errors`);
  }

  // And the app says so.
  await remoteTiles(alice.page).locator('.path-badge[data-path="relay"]').waitFor();
  await remoteTiles(bob.page).locator('.path-badge[data-path="relay"]').waitFor();
  assert.equal((await mediaStats(alice.page)).pairs[0].state, 'connected');
});
