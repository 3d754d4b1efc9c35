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
  'listen_tcp = ["127.0.0.1:0"]',
  'listen_tls = ["127.0.0.1:0"]',
  'relay_ip = "127.0.0.1"',
  'secrets = ["browser-relay-test-secret"]',
  'allow_loopback_peers = true',
].join('\n');

async function relayCall(t, extraTurnKeys = '') {
  const server = await startServer(`${RELAY_TOML}\n${extraTurnKeys}`);
  t.after(() => server.stop());
  const alice = await launchParticipant('alice', { forceRelay: true });
  t.after(() => alice.stop());
  const bob = await launchParticipant('bob', { forceRelay: true });
  t.after(() => bob.stop());
  const url = `${server.url}/r/${roomName('relay')}`;
  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  return { server, alice, bob };
}

function assertRelayed(who, s) {
  assert.equal(s.peers, 1, `${who} has one connection`);
  assert.equal(s.pairs[0].local, 'relay', `${who}'s selected pair uses a relayed local candidate: ${JSON.stringify(s.pairs)}`);
  assert.equal(s.pairs[0].remote, 'relay', `${who}'s remote candidate is the other side's relay: ${JSON.stringify(s.pairs)}`);
}

/** The TURN usernames a page's first peer connection is configured with. */
function turnUsernames(page) {
  return page.evaluate(() => window.__signalboxPeers[0].getConfiguration().iceServers.map((s) => s.username).filter(Boolean));
}

after(cleanupAll);

test('with relay forced, both sides decode video over a relayed candidate pair from signalbox', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { alice, bob } = await relayCall(t);

  const stats = await Promise.all([expectVideoFlowing(alice.page, { timeoutMs: 40000 }), expectVideoFlowing(bob.page, { timeoutMs: 40000 })]);
  assertRelayed('alice', stats[0]);
  assertRelayed('bob', stats[1]);

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

test('renewed TURN credentials are applied to the running call, which outlives the first ones', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // Credentials for 6 s, renewed by the server at 80 % of that.
  const { alice, bob } = await relayCall(t, 'credential_ttl = "6s"');
  await Promise.all([expectVideoFlowing(alice.page, { timeoutMs: 40000 }), expectVideoFlowing(bob.page, { timeoutMs: 40000 })]);
  const first = await turnUsernames(alice.page);
  assert.ok(first.length > 0, 'joined carried TURN credentials');

  // The `ice-servers` message reaches the page and the app hands it to setConfiguration.
  await alice.page.waitForFunction(
    (old) => {
      const names = window.__signalboxPeers[0].getConfiguration().iceServers.map((s) => s.username).filter(Boolean);
      return names.length > 0 && names.every((n) => !old.includes(n));
    },
    first,
    { timeout: 20000 },
  );
  // Past the first credentials' expiry the allocations keep relaying.
  await alice.page.waitForTimeout(3000);
  const stats = await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assertRelayed('alice', stats[0]);
  assertRelayed('bob', stats[1]);

  // An ICE restart now needs new allocations, which only the renewed credentials can get.
  const ufrag = () => (/a=ice-ufrag:(\S+)/.exec(window.__signalboxPeers[0].currentLocalDescription?.sdp || '') || [])[1];
  const before = await alice.page.evaluate(ufrag);
  await alice.page.evaluate(() => window.__signalboxPeers[0].restartIce());
  await alice.page.waitForFunction(
    (old) => {
      const pc = window.__signalboxPeers[0];
      const now = (/a=ice-ufrag:(\S+)/.exec(pc.currentLocalDescription?.sdp || '') || [])[1];
      return now !== old && pc.signalingState === 'stable' && pc.iceConnectionState === 'connected';
    },
    before,
  );
  const after = await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assertRelayed('alice', after[0]);
  assertRelayed('bob', after[1]);
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
});

test('given only turns: on the HTTPS port, relay-only calls decode video over TURN over TLS', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServer(RELAY_TOML);
  t.after(() => server.stop());
  const httpsPort = server.listeners.https.split(':').pop();
  // Everything but `turns:127.0.0.1:<https port>?transport=tcp` is taken out of the pages' list.
  const onlyIceUrl = `^turns:127\\.0\\.0\\.1:${httpsPort}\\?transport=tcp$`;
  const alice = await launchParticipant('alice', { forceRelay: true, onlyIceUrl });
  t.after(() => alice.stop());
  const bob = await launchParticipant('bob', { forceRelay: true, onlyIceUrl });
  t.after(() => bob.stop());
  const url = `${server.url}/r/${roomName('oneport')}`;
  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');

  const stats = await Promise.all([expectVideoFlowing(alice.page, { timeoutMs: 40000 }), expectVideoFlowing(bob.page, { timeoutMs: 40000 })]);
  for (const [who, s, p] of [['alice', stats[0], alice], ['bob', stats[1], bob]]) {
    assertRelayed(who, s);
    assert.equal(s.pairs[0].relayProtocol, 'tls', `${who} reaches its relay over TLS: ${JSON.stringify(s.pairs)}`);
    const urls = await p.page.evaluate(() =>
      window.__signalboxPeers.flatMap((pc) => pc.getConfiguration().iceServers.flatMap((s) => [].concat(s.urls))),
    );
    assert.deepEqual([...new Set(urls)], [`turns:127.0.0.1:${httpsPort}?transport=tcp`], `${who} was given the one URL only`);
    assert.deepEqual(p.errors, [], `${p.label} logged errors`);
  }
});
