// Direct calls in real browsers: a space's People view (`/s/SPACE`), ringing, accepting,
// declining and missing calls, and the client module's example page (`/sdk/example.html`),
// against the real binary; one headless Chromium per person, everything on loopback.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { spawnSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  REPO, cleanupAll, ensureArtifacts, expectVideoFlowing, launchFirefox, launchParticipant, mediaStats, roomName, sleep, startServer,
} from './harness.mjs';

const TEST_TIMEOUT_MS = 120000;

after(cleanupAll);

/** Starts a server (with `extraToml`) and one browser per name; all stop after the test. */
async function setup(t, names, extraToml = '', { viewport } = {}) {
  const server = await startServer(extraToml);
  t.after(() => server.stop());
  const people = [];
  for (const name of names) {
    const p = await launchParticipant(name, viewport ? { viewport } : {});
    t.after(() => p.stop());
    people.push(p);
  }
  return { server, people };
}

/** Opens the space's People view, types `name` and goes online. */
async function goOnline(page, url, name) {
  await page.goto(url);
  await page.getByLabel('Name shown to others').fill(name);
  await page.getByRole('button', { name: 'Go online' }).click();
  await page.locator('#space-dot[data-state="connected"]').waitFor({ state: 'attached' });
}

/** The row of the person called `name` in a page's People list. */
function row(page, name) {
  return page.locator('#space-people .person', { has: page.locator('.person-name', { hasText: name }) });
}

/**
 * Waits until audio is being decoded, then proves it keeps flowing: the inbound audio's bytes
 * and decoded samples both grow between two samples a second apart.
 */
async function expectAudioFlowing(page, { timeoutMs = 25000 } = {}) {
  const sample = () =>
    page.evaluate(async () => {
      let bytes = 0;
      let samples = 0;
      for (const pc of window.__signalboxPeers) {
        if (pc.connectionState === 'closed') continue;
        (await pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'audio') {
            bytes += s.bytesReceived || 0;
            // Firefox counts decoded audio as the jitter buffer's output.
            samples += s.totalSamplesReceived || s.jitterBufferEmittedCount || 0;
          }
        });
      }
      return { bytes, samples };
    });
  const deadline = Date.now() + timeoutMs;
  let first = await sample();
  while (first.samples === 0) {
    if (Date.now() > deadline) throw new Error(`no audio decoded within ${timeoutMs} ms`);
    await sleep(250);
    first = await sample();
  }
  for (;;) {
    await sleep(1000);
    const second = await sample();
    if (second.samples > first.samples && second.bytes > first.bytes) return second;
    if (Date.now() > deadline) throw new Error(`audio stopped: ${JSON.stringify(first)} then ${JSON.stringify(second)}`);
    first = second;
  }
}

/** The kinds of the tracks a page sends on its open peer connections. */
function sentKinds(page) {
  return page.evaluate(() =>
    window.__signalboxPeers
      .filter((pc) => pc.connectionState !== 'closed')
      .flatMap((pc) => pc.getSenders().filter((s) => s.track).map((s) => s.track.kind))
      .sort(),
  );
}

/** Saves a page's picture under artifacts/; with SIGNALBOX_UPDATE_SCREENSHOTS=1 also as docs/`docsName`. */
async function screenshot(page, file, docsName) {
  const path = join(ensureArtifacts(), file);
  await page.screenshot({ path });
  if (process.env.SIGNALBOX_UPDATE_SCREENSHOTS === '1') copyFileSync(path, join(REPO, 'docs', docsName));
}

function assertNoConsoleErrors(...people) {
  for (const p of people) assert.deepEqual(p.errors, [], `${p.label} logged errors`);
}

