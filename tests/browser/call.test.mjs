// Real calls in real browsers: the signalbox binary, one headless Chromium per participant with
// a fake camera and microphone, everything on loopback.
//
// Run with `npm test --prefix tests/browser` after `cargo build`.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  REPO, cleanupAll, ensureArtifacts, expectVideoFlowing, joinRoom, launchParticipant, mediaStats,
  remoteTiles, roomName, startServer,
} from './harness.mjs';

const TEST_TIMEOUT_MS = 90000;

after(cleanupAll);

/** Starts a server and `names.length` browsers; stops them all after the test, pass or fail. */
async function setup(t, names, extraToml = '') {
  const server = await startServer(extraToml);
  t.after(() => server.stop());
  const people = [];
  for (const name of names) {
    const p = await launchParticipant(name);
    t.after(() => p.stop());
    people.push(p);
  }
  return { server, people };
}

/** Collects the `joined` messages a participant's page receives over its WebSocket. */
function recordJoined(participant) {
  const seen = [];
  participant.page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      try {
        const msg = JSON.parse(String(payload));
        if (msg.type === 'joined') seen.push(msg);
      } catch {
        // not JSON: not ours to check here
      }
    });
  });
  return seen;
}

/** Counts the SDP descriptions (and among them offers) a participant sends from now on. */
function countDescriptionsSent(participant) {
  const counter = { count: 0, offers: 0 };
  for (const ws of participant.wsList || []) watch(ws);
  participant.page.on('websocket', watch);
  function watch(ws) {
    ws.on('framesent', ({ payload }) => {
      const text = String(payload);
      if (text.includes('"kind":"description"')) counter.count += 1;
      if (text.includes('"type":"offer"')) counter.offers += 1;
    });
  }
  return counter;
}

function assertNoConsoleErrors(...people) {
  for (const p of people) assert.deepEqual(p.errors, [], `${p.label} logged errors`);
}

test('the landing page creates a readable room and joins one from a pasted link', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice] } = await setup(t, ['alice']);
  const page = alice.page;
  await page.goto(`${server.url}/`);
  const suggested = await page.getByLabel('Room name', { exact: true }).inputValue();
  assert.match(suggested, /^[a-z]+-[a-z]+-[a-z]+-[0-9a-z]{5}-[0-9a-z]{5}$/);
  assert.equal(await page.locator('#create-link').textContent(), `${server.url}/r/${suggested}`);
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.waitForURL(`${server.url}/r/${suggested}`);
  await page.getByRole('button', { name: 'Join', exact: true }).waitFor();

  await page.goto(`${server.url}/`);
  await page.getByLabel('Room name or link').fill(`${server.url}/r/weekly.sync_2#token=abc`);
  await page.getByRole('button', { name: 'Go to room' }).click();
  await page.waitForURL(`${server.url}/r/weekly.sync_2#token=abc`);
  assert.equal(await page.locator('#prejoin-room').textContent(), 'weekly.sync_2');
  // The access token stays in the link people copy.
  assert.equal(await page.locator('#prejoin-link').textContent(), `${server.url}/r/weekly.sync_2#token=abc`);
  assertNoConsoleErrors(alice);
});

test('at phone width no screen scrolls sideways', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const alice = await launchParticipant('alice', { viewport: { width: 360, height: 740 } });
  t.after(() => alice.stop());
  const page = alice.page;
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.goto(`${server.url}/`);
  assert.equal(await overflow(), 0, 'landing page');
  await joinRoom(alice, `${server.url}/r/${'a-long-room-name-that-must-not-push-the-layout-wider'}`, 'Alice');
  assert.equal(await overflow(), 0, 'call');
  await page.getByRole('button', { name: 'Chat' }).click();
  assert.equal(await overflow(), 0, 'call with chat open');
  await page.getByRole('button', { name: 'Leave call' }).click();
  assert.equal(await overflow(), 0, 'left the call');
  await page.getByRole('button', { name: 'Rejoin' }).click();
  await page.getByRole('button', { name: 'Join', exact: true }).waitFor();
  assert.equal(await overflow(), 0, 'pre-join');
  assertNoConsoleErrors(alice);
});

