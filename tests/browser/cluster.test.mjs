// A call between two pages connected to two different cluster nodes: Debian's `redis-server` on
// a free loopback port (no persistence) and two signalbox nodes joined through it, each with its
// own TURN relay on loopback and its own relay port range. Relay is forced in both browsers, so
// media can only flow from one node's relay to the other's, which the cluster's peer policy
// allows (without `allow_loopback_peers`: nothing else lets one relay on this host reach the
// other). Page A joins the room on node 1 and page B the same room on node 2.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import {
  cleanupAll, expectVideoFlowing, joinRoom, launchParticipant, remoteTiles, roomName, sleep, startServer,
} from './harness.mjs';

const TEST_TIMEOUT_MS = 120000;
const NODE_TIMEOUT_S = 3;
/**
 * Past node_timeout, what a dead node's peers may take to be reported gone: the home sees the
 * lapsed entry at its next heartbeat (a third of node_timeout), counts the node gone when it is
 * missing from two views in a row (one heartbeat more), and a margin for a loaded machine.
 */
const PEER_LEFT_SLACK_S = 5;
const SECRET = 'browser-cluster-test-secret';

after(cleanupAll);

const redisProcesses = new Set();
process.on('exit', () => {
  for (const child of redisProcesses) if (child.exitCode === null) child.kill('SIGKILL');
});