test('Alice sees Bob come online and calls him audio only; both hear each other, Carol gets busy, and hanging up returns both to the list', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob, carol] } = await setup(t, ['alice', 'bob', 'carol']);
  const url = `${server.url}/s/${roomName('people')}`;

  await goOnline(alice.page, url, 'Alice');
  await alice.page.getByText('Nobody else is here yet').waitFor();
  await goOnline(bob.page, url, 'Bob');
  await row(alice.page, 'Bob').waitFor();
  await row(bob.page, 'Alice').waitFor();
  assert.equal(await alice.page.locator('#space-people .person').count(), 1, 'Alice sees only Bob, not herself');

  await alice.page.getByRole('button', { name: 'Audio call Bob' }).click();
  await alice.page.getByRole('heading', { name: 'Calling Bob…' }).waitFor();
  const incoming = bob.page.getByRole('alertdialog', { name: 'Alice is calling' });
  await incoming.waitFor();
  await incoming.getByText('Audio call').waitFor();
  // The screen takes the focus and rings; an audio call has no separate audio-only answer.
  assert.equal(await bob.page.evaluate(() => document.activeElement.id), 'accept-call');
  assert.equal(await bob.page.evaluate(() => document.body.dataset.tone), 'ring');
  assert.equal(await bob.page.getByRole('button', { name: 'Accept the call from Alice with audio only' }).count(), 0);
  for (const page of [alice.page, bob.page]) {
    const unnamed = await page.evaluate(() =>
      [...document.querySelectorAll('main button')]
        .filter((b) => b.offsetParent !== null)
        .filter((b) => !(b.getAttribute('aria-label') || b.textContent.trim()))
        .map((b) => b.outerHTML.slice(0, 80)),
    );
    assert.deepEqual(unnamed, [], 'every visible button has an accessible name');
  }
  await screenshot(bob.page, 'incoming.png', 'screenshot-incoming.png');
  // Both are busy for everyone else while it rings.
  await row(bob.page, 'Alice').locator('.busy-badge').waitFor({ state: 'attached' });

  await bob.page.getByRole('button', { name: 'Accept the audio call from Alice' }).click();
  await Promise.all([alice.page.locator('#call').waitFor(), bob.page.locator('#call').waitFor()]);
  assert.equal(await bob.page.evaluate(() => document.body.dataset.tone), undefined, 'the ringtone stopped');
  await Promise.all([expectAudioFlowing(alice.page), expectAudioFlowing(bob.page)]);
  assert.deepEqual(await sentKinds(alice.page), ['audio']);
  assert.deepEqual(await sentKinds(bob.page), ['audio']);
  assert.equal(await alice.page.locator('#call-room').textContent(), 'Call with Bob');

  // Carol sees both busy, and a call to Bob meanwhile is answered "busy".
  await goOnline(carol.page, url, 'Carol');
  await row(carol.page, 'Bob').locator('.busy-badge').waitFor();
  await row(carol.page, 'Alice').locator('.busy-badge').waitFor();
  await carol.page.getByRole('button', { name: 'Video call Bob' }).click();
  await carol.page.locator('#call-status', { hasText: 'Bob is busy in another call.' }).waitFor();
  await screenshot(carol.page, 'people.png', 'screenshot-people.png');
  assert.equal(await bob.page.locator('#call').isVisible(), true, 'Bob stays in his call');

  await alice.page.getByRole('button', { name: 'Leave call' }).click();
  await alice.page.locator('#call-status', { hasText: 'You hung up the call with Bob.' }).waitFor();
  await bob.page.locator('#call-status', { hasText: 'Alice hung up.' }).waitFor();
  await alice.page.locator('#people').waitFor();
  // Both are free again, and the call's connections are closed.
  await row(bob.page, 'Alice').locator('.busy-badge').waitFor({ state: 'detached' });
  await row(alice.page, 'Bob').locator('.busy-badge').waitFor({ state: 'detached' });
  assert.equal((await mediaStats(alice.page)).peers, 0);
  assert.equal((await mediaStats(bob.page)).peers, 0);

  // A second call, which Bob declines: Alice is told.
  await alice.page.getByRole('button', { name: 'Video call Bob' }).click();
  await bob.page.getByRole('button', { name: 'Decline the call from Alice' }).click();
  await alice.page.locator('#call-status', { hasText: 'Bob declined the call.' }).waitFor();
  await bob.page.locator('#call-status', { hasText: 'You declined the call from Alice.' }).waitFor();
  await alice.page.locator('#people').waitFor();
  assertNoConsoleErrors(alice, bob, carol);
});

