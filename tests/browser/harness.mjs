// Test harness for the browser tests: runs the real signalbox binary on an ephemeral loopback
// port and one headless browser process per participant — Debian's Chromium through
// playwright-core, or Debian's firefox-esr through puppeteer-core over WebDriver BiDi — and reads
// WebRTC statistics from the pages. Everything started here is also registered for a
// last-resort cleanup, so a failing or timed-out test never leaves a server or a browser behind.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { connect, createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

export { sleep };

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const ARTIFACTS = join(REPO, 'tests/browser/artifacts');
const CHROMIUM_WRAPPER = join(REPO, 'tests/browser/chromium.sh');

const running = new Set();

/** Stops everything still running; for `after()` hooks and process exit. */
export async function cleanupAll() {
  for (const item of [...running]) {
    try {
      await item.stop();
    } catch {
      // best effort
    }
  }
}

process.on('exit', () => {
  for (const item of running) if (item.child && item.child.exitCode === null) item.child.kill('SIGKILL');
});

/**
 * Settings that keep a test server's optional listeners (metrics, TURN) on ephemeral loopback
 * ports instead of fixed ones on every interface, for builds that have them. Each is kept only
 * if `signalbox check-config` accepts it, because the config refuses unknown sections (a build
 * without metrics would not start with a `[metrics]` section).
 */
const OPTIONAL_SETTINGS = [
  ['[metrics]\nlisten = "127.0.0.1:0"'],
  // The first alternative a build accepts: TURN over TCP and TLS too where the build has them.
  ['[turn]\nlisten = ["127.0.0.1:0"]\nlisten_tcp = ["127.0.0.1:0"]\nlisten_tls = ["127.0.0.1:0"]', '[turn]\nlisten = ["127.0.0.1:0"]'],
];
let acceptedOptional = null;

function optionalSettings(bin) {
  if (acceptedOptional) return acceptedOptional;
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-probe-'));
  const accepted = (snippet) => {
    writeFileSync(join(dir, 'config.toml'), `${snippet}\n`);
    const r = spawnSync(bin, ['check-config', '--config', join(dir, 'config.toml')], { cwd: dir, timeout: 10000 });
    return r.status === 0;
  };
  try {
    acceptedOptional = OPTIONAL_SETTINGS.map((alternatives) => alternatives.find(accepted)).filter(Boolean);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return acceptedOptional;
}

/**
 * Starts `signalbox` with a temporary config (HTTPS on `listen`, by default an ephemeral
 * loopback port; `public_host` = `publicHost`; `staticDir`, by default this repository's public/;
 * `httpToml`, more `[http]` keys) plus `extraToml`, and waits for its `signalbox: open` line.
 */
export async function startServer(extraToml = '', { listen = '127.0.0.1:0', publicHost = '127.0.0.1', staticDir = join(REPO, 'public'), httpToml = '' } = {}) {
  const bin = resolve(REPO, process.env.SIGNALBOX_BIN || 'target/debug/signalbox');
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-browser-'));
  const config = [
    '[server]',
    `public_host = ${JSON.stringify(publicHost)}`,
    'drain_grace = "1s"',
    '',
    '[http]',
    `listen = ${JSON.stringify(listen)}`,
    `static_dir = ${JSON.stringify(staticDir)}`,
    'shutdown_grace = "1s"',
    httpToml,
    '',
    '[log]',
    'level = "info"',
    '',
    // A test's own section (say `[turn]` in the relay test) replaces the optional one.
    ...optionalSettings(bin).filter((snippet) => !extraToml.includes(snippet.split('\n')[0])),
    '',
    extraToml,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'config.toml'), config);
  const child = spawn(bin, ['--config', join(dir, 'config.toml')], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: '' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (process.env.SIGNALBOX_TEST_LOG) process.stderr.write(`[server] ${d}`);
  });
  const server = {
    child,
    dir,
    listeners: {},
    url: null,
    stderr: () => stderr,
    async stop() {
      running.delete(server);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  running.add(server);
  const lines = createInterface({ input: child.stdout });
  await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => fail(new Error('signalbox did not print its open line within 20 s')), 20000);
    const fail = (err) => {
      clearTimeout(timer);
      server.stop().finally(() => reject(new Error(`${err.message}\nconfig:\n${config}\nstderr:\n${stderr}`)));
    };
    child.once('exit', (code) => fail(new Error(`signalbox exited with ${code} before it was ready`)));
    child.once('error', (err) => fail(new Error(`cannot start ${bin}: ${err.message} (run \`cargo build\` first)`)));
    lines.on('line', (line) => {
      const m = /^signalbox: (\S+) listening on (\S+)$/.exec(line);
      if (m) server.listeners[m[1]] = m[2];
      if (line.startsWith('signalbox: open ')) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolvePromise();
      }
    });
  });
  if (!server.listeners.https) throw new Error(`no https listener in ${JSON.stringify(server.listeners)}`);
  server.url = `https://${server.listeners.https}`;
  return server;
}