test('joining and the call controls work from the keyboard alone', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice] } = await setup(t, ['alice']);
  const page = alice.page;
  await page.goto(`${server.url}/r/${roomName('keys')}`);
  // The name field has focus; Enter submits the pre-join form, which is the Join button.
  await page.getByLabel('Your name').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'display-name');
  await page.keyboard.type('Alice');
  await page.keyboard.press('Enter');
  await page.locator('#call').waitFor({ state: 'visible' });

  // Tab reaches the mute button (bounded walk), and Space toggles it.
  let found = false;
  for (let i = 0; i < 30 && !found; i++) {
    await page.keyboard.press('Tab');
    found = (await page.evaluate(() => document.activeElement.id)) === 'btn-mic';
  }
  assert.ok(found, 'the mute button is reachable with Tab');
  await page.keyboard.press('Space');
  await page.getByRole('button', { name: 'Unmute microphone', pressed: true }).waitFor();

  // Every visible control has an accessible name.
  const unnamed = await page.evaluate(() =>
    [...document.querySelectorAll('#call button')]
      .filter((b) => b.offsetParent !== null)
      .filter((b) => !(b.getAttribute('aria-label') || b.textContent.trim()))
      .map((b) => b.outerHTML.slice(0, 80)),
  );
  assert.deepEqual(unnamed, []);
  assertNoConsoleErrors(alice);
});

test('two participants who click Join each decode the other\'s video', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/r/${roomName('pair')}`;
  const joined = recordJoined(alice);

  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');

  const [a, b] = await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assert.equal(a.peers, 1);
  assert.equal(b.peers, 1);
  // Each side shows the other by name, and the path indicator reports the loopback path.
  await remoteTiles(alice.page).filter({ hasText: 'Bob' }).waitFor();
  await remoteTiles(bob.page).filter({ hasText: 'Alice' }).waitFor();
  await alice.page.locator('#grid .tile:not(.local) .path-badge[data-path="direct"]').waitFor();
  assert.deepEqual(a.pairs.map((p) => p.local), ['host']);
  // The connection uses exactly the ICE servers the server sent in `joined`, nothing else.
  const configured = await alice.page.evaluate(() => window.__signalboxPeers.map((pc) => pc.getConfiguration().iceServers));
  assert.ok(joined.length > 0, 'saw the joined message');
  assert.deepEqual(configured[0].map((s) => [].concat(s.urls)), joined[0].iceServers.map((s) => [].concat(s.urls)));

  // Chat goes over the data channel once it is open, not through the server.
  const sentOverSignaling = [];
  for (const ws of alice.wsList) ws.on('framesent', ({ payload }) => sentOverSignaling.push(String(payload)));
  await alice.page.waitForFunction(() => window.__signalboxChannels[0].readyState === 'open');
  await alice.page.getByRole('button', { name: 'Chat' }).click();
  await alice.page.getByRole('textbox', { name: 'Message', exact: true }).fill('hello from alice');
  await alice.page.getByRole('button', { name: 'Send message' }).click();
  await bob.page.locator('#chat-log .chat-text', { hasText: 'hello from alice' }).waitFor({ state: 'attached' });
  assert.ok(!sentOverSignaling.some((f) => f.includes('hello from alice')), 'chat did not go through the server');

  assertNoConsoleErrors(alice, bob);
});

test('chat still arrives through signaling when no data channel can open', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  // Both browsers get a data channel that never opens, as behind a middlebox that breaks SCTP.
  for (const p of [alice, bob]) {
    await p.context.addInitScript(() => {
      RTCPeerConnection.prototype.createDataChannel = function createDataChannel(label) {
        const channel = new EventTarget();
        Object.assign(channel, { label, readyState: 'connecting', close() {}, send() { throw new Error('not open'); } });
        return channel;
      };
    });
  }
  const url = `${server.url}/r/${roomName('fallback')}`;
  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  await expectVideoFlowing(bob.page);
  const sentOverSignaling = [];
  for (const ws of alice.wsList) ws.on('framesent', ({ payload }) => sentOverSignaling.push(String(payload)));

  await alice.page.getByRole('button', { name: 'Chat' }).click();
  await alice.page.getByRole('textbox', { name: 'Message', exact: true }).fill('no channel, still here');
  await alice.page.keyboard.press('Enter');
  await bob.page.locator('#chat-log .chat-text', { hasText: 'no channel, still here' }).waitFor({ state: 'attached' });
  assert.ok(sentOverSignaling.some((f) => f.includes('"kind":"chat"')), 'the chat went as a signal');
  // Bob was told by toast, and the chat button counts the unread message.
  await bob.page.getByRole('button', { name: 'Chat, 1 unread' }).waitFor();
  assertNoConsoleErrors(alice, bob);
});

test('a third participant in a room of two sees that the room is full', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob, carol] } = await setup(t, ['alice', 'bob', 'carol'], '[rooms]\nmax_peers = 2\n');
  const url = `${server.url}/r/${roomName('full')}`;

  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);

  await carol.page.goto(url);
  await carol.page.getByLabel('Your name').fill('Carol');
  await carol.page.getByRole('button', { name: 'Join', exact: true }).click();
  const heading = carol.page.getByRole('heading', { name: 'This room is full' });
  await heading.waitFor();
  assert.equal(await remoteTiles(alice.page).count(), 1, 'the full room did not grow');
  assertNoConsoleErrors(alice, bob, carol);
});

test('joining with audio only sends no video, and turning the camera on later renegotiates', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/r/${roomName('audio-only')}`;
  // Bob is first, so Alice's offer creates his video transceiver as receive-only.
  await bob.page.goto(url);
  await bob.page.getByLabel('Your name').fill('Bob');
  await bob.page.getByRole('button', { name: 'Join with audio only' }).click();
  await bob.page.locator('#call').waitFor({ state: 'visible' });
  await joinRoom(alice, url, 'Alice');

  await expectVideoFlowing(bob.page);
  await alice.page.locator('#grid .tile.no-video:not(.local)', { hasText: 'Bob' }).waitFor();
  const bobSends = await bob.page.evaluate(() => window.__signalboxPeers[0].getSenders().filter((s) => s.track).map((s) => s.track.kind));
  assert.deepEqual(bobSends, ['audio']);
  // His camera is off (not just dark) and the button offers to turn it on.
  assert.equal(await bob.page.evaluate(() => document.querySelector('#grid .tile.local').classList.contains('no-video')), true);
  await bob.page.getByRole('button', { name: 'Turn camera on', pressed: true }).click();

  await expectVideoFlowing(alice.page);
  await alice.page.locator('#grid .tile:not(.local):not(.no-video)', { hasText: 'Bob' }).waitFor();
  assertNoConsoleErrors(alice, bob);
});

