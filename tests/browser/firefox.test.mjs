// Chromium and Firefox in one call: Debian's chromium (playwright-core) and Debian's firefox-esr
// (puppeteer-core over WebDriver BiDi), each with a fake camera and microphone, decode each
// other's video — directly, through signalbox's relay over TURN/TLS on the HTTPS port reached by
// a host name (recording the SNI Firefox sends there), and over plain TURN/TCP on the HTTPS port
// reached by an IP address (Firefox opens no connection at all for `turns:` with an IP address,
// so that is its way through a network that only lets TCP to the HTTPS port out).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import {
  cleanupAll, expectVideoFlowing, joinRoom, joinRoomFirefox, launchFirefox, launchParticipant, roomName, startServer,
  startSniProxy,
} from './harness.mjs';

const TEST_TIMEOUT_MS = 120000;

/** TURN on loopback only; relaying between two loopback allocations is allowed. */
const TURN_TOML = [
  '[turn]',
  'listen = ["127.0.0.1:0"]',
  'listen_tcp = ["127.0.0.1:0"]',
  'listen_tls = ["127.0.0.1:0"]',
  'relay_ip = "127.0.0.1"',
  'secrets = ["browser-firefox-test-secret"]',
  'allow_loopback_peers = true',
].join('\n');

after(cleanupAll);

/**
 * Firefox warns on the console whenever a connection gets five or more STUN/TURN URLs, which the
 * server's full list (one per transport) is; the warning is about gathering time, not an error.
 */
const unexpected = (e) => !e.includes('Using five or more STUN/TURN servers slows down discovery');

/**
 * A server, a Chromium and a Firefox participant; both stop after the test, pass or fail.
 * `firefox(httpsPort, server)` gives Firefox's launch options.
 */
async function mixedCall(t, { publicHost = '127.0.0.1', chromium = {}, firefox = async () => ({}) } = {}) {
  const server = await startServer(TURN_TOML, { publicHost });
  t.after(() => server.stop());
  const httpsPort = Number(server.listeners.https.split(':').pop());
  const base = `https://${publicHost}:${httpsPort}`;
  const chrome = await launchParticipant('chromium', chromium);
  t.after(() => chrome.stop());
  const fox = await launchFirefox('firefox', await firefox(httpsPort, server));
  t.after(() => fox.stop());
  const url = `${base}/r/${roomName('mixed')}`;
  await joinRoom(chrome, url, 'Chromium');
  await joinRoomFirefox(fox, url, 'Firefox');
  const [c, f] = await Promise.all([
    expectVideoFlowing(chrome.page, { timeoutMs: 60000 }),
    expectVideoFlowing(fox.page, { timeoutMs: 60000 }),
  ]);
  assert.equal(c.peers, 1, 'Chromium has one connection');
  assert.equal(f.peers, 1, 'Firefox has one connection');
  for (const p of [chrome, fox]) assert.deepEqual(p.errors.filter(unexpected), [], `${p.label} logged errors`);
  return { server, chrome, fox, stats: { chromium: c, firefox: f } };
}

/** The ICE server URLs a page's peer connections were configured with. */
function configuredUrls(page) {
  return page.evaluate(() =>
    window.__signalboxPeers.flatMap((pc) => pc.getConfiguration().iceServers.flatMap((s) => [].concat(s.urls))),
  );
}

test('a Chromium and a Firefox participant decode each other\'s video directly', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { stats } = await mixedCall(t);
  for (const [who, s] of Object.entries(stats)) {
    assert.equal(s.pairs[0].state, 'connected', `${who}: ${JSON.stringify(s.pairs)}`);
    assert.notEqual(s.pairs[0].local, 'relay', `${who} talks directly: ${JSON.stringify(s.pairs)}`);
    assert.notEqual(s.pairs[0].remote, 'relay', `${who} talks directly: ${JSON.stringify(s.pairs)}`);
  }
});

