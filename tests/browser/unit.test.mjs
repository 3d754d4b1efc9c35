// The app's pure modules, run directly in node: room and space names, the statistics summary,
// the client module's address helper, and its reaction to a draining server (on a fake socket).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomRoomName, isValidRoom, parseRoomInput, roomFromPath, spaceFromPath, tokenFromHash, ROOM_NAME_BITS } from '../../public/js/names.js';
import { summarize, describePath, formatBitrate } from '../../public/js/stats.js';
import { signalingUrl, Signaling } from '../../public/sdk/signalbox.js';

test('random room names are readable and valid under the protocol rule', () => {
  const names = new Set();
  for (let i = 0; i < 200; i++) {
    const name = randomRoomName();
    assert.match(name, /^[a-z]+-[a-z]+-[a-z]+-[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}$/);
    assert.ok(isValidRoom(name));
    names.add(name);
  }
  assert.equal(names.size, 200, 'no repeats among 200 names');
});

test('a generated room name carries at least 64 bits of randomness', () => {
  assert.ok(ROOM_NAME_BITS >= 64, `${ROOM_NAME_BITS} bits`);
  // Every tail symbol shows up: the tail really draws from all 32.
  const seen = new Set();
  for (let i = 0; i < 400; i++) for (const ch of randomRoomName().split('-').slice(3).join('')) seen.add(ch);
  assert.equal(seen.size, 32);
});

test('room names follow the server rule', () => {
  assert.ok(isValidRoom('team-standup_2.0'));
  assert.ok(isValidRoom('a'.repeat(64)));
  assert.ok(!isValidRoom(''));
  assert.ok(!isValidRoom('a'.repeat(65)));
  assert.ok(!isValidRoom('a b'));
  assert.ok(!isValidRoom('ä'));
  assert.ok(!isValidRoom('../x'));
});

test('a pasted link or a bare name both lead to the room, keeping the token', () => {
  assert.deepEqual(parseRoomInput('  calm-otter '), { room: 'calm-otter', hash: '' });
  assert.deepEqual(parseRoomInput('https://calls.example.org/r/calm-otter#token=T'), { room: 'calm-otter', hash: '#token=T' });
  assert.deepEqual(parseRoomInput('/r/calm-otter/'), { room: 'calm-otter', hash: '' });
  assert.equal(parseRoomInput('https://calls.example.org/elsewhere'), null);
  assert.equal(parseRoomInput('two words'), null);
  assert.equal(parseRoomInput(''), null);
  assert.equal(roomFromPath('/r/%E2%82%AC'), null);
  assert.equal(roomFromPath('/r/%zz'), null);
  assert.equal(tokenFromHash('#token=abc.def'), 'abc.def');
  assert.equal(tokenFromHash('#other=1'), null);
  assert.equal(tokenFromHash(''), null);
});

/** A stats report as Chromium shapes it: a Map of id → stats object. */
function report(entries) {
  return new Map(entries.map((e) => [e.id, e]));
}

function call({ localType, remoteType, received, sent, rtt = 0.012 }) {
  return report([
    { id: 'T', type: 'transport', selectedCandidatePairId: 'P' },
    { id: 'P', type: 'candidate-pair', localCandidateId: 'L', remoteCandidateId: 'R', currentRoundTripTime: rtt },
    { id: 'L', type: 'local-candidate', candidateType: localType, protocol: 'udp', relayProtocol: localType === 'relay' ? 'tls' : undefined },
    { id: 'R', type: 'remote-candidate', candidateType: remoteType },
    { id: 'V', type: 'inbound-rtp', kind: 'video', bytesReceived: received, framesDecoded: 10 },
    { id: 'O', type: 'outbound-rtp', kind: 'video', bytesSent: sent },
  ]);
}

test('the path is "relay" when either end of the selected pair is relayed', () => {
  assert.equal(summarize(call({ localType: 'host', remoteType: 'srflx', received: 0, sent: 0 }), null).summary.path, 'direct');
  assert.equal(summarize(call({ localType: 'relay', remoteType: 'host', received: 0, sent: 0 }), null).summary.path, 'relay');
  assert.equal(summarize(call({ localType: 'srflx', remoteType: 'relay', received: 0, sent: 0 }), null).summary.path, 'relay');
  const { summary } = summarize(call({ localType: 'relay', remoteType: 'relay', received: 0, sent: 0 }), null);
  assert.equal(summary.protocol, 'tls');
  assert.equal(summarize(report([]), null).summary.path, 'unknown');
});

