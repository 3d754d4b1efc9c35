// Socket.IO clients 2.x (Engine.IO v3) and 4.x (Engine.IO v4) drive every event of the three
// vocabularies against the real binary (docs/socketio.md).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import io2 from 'sio2';
import { io as io4 } from 'sio4';
import { startServer } from './server.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

const opened = [];
after(() => { for (const s of opened) s.close(); });

/** A connected client of `version` (2 or 4) over `transports`. */
async function connect(version, { transports = ['websocket'], extraHeaders, url = server.url } = {}) {
  const opts = { transports, rejectUnauthorized: false, reconnection: false, forceNew: true, extraHeaders };
  const socket = version === 2 ? io2(url, opts) : io4(url, opts);
  opened.push(socket);
  const inbox = [];
  const waiters = [];
  const onAny = (event, ...args) => {
    const w = waiters.findIndex((x) => x.event === event);
    if (w >= 0) waiters.splice(w, 1)[0].resolve(args);
    else inbox.push({ event, args });
  };
  if (version === 4) socket.onAny(onAny);
  else {
    const emit = socket.onevent.bind(socket);
    socket.onevent = (packet) => { onAny(...packet.data); emit(packet); };
  }
  socket.next = (event, ms = 3000) => {
    const i = inbox.findIndex((x) => x.event === event);
    if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0].args);
    return new Promise((resolve, reject) => {
      const w = { event, resolve };
      waiters.push(w);
      setTimeout(() => {
        const at = waiters.indexOf(w);
        if (at >= 0) { waiters.splice(at, 1); reject(new Error(`no \`${event}\` within ${ms} ms; got ${JSON.stringify(inbox.map((x) => x.event))}`)); }
      }, ms);
    });
  };
  /** Asserts that no `event` arrives within `ms`. */
  socket.none = async (event, ms = 300) => {
    await new Promise((r) => setTimeout(r, ms));
    assert.ok(!inbox.some((x) => x.event === event), `unexpected \`${event}\``);
  };
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
    socket.once('error', reject);
  });
  return socket;
}

const room = () => `room-${Math.random().toString(36).slice(2)}`;