test('a participant whose camera is blocked is told so, joins with audio, and is shown by name', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const alice = await launchParticipant('alice');
  t.after(() => alice.stop());
  const bob = await launchParticipant('bob', { blockCamera: true });
  t.after(() => bob.stop());
  const url = `${server.url}/r/${roomName('blocked')}`;

  await joinRoom(alice, url, 'Alice');
  await bob.page.goto(url);
  await bob.page.getByRole('status').filter({ hasText: 'Camera blocked' }).waitFor();
  await bob.page.getByLabel('Your name').fill('Bob');
  await bob.page.getByRole('button', { name: 'Join', exact: true }).click();
  await bob.page.locator('#call').waitFor({ state: 'visible' });

  // Bob still sees Alice; Alice hears Bob and sees his initials instead of a black picture.
  await expectVideoFlowing(bob.page);
  const tile = remoteTiles(alice.page).filter({ hasText: 'Bob' });
  await tile.waitFor();
  await alice.page.locator('#grid .tile.no-video:not(.local)', { hasText: 'Bob' }).waitFor();
  const before = (await mediaStats(alice.page)).audioBytesReceived;
  await alice.page.waitForTimeout(1000);
  assert.ok((await mediaStats(alice.page)).audioBytesReceived > before, 'audio from Bob keeps arriving');
  assertNoConsoleErrors(alice, bob);
});