/** A TCP port free on 127.0.0.1 right now. */
async function freePort() {
  const server = createServer();
  await new Promise((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

/** Whether a Redis server answers PING on `port` within a second. */
function answersPing(port) {
  return new Promise((ok) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    const done = (yes) => {
      socket.destroy();
      ok(yes);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      reply += d;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/** Debian's `redis-server` on a free loopback port, no persistence; stopped after the test. */
async function startRedis(t) {
  const probe = spawnSync('redis-server', ['--version'], { timeout: 10000 });
  if (probe.error || probe.status !== 0) {
    assert.fail(`redis-server is needed (Debian package redis-server; scripts/install-test-deps installs it): ${probe.error?.message || probe.stderr}`);
  }
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  redisProcesses.add(child);
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const redis = {
    url: `redis://127.0.0.1:${port}/0`,
    async stop() {
      redisProcesses.delete(child);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((ok) => child.once('exit', ok));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
  t.after(() => redis.stop());
  const deadline = Date.now() + 10000;
  while (!(await answersPing(port))) {
    if (child.exitCode !== null) assert.fail(`redis-server exited with ${child.exitCode}: ${stderr}`);
    if (Date.now() > deadline) assert.fail(`redis-server did not answer PING on port ${port} within 10 s: ${stderr}`);
    await sleep(50);
  }
  return redis;
}

/**
 * Two relay port ranges of 100 ports, next to each other, at a base drawn per run: two runs on one
 * machine (or the Rust cluster tests, on 40000-40999) rarely overlap, and the relay tries other
 * ports of its range when one is taken.
 */
function relayRanges() {
  const base = 42000 + 200 * Math.floor(Math.random() * 30);
  return [{ from: base, to: base + 99 }, { from: base + 100, to: base + 199 }];
}

/** A cluster node: TURN on loopback with a relay range of its own, the shared secret, this Redis. */
function nodeToml(redis, name, range) {
  return [
    '[turn]',
    'listen = ["127.0.0.1:0"]',
    'listen_tcp = ["127.0.0.1:0"]',
    'listen_tls = ["127.0.0.1:0"]',
    'relay_ip = "127.0.0.1"',
    `relay_ports = "${range.from}-${range.to}"`,
    `secrets = [${JSON.stringify(SECRET)}]`,
    '',
    // Far longer than node_timeout: a peer reported gone soon after its node died was not
    // merely away past the grace.
    '[rooms]',
    'reconnect_grace = "60s"',
    '',
    '[cluster]',
    `redis_url = ${JSON.stringify(redis.url)}`,
    `node_name = ${JSON.stringify(name)}`,
    `node_timeout = "${NODE_TIMEOUT_S}s"`,
  ].join('\n');
}

/** Records every JSON message a participant's page receives over its WebSockets, with the time. */
function recordReceived(participant) {
  const messages = [];
  participant.page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      try {
        messages.push({ at: Date.now(), msg: JSON.parse(String(payload)) });
      } catch {
        // not JSON
      }
    });
  });
  return messages;
}

/**
 * Redis, two nodes (n1 and n2) and one relay-forced browser per node; page A ("Alice") joins a
 * room on n1, then page B ("Bob") the same room on n2. Everything stops after the test.
 */
async function callAcrossNodes(t) {
  const redis = await startRedis(t);
  const ranges = relayRanges();
  const nodes = [];
  for (const [i, name] of ['n1', 'n2'].entries()) {
    const node = await startServer(nodeToml(redis, name, ranges[i]));
    t.after(() => node.stop());
    node.range = ranges[i];
    nodes.push(node);
  }
  const people = [];
  for (const label of ['alice', 'bob']) {
    const p = await launchParticipant(label, { forceRelay: true });
    t.after(() => p.stop());
    p.received = recordReceived(p);
    people.push(p);
  }
  const room = roomName('cluster');
  await joinRoom(people[0], `${nodes[0].url}/r/${room}`, 'Alice');
  await joinRoom(people[1], `${nodes[1].url}/r/${room}`, 'Bob');
  return { redis, nodes, people };
}

/** The first message of `type` a participant received, waited for up to `timeoutMs`. */
async function received(p, type, { timeoutMs = 10000, where = () => true } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = p.received.find(({ msg }) => msg.type === type && where(msg));
    if (found) return found;
    if (Date.now() > deadline) {
      assert.fail(`${p.label} got no ${type} within ${timeoutMs} ms; got ${JSON.stringify(p.received.map(({ msg }) => msg.type))}`);
    }
    await sleep(100);
  }
}

/** The selected candidate pair of each of the page's open connections: types and relayed ports. */
function selectedPairs(page) {
  return page.evaluate(async () => {
    const pairs = [];
    for (const pc of window.__signalboxPeers) {
      if (pc.connectionState === 'closed') continue;
      const report = await pc.getStats();
      let pair = null;
      report.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
      });
      const local = pair ? report.get(pair.localCandidateId) : null;
      const remote = pair ? report.get(pair.remoteCandidateId) : null;
      pairs.push({
        local: local && { type: local.candidateType, address: local.address, port: local.port },
        remote: remote && { type: remote.candidateType, address: remote.address, port: remote.port },
      });
    }
    return pairs;
  });
}

/** Every ICE server URL the page's connections are configured with. */
function iceUrls(page) {
  return page.evaluate(() => window.__signalboxPeers.flatMap((pc) => pc.getConfiguration().iceServers.flatMap((s) => [].concat(s.urls))));
}

const portOf = (addr) => Number(addr.slice(addr.lastIndexOf(':') + 1));
const inRange = (port, range) => port >= range.from && port <= range.to;

/** The ports a node's browsers may be sent to: HTTPS (TURN over TLS on 443's stand-in) and TURN. */
function nodePorts(node) {
  return ['https', 'turn-udp', 'turn-tcp', 'turn-tls'].filter((k) => node.listeners[k]).map((k) => portOf(node.listeners[k]));
}

test('two pages on two nodes see each other and decode video relayed from one node\'s relay to the other\'s', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { nodes: [n1, n2], people: [alice, bob] } = await callAcrossNodes(t);

  // One room, not two: each side is told of the other, under the id the other was given.
  const aliceJoined = (await received(alice, 'joined')).msg;
  const bobJoined = (await received(bob, 'joined')).msg;
  assert.deepEqual(bobJoined.peers.map((p) => p.id), [aliceJoined.id], `Bob, on n2, finds Alice of n1 in the room: ${JSON.stringify(bobJoined.peers)}`);
  await received(alice, 'peer-joined', { where: (m) => m.peer?.id === bobJoined.id });
  await remoteTiles(alice.page).filter({ hasText: 'Bob' }).waitFor();
  await remoteTiles(bob.page).filter({ hasText: 'Alice' }).waitFor();

  // Each page is sent to its own node's TURN relay, and only there.
  for (const [p, own, other] of [[alice, n1, n2], [bob, n2, n1]]) {
    const urls = await iceUrls(p.page);
    const turnUdp = portOf(own.listeners['turn-udp']);
    assert.ok(urls.some((u) => u.startsWith(`turn:127.0.0.1:${turnUdp}`)), `${p.label} is given its node's TURN port ${turnUdp}: ${JSON.stringify(urls)}`);
    const foreign = urls.filter((u) => nodePorts(other).includes(Number((/:(\d+)(\?|$)/.exec(u) || [])[1])));
    assert.deepEqual(foreign, [], `${p.label} is given none of the other node's ports`);
  }

  await Promise.all([expectVideoFlowing(alice.page, { timeoutMs: 40000 }), expectVideoFlowing(bob.page, { timeoutMs: 40000 })]);

  // The path in use on each side: its own node's relay to the other node's relay.
  for (const [p, own, other] of [[alice, n1, n2], [bob, n2, n1]]) {
    const pairs = await selectedPairs(p.page);
    assert.equal(pairs.length, 1, `${p.label} has one connection: ${JSON.stringify(pairs)}`);
    const [{ local, remote }] = pairs;
    assert.equal(local?.type, 'relay', `${p.label}'s selected pair uses a relayed local candidate: ${JSON.stringify(pairs)}`);
    assert.equal(remote?.type, 'relay', `${p.label}'s remote candidate is relayed too: ${JSON.stringify(pairs)}`);
    assert.ok(inRange(local.port, own.range), `${p.label}'s relayed address is on its own node (${JSON.stringify(own.range)}): ${JSON.stringify(pairs)}`);
    assert.ok(inRange(remote.port, other.range), `${p.label}'s peer is relayed by the other node (${JSON.stringify(other.range)}): ${JSON.stringify(pairs)}`);
  }
  for (const p of [alice, bob]) assert.deepEqual(p.errors, [], `${p.label} logged errors`);
});