/** Flags for headless Chromium on these machines (see BROWSER-TESTING.md). */
function chromiumArgs({ blockCamera, resolverExcludes }) {
  return [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream=device-count=3',
    // The fake UI says yes to every prompt; a participant with a blocked camera instead gets
    // permissions granted one by one (see launchParticipant).
    blockCamera ? null : '--use-fake-ui-for-media-stream',
    '--ignore-certificate-errors',
    '--autoplay-policy=no-user-gesture-required',
    // Merged with Playwright's own list by chromium.sh (Chromium keeps only the last one).
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    // Every name lookup fails except the loopback the test uses: nothing leaves the machine.
    // `MAP *` catches IP literals too, so a test on another address (::1) names it here.
    `--host-resolver-rules=${['MAP * ~NOTFOUND', ...['127.0.0.1', 'localhost', 'localhost.', ...resolverExcludes].map((h) => `EXCLUDE ${h}`)].join(', ')}`,
  ].filter(Boolean);
}

/**
 * Runs in every page before the app: records each RTCPeerConnection and WebSocket so the test
 * can read statistics and cut connections, and with `forceRelay` makes every connection relay-only (also through
 * `setConfiguration`, which the app calls when fresh TURN credentials arrive).
 */
function peerConnectionRecorder({ forceRelay, onlyIceUrl, rewriteIceUrl }) {
  const Native = window.RTCPeerConnection;
  const peers = [];
  // With `onlyIceUrl` (a regular expression source), every ICE server URL that does not match
  // it is removed, so the browser can use that one transport only. `rewriteIceUrl`
  // ([pattern, replacement]) then edits the URLs left, to send the browser through a test proxy.
  const only = onlyIceUrl ? new RegExp(onlyIceUrl) : null;
  const rewrite = rewriteIceUrl ? (u) => u.replace(new RegExp(rewriteIceUrl[0]), rewriteIceUrl[1]) : (u) => u;
  const keepOnly = (config) => {
    if (!only || !config || !config.iceServers) return config;
    const iceServers = config.iceServers
      .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => only.test(u)).map(rewrite) }))
      .filter((s) => s.urls.length > 0);
    return { ...config, iceServers };
  };
  const fix = (config) => keepOnly(forceRelay ? { ...(config || {}), iceTransportPolicy: 'relay' } : config);
  class Recorded extends Native {
    constructor(config, ...rest) {
      super(fix(config), ...rest);
      peers.push(this);
    }
    setConfiguration(config) {
      return super.setConfiguration(fix(config));
    }
    createDataChannel(...args) {
      const channel = super.createDataChannel(...args);
      channels.push(channel);
      return channel;
    }
  }
  const channels = [];
  Object.defineProperty(window, '__signalboxPeers', { value: peers });
  Object.defineProperty(window, '__signalboxChannels', { value: channels });
  window.RTCPeerConnection = Recorded;
  // WebSockets too, so a test can drop the signaling connection the way a network would.
  const NativeSocket = window.WebSocket;
  const sockets = [];
  class RecordedSocket extends NativeSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  }
  Object.defineProperty(window, '__signalboxSockets', { value: sockets });
  window.WebSocket = RecordedSocket;
}

/**
 * Launches one Chromium process for one participant, with its own profile. `blockCamera`
 * models a person who refused camera access: only the microphone is allowed.
 * `resolverExcludes` are more hosts (or IP literals) the host-resolver rules leave alone.
 */