for (const version of [2, 4]) {
  for (const transport of ['websocket', 'polling']) {
    test(`client ${version}.x over ${transport} gets iceServers with TURN credentials on connect`, async () => {
      const a = await connect(version, { transports: [transport] });
      const [list] = await a.next('iceServers');
      const turn = list.find((s) => s.username);
      assert.ok(turn, JSON.stringify(list));
      assert.match(turn.username, /^\d+:~@socket\.io:/);
      assert.ok(turn.username.endsWith(a.id), `${turn.username} names ${a.id}`);
      assert.ok(turn.credential.length > 10);
      a.close();
    });
  }

  test(`codelab vocabulary with client ${version}.x: created, joined, ready, full, message, ipaddr, bye`, async () => {
    const r = room();
    const a = await connect(version);
    const b = await connect(version);
    const c = await connect(version);
    a.emit('create or join', r);
    assert.deepEqual(await a.next('created'), [r, a.id]);
    b.emit('create or join', r);
    assert.deepEqual(await a.next('join'), [r]);
    assert.deepEqual(await b.next('joined'), [r, b.id]);
    await a.next('ready');
    await b.next('ready');
    c.emit('create or join', r);
    assert.deepEqual(await c.next('full'), [r]);
    a.emit('message', { type: 'offer', sdp: 'v=0' });
    assert.deepEqual(await b.next('message'), [{ type: 'offer', sdp: 'v=0' }]);
    await c.none('message');
    await a.none('message', 0);
    a.emit('ipaddr');
    assert.deepEqual(await a.next('ipaddr'), ['127.0.0.1']);
    b.emit('bye');
    // `bye` has no answer, and two sockets' events are not ordered with each other.
    await new Promise((res) => setTimeout(res, 200));
    c.emit('create or join', r);
    assert.deepEqual(await c.next('joined'), [r, c.id]);
    b.emit('message', 'got user media');
    const [err] = await b.next('error');
    assert.equal(err.code, 'not-in-room');
    for (const s of [a, b, c]) s.close();
  });

  test(`room-call vocabulary with client ${version}.x: join, start_call, webrtc_*`, async () => {
    const r = room();
    const a = await connect(version);
    const b = await connect(version, { transports: ['polling'] });
    const c = await connect(version);
    a.emit('join', r);
    assert.deepEqual(await a.next('room_created'), [r]);
    b.emit('join', r);
    assert.deepEqual(await b.next('room_joined'), [r]);
    c.emit('join', r);
    assert.deepEqual(await c.next('full_room'), [r]);
    b.emit('start_call', r);
    await a.next('start_call');
    a.emit('webrtc_offer', { roomId: r, sdp: { type: 'offer', sdp: 'o' } });
    assert.deepEqual(await b.next('webrtc_offer'), [{ type: 'offer', sdp: 'o' }]);
    b.emit('webrtc_answer', { roomId: r, sdp: { type: 'answer', sdp: 'a' } });
    assert.deepEqual(await a.next('webrtc_answer'), [{ type: 'answer', sdp: 'a' }]);
    const cand = { roomId: r, label: 0, candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host' };
    a.emit('webrtc_ice_candidate', cand);
    assert.deepEqual(await b.next('webrtc_ice_candidate'), [cand]);
    // An outsider cannot signal into the room.
    c.emit('webrtc_offer', { roomId: r, sdp: 'x' });
    assert.equal((await c.next('error'))[0].code, 'not-in-room');
    await a.none('webrtc_offer');
    // A peer that disconnects frees its place.
    b.close();
    await new Promise((res) => setTimeout(res, 300));
    c.emit('join', r);
    assert.deepEqual(await c.next('room_joined'), [r]);
    a.close();
    c.close();
  });

  test(`user-list vocabulary with client ${version}.x: updateUserlist, offer, answer, refuse, iceCandidate, disconnectPeer`, async () => {
    const a = await connect(version);
    const b = await connect(version);
    let [list] = await b.next('updateUserlist');
    assert.ok(list.userList.includes(a.id) && list.userList.includes(b.id), JSON.stringify(list));
    b.emit('offer', { to: a.id, from: 'forged', offerSDP: 'o', offerType: 'offer', audioOnly: true });
    assert.deepEqual(await a.next('offer'), [{ from: b.id, offerSDP: 'o', offerType: 'offer', audioOnly: true }]);
    a.emit('answer', { to: b.id, from: 'forged', answerSDP: 's', answerType: 'answer' });
    assert.deepEqual(await b.next('answer'), [{ from: a.id, answerSDP: 's', answerType: 'answer' }]);
    a.emit('iceCandidate', { to: b.id, candidate: 'c', sdpMid: '0', sdpMLineIndex: 0 });
    assert.deepEqual(await b.next('remoteIceCandidate'), [{ from: a.id, candidate: 'c', sdpMid: '0', sdpMLineIndex: 0, to: b.id }]);
    a.emit('refuse', { to: b.id });
    assert.deepEqual(await b.next('refuse'), [{ from: a.id }]);
    b.emit('disconnectPeer', { to: a.id });
    assert.deepEqual(await a.next('disconnectPeer'), [{ from: b.id }]);
    b.emit('offer', { to: 'no-such-socket', offerSDP: 'o' });
    assert.equal((await b.next('error'))[0].code, 'unknown-peer');
    const gone = a.id;
    // Drain the lists seen so far, then watch for the one without `a`.
    a.close();
    for (let i = 0; i < 10; i += 1) {
      [list] = await b.next('updateUserlist');
      if (!list.userList.includes(gone)) break;
    }
    assert.ok(!list.userList.includes(gone));
    b.close();
  });

  test(`bad payloads with client ${version}.x get an error event`, async () => {
    const a = await connect(version);
    a.emit('join', { not: 'a string' });
    assert.equal((await a.next('error'))[0].code, 'bad-request');
    a.emit('offer', 'no object');
    assert.equal((await a.next('error'))[0].code, 'bad-request');
    a.emit('message', 'x'.repeat(70000));
    assert.equal((await a.next('error'))[0].code, 'too-large');
    a.emit('ipaddr');
    await a.next('ipaddr');
    a.close();
  });
}

test('a burst beyond [rooms] rate_burst is rate-limited', async () => {
  const a = await connect(4);
  for (let i = 0; i < 260; i += 1) a.emit('ipaddr');
  assert.equal((await a.next('error', 5000))[0].code, 'rate-limited');
  a.close();
});

test('a page of a foreign origin is refused, a listed one is let in', async () => {
  await assert.rejects(connect(4, { transports: ['polling'], extraHeaders: { Origin: 'https://evil.example' } }));
  const a = await connect(4, { transports: ['polling'], extraHeaders: { Origin: new URL(server.url).origin } });
  a.close();
});

test('/socket.io/socket.io.js is the vendored 4.x client', async () => {
  const body = await new Promise((resolve, reject) => {
    https.get(`${server.url}/socket.io/socket.io.js`, { rejectUnauthorized: false }, (res) => {
      assert.equal(res.statusCode, 200);
      assert.match(res.headers['content-type'], /javascript/);
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve(text));
    }).on('error', reject);
  });
  assert.match(body, /Socket\.IO v4\./);
});

test('connects beyond [compat] connect_rate_per_ip are refused with a message naming the limit', async () => {
  const limited = await startServer('[compat]\nsocketio = true\nconnect_rate_per_ip = 2');
  try {
    for (let i = 0; i < 2; i += 1) (await connect(4, { url: limited.url })).close();
    for (const version of [4, 2]) {
      const err = await connect(version, { url: limited.url }).then(() => null, (e) => e);
      assert.ok(err, `client ${version}.x was let in`);
      assert.match(String(err.message ?? err), /^rate-limited: more than 2 connects per minute/);
    }
  } finally {
    await limited.stop();
  }
});

test('on SIGTERM every socket gets server-shutdown, then a server disconnect when the grace ends', async () => {
  const draining = await startServer();
  try {
    const sockets = [await connect(2, { url: draining.url }), await connect(4, { url: draining.url })];
    const reasons = sockets.map((s) => new Promise((res) => s.once('disconnect', res)));
    draining.signal('SIGTERM');
    for (const s of sockets) assert.deepEqual(await s.next('server-shutdown'), [{ grace_s: 1, reconnect: false }]);
    // A server disconnect: socket.io-client does not reconnect by itself after it.
    for (const r of reasons) assert.equal(await r, 'io server disconnect');
  } finally {
    await draining.stop();
  }
});