test('when the node of one page is killed, the other page sees that peer leave within node_timeout and two heartbeats', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { nodes: [, n2], people: [alice, bob] } = await callAcrossNodes(t);
  const bobId = (await received(bob, 'joined')).msg.id;
  await received(alice, 'peer-joined', { where: (m) => m.peer?.id === bobId });
  await remoteTiles(alice.page).filter({ hasText: 'Bob' }).waitFor();
  await expectVideoFlowing(alice.page, { timeoutMs: 40000 });

  const exited = new Promise((ok) => n2.child.once('exit', ok));
  const killedAt = Date.now();
  n2.child.kill('SIGKILL');
  await exited;

  const limitMs = (NODE_TIMEOUT_S + PEER_LEFT_SLACK_S) * 1000;
  const { at } = await received(alice, 'peer-left', { timeoutMs: limitMs, where: (m) => m.id === bobId });
  t.diagnostic(`peer-left reached the page ${at - killedAt} ms after the kill`);
  // The app takes Bob's tile down, and Alice stays in the call on her node.
  await remoteTiles(alice.page).filter({ hasText: 'Bob' }).waitFor({ state: 'detached', timeout: 5000 });
  assert.equal(await remoteTiles(alice.page).count(), 0);
  assert.ok(await alice.page.locator('#call').isVisible(), 'Alice is still in the call');
  assert.equal(await alice.page.locator('#conn-dot').getAttribute('data-state'), 'connected', 'Alice\'s signaling stays up');
  assert.deepEqual(alice.errors, [], 'alice logged errors');
});