test('a video call decodes video both ways', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/s/${roomName('video')}`;
  await goOnline(alice.page, url, 'Alice');
  await goOnline(bob.page, url, 'Bob');

  await alice.page.getByRole('button', { name: 'Video call Bob' }).click();
  await bob.page.getByRole('alertdialog', { name: 'Alice is calling' }).getByText('Video call').waitFor();
  await bob.page.getByRole('button', { name: 'Accept the video call from Alice' }).click();
  const [a, b] = await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  assert.equal(a.peers, 1);
  assert.equal(b.peers, 1);
  assert.deepEqual(await sentKinds(alice.page), ['audio', 'video']);
  await alice.page.locator('#grid .tile:not(.local)', { hasText: 'Bob' }).waitFor();

  await bob.page.getByRole('button', { name: 'Leave call' }).click();
  await alice.page.locator('#call-status', { hasText: 'Bob hung up.' }).waitFor();
  assertNoConsoleErrors(alice, bob);
});

test('a video call answered with audio only sends no video from the callee', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/s/${roomName('answer-audio')}`;
  await goOnline(alice.page, url, 'Alice');
  await goOnline(bob.page, url, 'Bob');

  await alice.page.getByRole('button', { name: 'Video call Bob' }).click();
  await bob.page.getByRole('button', { name: 'Accept the call from Alice with audio only' }).click();
  await expectVideoFlowing(bob.page);
  await expectAudioFlowing(alice.page);
  assert.deepEqual(await sentKinds(bob.page), ['audio']);
  await alice.page.getByRole('button', { name: 'Leave call' }).click();
  await bob.page.locator('#call-status', { hasText: 'Alice hung up.' }).waitFor();
  assertNoConsoleErrors(alice, bob);
});

test('a call nobody answers shows as missed on both sides, on a phone-sized screen', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob'], '[calls]\nring_timeout = "2s"\n', { viewport: { width: 360, height: 740 } });
  const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  // The landing page offers a new space with a random name (as rooms: at least 64 bits).
  await alice.page.goto(`${server.url}/`);
  const link = await alice.page.locator('#space-link').textContent();
  assert.match(link, new RegExp(`^${server.url}/s/[a-z]+-[a-z]+-[a-z]+-[0-9a-z]{5}-[0-9a-z]{5}$`));
  assert.equal(await overflow(alice.page), 0, 'the landing page fits');
  await alice.page.getByRole('button', { name: 'Open a new space' }).click();
  await alice.page.waitForURL(link);
  const url = link;
  await goOnline(alice.page, url, 'Alice');
  await goOnline(bob.page, url, 'Bob');
  assert.equal(await overflow(alice.page), 0, 'the people list fits');

  await alice.page.getByRole('button', { name: 'Video call Bob' }).click();
  await alice.page.getByRole('button', { name: 'Cancel the call to Bob' }).waitFor();
  await bob.page.getByRole('alertdialog', { name: 'Alice is calling' }).waitFor();
  assert.equal(await overflow(bob.page), 0, 'the incoming call fits');
  assert.equal(await overflow(alice.page), 0, 'the ringing screen fits');

  await alice.page.locator('#call-status', { hasText: 'Bob did not answer.' }).waitFor({ timeout: 15000 });
  await bob.page.locator('#call-status', { hasText: 'You missed a call from Alice.' }).waitFor();
  assert.equal(await bob.page.getByRole('alertdialog').count(), 0, 'the incoming call is gone');
  assert.equal(await bob.page.evaluate(() => document.body.dataset.tone), undefined, 'the ringtone stopped');
  assertNoConsoleErrors(alice, bob);
});