test('bitrate comes from the byte counters between two samples', () => {
  const first = summarize(call({ localType: 'host', remoteType: 'host', received: 1000, sent: 500 }), null);
  assert.equal(first.summary.inKbps, null, 'no rate from a single sample');
  const earlier = { ...first.sample, at: first.sample.at - 2000 };
  const second = summarize(call({ localType: 'host', remoteType: 'host', received: 251000, sent: 500 }), earlier);
  // 250,000 bytes in about 2 s is about 1 Mb/s.
  assert.ok(Math.abs(second.summary.inKbps - 1000) < 20, `got ${second.summary.inKbps}`);
  assert.equal(second.summary.rttMs, 12);
  assert.equal(describePath({ ...second.summary, inKbps: 1000 }), 'direct · 12 ms · 1.0 Mb/s');
  assert.equal(formatBitrate(640), '640 kb/s');
  assert.equal(formatBitrate(null), '–');
});

test('a space comes from a path /s/{space} and follows the room name rule', () => {
  assert.equal(spaceFromPath('/s/calm-otter-lantern-7k3mq-9xd4f'), 'calm-otter-lantern-7k3mq-9xd4f');
  assert.equal(spaceFromPath('/s/team.support_2/'), 'team.support_2');
  assert.equal(spaceFromPath('/s/'), null);
  assert.equal(spaceFromPath('/s/two%20words'), null);
  assert.equal(spaceFromPath(`/s/${'a'.repeat(65)}`), null);
  assert.equal(spaceFromPath('/r/calm-otter'), null);
  assert.equal(roomFromPath('/s/calm-otter'), null);
});

test('the client module finds the signaling endpoint of a server by its origin', () => {
  assert.equal(signalingUrl('https://calls.example.org'), 'wss://calls.example.org/ws');
  assert.equal(signalingUrl('https://calls.example.org:8443/some/page'), 'wss://calls.example.org:8443/ws');
  assert.equal(signalingUrl('https://[::1]:8443'), 'wss://[::1]:8443/ws');
  assert.equal(signalingUrl('http://localhost:8080'), 'ws://localhost:8080/ws');
});

/** A WebSocket the test drives by hand: it records what the client sends and closes. */
class FakeSocket {
  static OPEN = 1;
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.made.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code) {
    this.closedWith = code;
    this.readyState = 3;
  }
  accept() {
    this.readyState = FakeSocket.OPEN;
    this.onopen();
  }
  receive(msg) {
    this.onmessage({ data: JSON.stringify(msg) });
  }
}

/** A `Signaling` in room `r` on a fake socket, joined as `p1` with resume token `tok`. */
function joinedOnFake(t) {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  FakeSocket.made = [];
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = FakeSocket;
  t.after(() => {
    globalThis.WebSocket = saved;
  });
  const s = new Signaling({ url: 'wss://calls.example.org/ws', room: 'r' });
  const shutdowns = [];
  s.addEventListener('server-shutdown', (e) => shutdowns.push(e.detail));
  s.connect();
  const ws = FakeSocket.made[0];
  ws.accept();
  ws.receive({ type: 'joined', room: 'r', id: 'p1', peers: [], iceServers: [], resume: 'tok', host: true, locked: false });
  t.after(() => s.stop());
  return { s, ws, shutdowns };
}

test('a server-shutdown with reconnect moves to a new socket within a second and resumes', (t) => {
  t.mock.method(Math, 'random', () => 0.999);
  const { s, ws, shutdowns } = joinedOnFake(t);
  ws.receive({ type: 'server-shutdown', grace_s: 30, reconnect: true });
  assert.deepEqual(shutdowns, [{ type: 'server-shutdown', grace_s: 30, reconnect: true }]);
  t.mock.timers.tick(998);
  assert.equal(FakeSocket.made.length, 1, 'not before the random delay');
  t.mock.timers.tick(1);
  assert.equal(ws.closedWith, 1000);
  assert.equal(FakeSocket.made.length, 2);
  const moved = FakeSocket.made[1];
  moved.accept();
  assert.deepEqual(moved.sent, [{ type: 'join', room: 'r', name: '', resume: 'tok' }]);
  assert.equal(s.state, 'reconnecting');
});

test('a server-shutdown without reconnect leaves the socket to the server', (t) => {
  const { ws, shutdowns } = joinedOnFake(t);
  ws.receive({ type: 'server-shutdown', grace_s: 30, reconnect: false });
  assert.equal(shutdowns.length, 1);
  t.mock.timers.tick(20000);
  assert.equal(FakeSocket.made.length, 1);
  assert.equal(ws.closedWith, null);
});