test('Chromium and Firefox call through the relay, Firefox over TURN/TLS on the HTTPS port by host name', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // Firefox reaches the HTTPS port through a proxy that records the SNI of each ClientHello.
  let proxy = null;
  const { stats, fox } = await mixedCall(t, {
    publicHost: 'localhost',
    chromium: { forceRelay: true },
    firefox: async (port, server) => {
      proxy = await startSniProxy(server.listeners.https);
      t.after(() => proxy.stop());
      return {
        forceRelay: true,
        onlyIceUrl: `^turns:localhost:${port}\\?transport=tcp$`,
        rewriteIceUrl: [`:${port}\\?`, `:${proxy.port}?`],
      };
    },
  });
  for (const [who, s] of Object.entries(stats)) {
    assert.equal(s.pairs[0].local, 'relay', `${who} sends through the relay: ${JSON.stringify(s.pairs)}`);
    // The other side's relay address, learned from signaling or (peer-reflexive) from its
    // first connectivity check, whichever came first.
    assert.ok(['relay', 'prflx'].includes(s.pairs[0].remote), `${who}'s peer is relayed too: ${JSON.stringify(s.pairs)}`);
  }
  assert.equal(stats.firefox.pairs[0].relayProtocol, 'tls', `Firefox reaches the relay over TLS: ${JSON.stringify(stats.firefox.pairs)}`);
  const urls = await configuredUrls(fox.page);
  assert.deepEqual([...new Set(urls)], [`turns:localhost:${proxy.port}?transport=tcp`]);
  // What Firefox puts in its ClientHello for `turns:` with a host name: it names the host (SNI),
  // as Firefox 153 ESR does here. The server does not depend on it either way (the Rust stream
  // tests use TLS without SNI); this records the measurement the docs quote.
  assert.ok(proxy.hellos.length > 0, 'Firefox opened TURN over TLS through the proxy');
  assert.deepEqual([...new Set(proxy.hellos)], ['localhost'], `SNI in Firefox's TURN ClientHellos: ${JSON.stringify(proxy.hellos)}`);
  // The proxy tells a ClientHello without SNI apart (Node sends none to an IP address).
  await new Promise((ok, fail) => {
    const s = tlsConnect({ host: '127.0.0.1', port: proxy.port, rejectUnauthorized: false }, () => {
      s.end();
      ok();
    });
    s.on('error', fail);
  });
  assert.equal(proxy.hellos.at(-1), null);
});

test('Firefox relays over plain TURN/TCP on the HTTPS port when the host is an IP address', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { stats, fox, server } = await mixedCall(t, {
    chromium: { forceRelay: true },
    firefox: (port) => ({ forceRelay: true, onlyIceUrl: `^turn:127\\.0\\.0\\.1:${port}\\?transport=tcp$` }),
  });
  for (const [who, s] of Object.entries(stats)) {
    assert.equal(s.pairs[0].local, 'relay', `${who} sends through the relay: ${JSON.stringify(s.pairs)}`);
  }
  assert.equal(stats.firefox.pairs[0].relayProtocol, 'tcp', `Firefox reaches the relay over TCP: ${JSON.stringify(stats.firefox.pairs)}`);
  const urls = await configuredUrls(fox.page);
  assert.deepEqual([...new Set(urls)], [`turn:127.0.0.1:${server.listeners.https.split(':').pop()}?transport=tcp`]);
});

/**
 * Gathers ICE candidates in a Firefox page with one TURN URL and relay only; returns the relay
 * candidates found within `ms` (credentials in the REST scheme, made here from the test secret).
 */
async function relayCandidates(page, url, ms) {
  const username = `${Math.floor(Date.now() / 1000) + 600}:firefox-probe`;
  const credential = createHmac('sha1', 'browser-firefox-test-secret').update(username).digest('base64');
  return page.evaluate(async ({ url, username, credential, ms }) => {
    const pc = new RTCPeerConnection({ iceServers: [{ urls: url, username, credential }], iceTransportPolicy: 'relay' });
    const found = [];
    pc.onicecandidate = (e) => {
      if (e.candidate && / typ relay /.test(e.candidate.candidate)) found.push(e.candidate.candidate);
    };
    pc.createDataChannel('probe');
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((ok) => {
      const timer = setTimeout(ok, ms);
      pc.onicegatheringstatechange = () => {
        if (pc.iceGatheringState === 'complete') {
          clearTimeout(timer);
          ok();
        }
      };
    });
    pc.close();
    return found;
  }, { url, username, credential, ms });
}

test('Firefox opens no connection for turns: with an IP address, but does with a host name', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServer(TURN_TOML, { publicHost: 'localhost' });
  t.after(() => server.stop());
  const proxy = await startSniProxy(server.listeners.https);
  t.after(() => proxy.stop());
  const fox = await launchFirefox('firefox');
  t.after(() => fox.stop());
  await fox.page.goto(`${server.url}/`);

  const byIp = await relayCandidates(fox.page, `turns:127.0.0.1:${proxy.port}?transport=tcp`, 8000);
  assert.deepEqual(byIp, [], 'no relay candidate from turns: with an IP address');
  assert.equal(proxy.connections, 0, 'and not even a connection to it');

  const byName = await relayCandidates(fox.page, `turns:localhost:${proxy.port}?transport=tcp`, 15000);
  assert.ok(byName.length > 0, 'a relay candidate from turns: with a host name');
  assert.ok(proxy.hellos.length > 0, 'over TLS through the proxy');
});