export async function launchParticipant(label, { forceRelay = false, onlyIceUrl = null, blockCamera = false, resolverExcludes = [], viewport = { width: 1280, height: 720 } } = {}) {
  const profile = mkdtempSync(join(tmpdir(), `signalbox-chromium-${label}-`));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_WRAPPER,
    headless: true,
    args: chromiumArgs({ blockCamera, resolverExcludes }),
    ignoreHTTPSErrors: true,
    viewport,
    timeout: 30000,
  });
  const participant = {
    label,
    context: browser,
    page: browser.pages()[0] || (await browser.newPage()),
    errors: [],
    /** Every WebSocket the page opened, for tests that watch signaling frames. */
    wsList: [],
    async stop() {
      running.delete(participant);
      try {
        await browser.close();
      } finally {
        rmSync(profile, { recursive: true, force: true });
      }
    },
  };
  running.add(participant);
  if (blockCamera) await browser.grantPermissions(['microphone']);
  await browser.addInitScript(peerConnectionRecorder, { forceRelay, onlyIceUrl, rewriteIceUrl: null });
  const page = participant.page;
  page.on('console', (msg) => {
    if (msg.type() === 'error') participant.errors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => participant.errors.push(`page error: ${err.message}`));
  page.on('websocket', (ws) => participant.wsList.push(ws));
  page.setDefaultTimeout(20000);
  return participant;
}

const FIREFOX = process.env.SIGNALBOX_FIREFOX || '/usr/bin/firefox-esr';

/**
 * Preferences for headless Firefox on these machines: a fake camera and microphone without a
 * prompt, loopback ICE candidates (off by default), plain host candidates instead of mDNS
 * names (Chromium here cannot resolve those), and nothing that talks to the outside world.
 */
const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'network.dns.disablePrefetch': true,
  'network.prefetch-next': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'browser.safebrowsing.downloads.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
  'app.update.enabled': false,
  'extensions.update.enabled': false,
  'browser.region.network.url': '',
  'browser.search.geoip.url': '',
};

/**
 * Launches Debian's firefox-esr for one participant (puppeteer-core over WebDriver BiDi, its
 * own profile). The page is a puppeteer Page: CSS selectors and `evaluate`, not Playwright's
 * locators; `mediaStats` and `expectVideoFlowing` work on both.
 */
export async function launchFirefox(label, { forceRelay = false, onlyIceUrl = null, rewriteIceUrl = null } = {}) {
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    acceptInsecureCerts: true,
    extraPrefsFirefox: FIREFOX_PREFS,
    defaultViewport: { width: 1280, height: 720 },
    timeout: 60000,
  });
  const page = await browser.newPage();
  const participant = {
    label,
    browser,
    page,
    errors: [],
    async stop() {
      running.delete(participant);
      await browser.close();
    },
  };
  running.add(participant);
  await page.evaluateOnNewDocument(peerConnectionRecorder, { forceRelay, onlyIceUrl, rewriteIceUrl });
  page.on('console', (msg) => {
    if (msg.type() === 'error') participant.errors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => participant.errors.push(`page error: ${err.message}`));
  page.setDefaultTimeout(30000);
  return participant;
}

/** `joinRoom` for a puppeteer page: the same form, found by its element ids. */
export async function joinRoomFirefox(participant, url, name) {
  const { page } = participant;
  await page.goto(url);
  await page.waitForSelector('#display-name', { visible: true });
  await page.type('#display-name', name);
  await page.click('#join-btn');
  await page.waitForSelector('#call', { visible: true });
}

/**
 * A TCP proxy on an ephemeral loopback port to `target` ("HOST:PORT") that reads the TLS
 * ClientHello opening each connection and records its SNI: `hellos` gets one entry per
 * ClientHello, the server name or `null` when the extension is absent; `connections` counts
 * the connections. Bytes pass unchanged.
 */