test('the caller cancels while it rings, and two tabs of one person are two entries that ring apart', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/s/${roomName('tabs')}`;
  await goOnline(alice.page, url, 'Alice');
  await goOnline(bob.page, url, 'Bob');
  const bobTab2 = await bob.context.newPage();
  await goOnline(bobTab2, url, 'Bob');
  await alice.page.locator('#space-people .person', { hasText: 'Bob' }).nth(1).waitFor();
  assert.equal(await alice.page.locator('#space-people .person', { hasText: 'Bob' }).count(), 2);

  // Alice calls the first Bob (the first tab): only that tab rings.
  await alice.page.getByRole('button', { name: 'Audio call Bob' }).first().click();
  await bob.page.getByRole('alertdialog', { name: 'Alice is calling' }).waitFor();
  await sleep(500);
  assert.equal(await bobTab2.getByRole('alertdialog').count(), 0, 'the other tab does not ring');
  await row(bobTab2, 'Bob').locator('.busy-badge').waitFor({ state: 'attached' });

  await alice.page.getByRole('button', { name: 'Cancel the call to Bob' }).click();
  await alice.page.locator('#call-status', { hasText: 'Call cancelled.' }).waitFor();
  await bob.page.locator('#call-status', { hasText: 'You missed a call from Alice.' }).waitFor();

  // Leaving the page in the second tab takes only its entry away.
  await bobTab2.goto('about:blank');
  await alice.page.waitForFunction(() => document.querySelectorAll('#space-people .person').length === 1);
  assertNoConsoleErrors(alice, bob);
});

test('the client module\'s example page calls someone in the People view, and both decode video', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const space = roomName('sdk');
  await goOnline(bob.page, `${server.url}/s/${space}`, 'Bob');
  await alice.page.goto(`${server.url}/sdk/example.html?space=${space}&name=Alice`);
  await row(bob.page, 'Alice').waitFor();

  await alice.page.getByRole('button', { name: 'Call Bob' }).click();
  await alice.page.locator('#status', { hasText: 'ringing' }).waitFor();
  await bob.page.getByRole('button', { name: 'Accept the video call from Alice' }).click();
  await alice.page.locator('#status', { hasText: 'in a call with Bob' }).waitFor();
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  await alice.page.waitForFunction(() => document.getElementById('remote').srcObject?.getVideoTracks().length === 1);

  await alice.page.getByRole('button', { name: 'Hang up' }).click();
  await alice.page.locator('#status', { hasText: 'call-ended' }).waitFor();
  await bob.page.locator('#call-status', { hasText: 'Alice hung up.' }).waitFor();
  assertNoConsoleErrors(alice, bob);
});

test('Firefox in the People view answers an audio call from Chromium, and both decode audio', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice] } = await setup(t, ['alice']);
  const fox = await launchFirefox('firefox');
  t.after(() => fox.stop());
  const url = `${server.url}/s/${roomName('firefox')}`;
  await goOnline(alice.page, url, 'Alice');
  await fox.page.goto(url);
  await fox.page.waitForSelector('#people-name', { visible: true });
  await fox.page.type('#people-name', 'Fox');
  await fox.page.click('#go-online');
  await row(alice.page, 'Fox').waitFor();

  await alice.page.getByRole('button', { name: 'Audio call Fox' }).click();
  await fox.page.waitForSelector('#incoming', { visible: true });
  assert.equal(await fox.page.evaluate(() => document.activeElement.id), 'accept-call');
  assert.equal(await fox.page.evaluate(() => document.body.dataset.tone), 'ring');
  await fox.page.click('#accept-call');
  await Promise.all([expectAudioFlowing(alice.page, { timeoutMs: 60000 }), expectAudioFlowing(fox.page, { timeoutMs: 60000 })]);

  await fox.page.click('#btn-hangup');
  await alice.page.locator('#call-status', { hasText: 'Fox hung up.' }).waitFor();
  await fox.page.waitForSelector('#people', { visible: true });
  assertNoConsoleErrors(alice);
  // Firefox warns when a connection gets five or more STUN/TURN URLs; that is not an error.
  assert.deepEqual(fox.errors.filter((e) => !e.includes('Using five or more STUN/TURN servers')), [], 'Firefox logged errors');
});

test('a blocked caller\'s next call never rings, and ends as unanswered for the caller', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob'], '[calls]\nring_timeout = "2s"\n');
  const url = `${server.url}/s/${roomName('block')}`;
  await goOnline(alice.page, url, 'Alice');
  await goOnline(bob.page, url, 'Bob');

  await alice.page.getByRole('button', { name: 'Audio call Bob' }).click();
  await bob.page.getByRole('button', { name: 'Block Alice' }).click();
  await bob.page.locator('#call-status', { hasText: 'You blocked Alice' }).waitFor();
  await alice.page.locator('#call-status', { hasText: 'Bob declined the call.' }).waitFor();

  await alice.page.getByRole('button', { name: 'Audio call Bob' }).click();
  await alice.page.locator('#call-status', { hasText: 'Bob did not answer.' }).waitFor({ timeout: 15000 });
  assert.equal(await bob.page.evaluate(() => document.body.dataset.screen), 'people', 'Bob never saw it ring');
  assertNoConsoleErrors(alice, bob);
});

test('a dropped connection during a direct call resumes: nobody sees a departure and the call carries on', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob']);
  const url = `${server.url}/s/${roomName('resume')}`;
  await goOnline(alice.page, url, 'Alice');
  await goOnline(bob.page, url, 'Bob');
  await alice.page.getByRole('button', { name: 'Video call Bob' }).click();
  await bob.page.getByRole('button', { name: 'Accept the video call from Alice' }).click();
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);

  // Cut Alice's WebSocket without a word; the module reconnects, resumes the space, then the room.
  const framesSent = [];
  alice.page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => framesSent.push(String(payload))));
  await alice.page.evaluate(() => window.__signalboxSockets[0].close());
  await alice.page.waitForFunction(() => window.__signalboxSockets.length === 2 && window.__signalboxSockets[1].readyState === WebSocket.OPEN);
  await alice.page.locator('#conn-dot[data-state="connected"]').waitFor({ state: 'attached' });
  await alice.page.waitForFunction(() => document.body.dataset.screen === 'call');
  assert.ok(framesSent.some((f) => f.includes('"type":"hello"') && f.includes('"resume"')), 'hello resumed the space');
  await waitUntil(() => framesSent.some((f) => f.includes('"type":"join"') && f.includes('"resume"')), 'the room was joined again with its resume token');

  // Same people, same connections, and an ICE restart over the new socket works.
  assert.equal(await bob.page.locator('#grid .tile:not(.local)').count(), 1);
  assert.equal(await alice.page.evaluate(() => window.__signalboxPeers.length), 1);
  const remoteUfrag = (page) =>
    page.evaluate(() => (/a=ice-ufrag:(\S+)/.exec(window.__signalboxPeers[0].currentRemoteDescription?.sdp || '') || [])[1]);
  const before = await remoteUfrag(bob.page);
  await alice.page.evaluate(() => window.__signalboxPeers[0].restartIce());
  await bob.page.waitForFunction(
    (old) => (/a=ice-ufrag:(\S+)/.exec(window.__signalboxPeers[0].currentRemoteDescription?.sdp || '') || [])[1] !== old,
    before,
  );
  await Promise.all([expectVideoFlowing(alice.page), expectVideoFlowing(bob.page)]);
  await row(bob.page, 'Alice').waitFor({ state: 'attached' });
  assert.equal(await bob.page.getByText('Alice left').count(), 0, 'Bob was not told that Alice left');
  assertNoConsoleErrors(alice, bob);
});

/** Polls `check` every 100 ms for up to 10 s. */
async function waitUntil(check, what) {
  const deadline = Date.now() + 10000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(100);
  }
}

/**
 * An HTTP server on a loopback port of its own (so another origin than signalbox's) serving one
 * page that imports the client module from `sdkOrigin` and goes online in `space`.
 */
async function otherOriginSite(t) {
  const site = createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const sdk = url.searchParams.get('sdk');
    const space = url.searchParams.get('space');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>another site</title><p id="status" role="status">loading</p>
<script type="module">
try {
  const { Space, signalingUrl } = await import(${JSON.stringify('${sdk}/sdk/signalbox.js')});
  const space = new Space({ space: ${JSON.stringify('${space}')}, name: 'Elsewhere', url: signalingUrl(${JSON.stringify('${sdk}')}) });
  space.addEventListener('people', () => { document.getElementById('status').textContent = 'online with ' + [...space.people.values()].map((p) => p.name).join(', '); });
  space.connect();
} catch (err) {
  document.getElementById('status').textContent = 'no module: ' + err.message;
}
</script>`.replace(/\$\{sdk\}/g, sdk).replace(/\$\{space\}/g, space));
  });
  await new Promise((ok) => site.listen(0, '127.0.0.1', ok));
  t.after(() => new Promise((ok) => site.close(ok)));
  return `http://127.0.0.1:${site.address().port}`;
}