test('switching camera, muting and turning the camera off mid-call reach the other side without renegotiating a switch', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/r/${roomName('controls')}`;
  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  const offers = countDescriptionsSent(alice);
  const sentVideoLabel = () =>
    alice.page.evaluate(() => {
      const sender = window.__signalboxPeers[0].getSenders().find((s) => s.track && s.track.kind === 'video');
      return sender ? sender.track.label : null;
    });
  const before = await sentVideoLabel();

  await alice.page.getByRole('button', { name: 'Camera and microphone settings' }).click();
  const select = alice.page.locator('#call-camera-select');
  // The last fake camera: Chromium's second fake device is a 16-bit depth camera that video
  // encoders cannot take, the third an ordinary one (harness asks for three).
  const other = (await select.locator('option').allTextContents()).filter((label) => label !== before).pop();
  assert.ok(other, 'the fake device offers a second camera');
  await select.selectOption({ label: other });
  await alice.page.waitForFunction((label) => {
    const sender = window.__signalboxPeers[0].getSenders().find((s) => s.track && s.track.kind === 'video');
    return sender && sender.track.label === label;
  }, other);
  await expectVideoFlowing(bob.page);
  assert.equal(offers.count, 0, 'replaceTrack needs no new offer');

  const aliceOnBob = remoteTiles(bob.page).filter({ hasText: 'Alice' });
  await alice.page.getByRole('button', { name: 'Mute microphone' }).click();
  await aliceOnBob.locator('.muted-icon.on').waitFor();
  await alice.page.getByRole('button', { name: 'Turn camera off' }).click();
  await bob.page.locator('#grid .tile.no-video:not(.local)', { hasText: 'Alice' }).waitFor();
  await alice.page.getByRole('button', { name: 'Turn camera on' }).click();
  await bob.page.locator('#grid .tile:not(.local):not(.no-video)', { hasText: 'Alice' }).waitFor();
  await expectVideoFlowing(bob.page);
  assertNoConsoleErrors(alice, bob);
});

test('hanging up removes the tile on the other side', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/r/${roomName('hangup')}`;

  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  await expectVideoFlowing(alice.page);
  assert.equal(await remoteTiles(alice.page).count(), 1);

  await bob.page.getByRole('button', { name: 'Leave call' }).click();
  await bob.page.getByRole('heading', { name: 'You left the call' }).waitFor();
  await remoteTiles(alice.page).first().waitFor({ state: 'detached', timeout: 10000 });
  assert.equal(await remoteTiles(alice.page).count(), 0);
  // Alice is alone again and sees the invitation card; her connection to Bob is closed.
  await alice.page.locator('#waiting-card').waitFor();
  assert.equal((await mediaStats(alice.page)).peers, 0);
  assertNoConsoleErrors(alice, bob);
});

test('a page reload rejoins the call and video resumes both ways', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/r/${roomName('reload')}`;

  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);

  await bob.page.reload();
  // Straight back into the call, without the pre-join screen.
  await bob.page.locator('#call').waitFor({ state: 'visible' });
  const [a, b] = await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assert.equal(b.peers, 1);
  assert.equal(a.peers, 1, 'the connection to the old page is gone');
  assert.equal(await remoteTiles(alice.page).count(), 1, 'exactly one tile for Bob');
  await remoteTiles(bob.page).filter({ hasText: 'Alice' }).waitFor();
  assertNoConsoleErrors(alice, bob);
});

test('a dropped signaling connection resumes the same seat and the media connection carries on', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/r/${roomName('resume')}`;
  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  const bobLeft = bob.page.getByRole('status').filter({ hasText: 'Alice left' });

  // Cut Alice's WebSocket without a `leave`; the app reconnects and sends its resume token.
  await alice.page.evaluate(() => window.__signalboxSockets[0].close());
  await alice.page.waitForFunction(() => window.__signalboxSockets.length === 2 && window.__signalboxSockets[1].readyState === WebSocket.OPEN);
  await alice.page.locator('#conn-dot[data-state="connected"]').waitFor({ state: 'attached' });

  // Same id, so nobody saw her leave and no new peer connection was needed.
  const [a, b] = await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assert.equal(await bobLeft.count(), 0, 'Bob was not told that Alice left');
  assert.equal(await alice.page.evaluate(() => window.__signalboxPeers.length), 1);
  assert.equal(await bob.page.evaluate(() => window.__signalboxPeers.length), 1);
  assert.equal(a.peers, 1);
  assert.equal(b.peers, 1);

  // Signaling works over the new socket: an ICE restart from Alice (what the app does when a
  // path fails) is offered, answered, and media keeps flowing.
  const remoteUfrag = (page) =>
    page.evaluate(() => (/a=ice-ufrag:(\S+)/.exec(window.__signalboxPeers[0].currentRemoteDescription?.sdp || '') || [])[1]);
  const before = await remoteUfrag(bob.page);
  await alice.page.evaluate(() => window.__signalboxPeers[0].restartIce());
  await bob.page.waitForFunction(
    (old) => (/a=ice-ufrag:(\S+)/.exec(window.__signalboxPeers[0].currentRemoteDescription?.sdp || '') || [])[1] !== old,
    before,
  );
  await alice.page.waitForFunction(() => window.__signalboxPeers[0].signalingState === 'stable');
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assertNoConsoleErrors(alice, bob);
});