export async function startSniProxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const hellos = [];
  const sockets = new Set();
  const proxy = { connections: 0 };
  const server = createServer((client) => {
    proxy.connections += 1;
    sockets.add(client);
    const upstream = connect(port, host);
    sockets.add(upstream);
    let first = true;
    client.on('data', (chunk) => {
      if (first) {
        first = false;
        const sni = clientHelloSni(chunk);
        if (sni !== undefined) hellos.push(sni);
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => client.write(chunk));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  Object.assign(proxy, {
    port: server.address().port,
    hellos,
    async stop() {
      running.delete(proxy);
      for (const s of sockets) s.destroy();
      await new Promise((ok) => server.close(ok));
    },
  });
  running.add(proxy);
  return proxy;
}

/**
 * The server name in a TLS ClientHello that starts `buf` (RFC 8446 §4.1.2, RFC 6066 §3):
 * a string, `null` when there is no server_name extension, `undefined` when `buf` does not start
 * with a ClientHello (plain TURN over TCP, say).
 */
export function clientHelloSni(buf) {
  if (buf.length < 9 || buf[0] !== 22 || buf[5] !== 1) return undefined;
  let at = 9 + 2 + 32; // record header, handshake header, version, random
  const need = (n) => at + n <= buf.length;
  if (!need(1)) return undefined;
  at += 1 + buf[at]; // session id
  if (!need(2)) return undefined;
  at += 2 + buf.readUInt16BE(at); // cipher suites
  if (!need(1)) return undefined;
  at += 1 + buf[at]; // compression methods
  if (!need(2)) return null;
  const end = Math.min(buf.length, at + 2 + buf.readUInt16BE(at));
  at += 2;
  while (at + 4 <= end) {
    const type = buf.readUInt16BE(at);
    const len = buf.readUInt16BE(at + 2);
    if (type === 0 && at + 9 <= end) {
      const nameLen = buf.readUInt16BE(at + 7);
      return buf.subarray(at + 9, at + 9 + nameLen).toString('latin1');
    }
    at += 4 + len;
  }
  return null;
}

/** Opens the room page, types a name and clicks the button labelled exactly "Join". */
export async function joinRoom(participant, url, name) {
  const { page } = participant;
  await page.goto(url);
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.locator('#call').waitFor({ state: 'visible' });
}

/** Totals over the page's open peer connections, from getStats(). */
export async function mediaStats(page) {
  return page.evaluate(async () => {
    const out = { peers: 0, framesDecoded: 0, bytesReceived: 0, audioBytesReceived: 0, pairs: [] };
    for (const pc of window.__signalboxPeers || []) {
      if (pc.connectionState === 'closed') continue;
      out.peers += 1;
      const report = await pc.getStats();
      let pairId = null;
      let selectedPair = null;
      report.forEach((s) => {
        // Firefox has no transport stats; it marks the pair in use with `selected`.
        if (s.type === 'candidate-pair' && s.selected === true) selectedPair = s;
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          out.framesDecoded += s.framesDecoded || 0;
          out.bytesReceived += s.bytesReceived || 0;
        }
        if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audioBytesReceived += s.bytesReceived || 0;
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      const pair = pairId ? report.get(pairId) : selectedPair;
      const local = pair ? report.get(pair.localCandidateId) : null;
      const remote = pair ? report.get(pair.remoteCandidateId) : null;
      out.pairs.push({
        state: pc.connectionState,
        local: local ? local.candidateType : null,
        remote: remote ? remote.candidateType : null,
        relayProtocol: local ? local.relayProtocol || null : null,
      });
    }
    return out;
  });
}

/**
 * Waits until video is being decoded, then proves it keeps flowing: `framesDecoded` and
 * `bytesReceived` both grow between two samples taken a second apart.
 */
export async function expectVideoFlowing(page, { timeoutMs = 25000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let first = await mediaStats(page);
  while (first.framesDecoded === 0) {
    if (Date.now() > deadline) throw new Error(`no video frames decoded within ${timeoutMs} ms: ${JSON.stringify(first)}`);
    await sleep(250);
    first = await mediaStats(page);
  }
  for (;;) {
    await sleep(1000);
    const second = await mediaStats(page);
    if (second.framesDecoded > first.framesDecoded && second.bytesReceived > first.bytesReceived) return second;
    if (Date.now() > deadline) {
      throw new Error(`video stopped: ${JSON.stringify(first)} then ${JSON.stringify(second)}`);
    }
    first = second;
  }
}

/** Remote tiles (other participants) currently in the grid. */
export function remoteTiles(page) {
  return page.locator('#grid .tile:not(.local)');
}

export function ensureArtifacts() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}

/** A room name unique to one test. */
export function roomName(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}