test('a page of another site listed in [http] allowed_origins imports the module and goes online; an unlisted site cannot', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const site = await otherOriginSite(t);
  const server = await startServer('', { httpToml: `allowed_origins = [${JSON.stringify(site)}]` });
  t.after(() => server.stop());
  const [bob, visitor] = [await launchParticipant('bob'), await launchParticipant('visitor')];
  t.after(() => bob.stop());
  t.after(() => visitor.stop());
  const space = roomName('origins');
  await goOnline(bob.page, `${server.url}/s/${space}`, 'Bob');

  await visitor.page.goto(`${site}/?sdk=${encodeURIComponent(server.url)}&space=${space}`);
  await visitor.page.locator('#status', { hasText: 'online with Bob' }).waitFor();
  await row(bob.page, 'Elsewhere').waitFor();

  // The same page from an origin the server does not list: the browser refuses the module.
  const other = await startServer('');
  t.after(() => other.stop());
  visitor.errors.length = 0;
  await visitor.page.goto(`${site}/?sdk=${encodeURIComponent(other.url)}&space=${space}`);
  await visitor.page.locator('#status', { hasText: 'no module' }).waitFor();
  assert.ok(visitor.errors.some((e) => e.includes('CORS')), `the browser names CORS: ${visitor.errors.join(' | ')}`);
  assertNoConsoleErrors(bob);
});