test('when both sides renegotiate at the same moment, the offers collide and the call carries on', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/r/${roomName('glare')}`;
  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  const aliceOffers = countDescriptionsSent(alice);
  const bobOffers = countDescriptionsSent(bob);
  const localUfrag = (page) =>
    page.evaluate(() => (/a=ice-ufrag:(\S+)/.exec(window.__signalboxPeers[0].currentLocalDescription?.sdp || '') || [])[1]);
  const before = [await localUfrag(alice.page), await localUfrag(bob.page)];

  // Both restart ICE at once: each makes an offer before it sees the other's.
  await Promise.all([
    alice.page.evaluate(() => window.__signalboxPeers[0].restartIce()),
    bob.page.evaluate(() => window.__signalboxPeers[0].restartIce()),
  ]);
  for (const [p, old] of [[alice, before[0]], [bob, before[1]]]) {
    await p.page.waitForFunction(
      (o) => {
        const pc = window.__signalboxPeers[0];
        const ufrag = (/a=ice-ufrag:(\S+)/.exec(pc.currentLocalDescription?.sdp || '') || [])[1];
        return pc.signalingState === 'stable' && ufrag !== o;
      },
      old,
    );
  }
  // Each side offered; had either seen the other's offer first, answering it would have
  // done its restart too and it would not have offered at all.
  assert.ok(aliceOffers.offers >= 1 && bobOffers.offers >= 1, `both offered: ${JSON.stringify([aliceOffers, bobOffers])}`);
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assertNoConsoleErrors(alice, bob);
});

test('after the server restarts, both sides reconnect on their own and the call comes back', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const first = await startServer();
  t.after(() => first.stop());
  const alice = await launchParticipant('alice');
  t.after(() => alice.stop());
  const bob = await launchParticipant('bob');
  t.after(() => bob.stop());
  const url = `${first.url}/r/${roomName('restart')}`;
  await joinRoom(alice, url, 'Alice');
  await joinRoom(bob, url, 'Bob');
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);

  await first.stop();
  const banner = alice.page.getByRole('alert');
  await banner.filter({ hasText: 'Connection lost — reconnecting' }).waitFor();

  // Same address, empty state: the old ids are unknown, so both join afresh and reconnect.
  const second = await startServer('', { listen: first.listeners.https });
  t.after(() => second.stop());
  await banner.waitFor({ state: 'hidden', timeout: 20000 });
  const [a, b] = await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assert.equal(a.peers, 1);
  assert.equal(b.peers, 1);
  assert.equal(await remoteTiles(alice.page).count(), 1);
  assert.equal(await remoteTiles(bob.page).count(), 1);
  // The only console errors allowed are the browser's own reports of the refused reconnects.
  for (const p of [alice, bob]) {
    const unexpected = p.errors.filter((e) => !/WebSocket connection to 'wss:\/\/127\.0\.0\.1:\d+\/ws' failed/.test(e));
    assert.deepEqual(unexpected, [], `${p.label} logged errors`);
  }
});

test('a screenshot of a two-person call is saved for review', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  // Its own server, so a plain readable room name is unique here and looks right in the picture.
  const url = `${server.url}/r/design-review`;

  await joinRoom(alice, url, 'Alice Martin');
  await joinRoom(bob, url, 'Bob Okafor');
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  // Wait for the path indicator's first bitrate figure so the picture shows it.
  await alice.page.locator('#grid .tile:not(.local) .path-badge', { hasText: '/s' }).waitFor();
  await alice.page.getByRole('button', { name: 'Chat' }).click();
  await alice.page.getByRole('textbox', { name: 'Message', exact: true }).fill('Morning! Shall we start?');
  await alice.page.getByRole('button', { name: 'Send message' }).click();
  await alice.page.locator('#chat-input').blur();

  const file = join(ensureArtifacts(), 'call.png');
  await alice.page.screenshot({ path: file });
  // The README's picture is refreshed only on request, so a test run leaves the tree clean.
  if (process.env.SIGNALBOX_UPDATE_SCREENSHOTS === '1') {
    mkdirSync(join(REPO, 'docs'), { recursive: true });
    copyFileSync(file, join(REPO, 'docs/screenshot-call.png'));
  }
  assertNoConsoleErrors(alice, bob);
});
