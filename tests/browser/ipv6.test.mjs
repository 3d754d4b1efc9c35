// A relayed call over IPv6 loopback: the web app on https://[::1]:PORT, `public_host = "::1"`,
// TURN over UDP on [::1] only, and every RTCPeerConnection in both browsers forced to
// `iceTransportPolicy: 'relay'`. The call must decode video both ways through relayed candidates
// that Chromium allocated from signalbox's TURN server over IPv6, with IPv6 relayed addresses.
//
// Chromium (156 checked) sends its Allocate with REQUESTED-TRANSPORT only, never
// REQUESTED-ADDRESS-FAMILY, and RFC 8656 §7.2 makes the relayed address IPv4 when that attribute
// is absent. `allocation_family = "keep"` gives such an Allocate the family the client reached
// the server over, so the relayed addresses here are `::1`.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { isIPv6 } from 'node:net';
import { cleanupAll, expectVideoFlowing, joinRoom, launchParticipant, roomName, startServer } from './harness.mjs';

const TEST_TIMEOUT_MS = 90000;

/**
 * TURN over UDP on IPv6 loopback and nothing else (no TCP, TLS or one-port TURN, so the only
 * way to a relay is `turn:[::1]:PORT?transport=udp`); allocations keep the client's family, so
 * they relay from ::1, and relaying between two loopback allocations is allowed.
 */
const TURN_TOML = [
  '[turn]',
  'listen = ["[::1]:0"]',
  'listen_tcp = []',
  'listen_tls = []',
  'one_port = false',
  'relay_ip = "127.0.0.1"',
  'relay_ip_v6 = "::1"',
  'allocation_family = "keep"',
  'secrets = ["browser-ipv6-test-secret"]',
  'allow_loopback_peers = true',
].join('\n');

/** The host-resolver rules map every other name away; the IPv6 literal must stay itself. */
const RESOLVER_EXCLUDES = ['::1', '[::1]'];

/** The selected candidate pair of each open connection, with both candidates' addresses. */
function selectedPairs(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of window.__signalboxPeers || []) {
      if (pc.connectionState === 'closed') continue;
      const report = await pc.getStats();
      let pairId = null;
      report.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      const pair = pairId ? report.get(pairId) : null;
      const pick = (c) => (c ? { type: c.candidateType, address: c.address, port: c.port, relatedAddress: c.relatedAddress, relayProtocol: c.relayProtocol, url: c.url } : null);
      out.push({
        state: pc.connectionState,
        local: pick(pair && report.get(pair.localCandidateId)),
        remote: pick(pair && report.get(pair.remoteCandidateId)),
      });
    }
    return out;
  });
}

function iceUrls(page) {
  return page.evaluate(() => window.__signalboxPeers.flatMap((pc) => pc.getConfiguration().iceServers.flatMap((s) => [].concat(s.urls))));
}

after(cleanupAll);

test('over IPv6 loopback with relay forced, both sides decode video through relays allocated over IPv6', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServer(TURN_TOML, { listen: '[::1]:0', publicHost: '::1' });
  t.after(() => server.stop());
  assert.match(server.url, /^https:\/\/\[::1\]:\d+$/, 'the web app is served on IPv6 loopback');
  const alice = await launchParticipant('alice', { forceRelay: true, resolverExcludes: RESOLVER_EXCLUDES });
  t.after(() => alice.stop());
  const bob = await launchParticipant('bob', { forceRelay: true, resolverExcludes: RESOLVER_EXCLUDES });
  t.after(() => bob.stop());
  const url = `${server.url}/r/${roomName('ipv6')}`;
  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');

  const stats = await Promise.all([expectVideoFlowing(alice.page, { timeoutMs: 40000 }), expectVideoFlowing(bob.page, { timeoutMs: 40000 })]);
  for (const [who, s, p] of [['alice', stats[0], alice], ['bob', stats[1], bob]]) {
    assert.equal(s.peers, 1, `${who} has one connection`);
    const urls = [...new Set(await iceUrls(p.page))];
    assert.ok(urls.some((u) => /^turn:\[::1\]:\d+\?transport=udp$/.test(u)), `${who} was given TURN on [::1]: ${JSON.stringify(urls)}`);
    assert.ok(urls.every((u) => /^(stun|turn):\[::1\]:\d+(\?transport=udp)?$/.test(u)), `${who} was given this server over UDP only: ${JSON.stringify(urls)}`);

    const pairs = await selectedPairs(p.page);
    const [{ local, remote }] = pairs;
    const seen = JSON.stringify(pairs);
    assert.equal(local?.type, 'relay', `${who}'s selected pair uses a relayed local candidate: ${seen}`);
    assert.match(local.url || '', /^turn:\[::1\]:\d+\?transport=udp$/, `${who}'s relayed candidate was allocated through the [::1] TURN listener: ${seen}`);
    assert.equal(local.relayProtocol, 'udp', `${who} reaches its relay over UDP: ${seen}`);
    // Chromium reports no relatedAddress for a relayed candidate; where it does, it is the
    // address signalbox saw the allocation come from, which can only be IPv6 here.
    if (local.relatedAddress) assert.ok(isIPv6(local.relatedAddress), `${who}'s mapped address is IPv6: ${seen}`);
    // No REQUESTED-ADDRESS-FAMILY from Chromium: `allocation_family = "keep"` makes it IPv6.
    assert.equal(local.address, '::1', `${who}'s relayed address is signalbox's IPv6 relay: ${seen}`);
    assert.equal(remote?.type, 'relay', `${who}'s remote candidate is the other side's relay: ${seen}`);
    assert.equal(remote.address, '::1', `${who}'s remote relayed address is the other IPv6 allocation: ${seen}`);
    assert.deepEqual(p.errors, [], `${p.label} logged errors`);
  }
});