test('in token mode a space link from `signalbox invite --space` lets people in, a bare link does not, and their call connects', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { server, people: [alice, bob] } = await setup(t, ['alice', 'bob'], '[access]\nmode = "token"\nkey_file = "access.key"\n');
  const space = roomName('token');
  const invite = () => {
    const bin = resolve(REPO, process.env.SIGNALBOX_BIN || 'target/debug/signalbox');
    const r = spawnSync(bin, ['invite', '--config', join(server.dir, 'config.toml'), '--space', space], { cwd: server.dir, timeout: 10000 });
    const link = String(r.stdout).trim();
    assert.equal(r.status, 0, String(r.stderr));
    assert.match(link, new RegExp(`/s/${space}#token=`));
    return link.slice(link.indexOf('#'));
  };

  await bob.page.goto(`${server.url}/s/${space}`);
  await bob.page.getByLabel('Name shown to others').fill('Bob');
  await bob.page.getByRole('button', { name: 'Go online' }).click();
  await bob.page.getByRole('heading', { name: 'You cannot enter this space' }).waitFor();

  const bobLink = `${server.url}/s/${space}${invite()}`;
  // Only the fragment differs from the page Bob is on, so a reload starts it afresh.
  await bob.page.goto(bobLink);
  await bob.page.reload();
  await goOnline(bob.page, bobLink, 'Bob');
  assert.equal(await bob.page.locator('#people-link').textContent(), bobLink, 'the copied link keeps the invitation');
  await goOnline(alice.page, `${server.url}/s/${space}${invite()}`, 'Alice');
  await row(alice.page, 'Bob').waitFor();

  await alice.page.getByRole('button', { name: 'Audio call Bob' }).click();
  await bob.page.getByRole('button', { name: 'Accept the audio call from Alice' }).click();
  await Promise.all([expectAudioFlowing(alice.page), expectAudioFlowing(bob.page)]);
  assertNoConsoleErrors(alice);
});
