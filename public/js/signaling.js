// WebSocket client for the signalbox room protocol (see docs/protocol.md).
//
// It keeps one room membership alive across network trouble: when the socket drops it
// reconnects with exponential back-off and jitter and re-sends `join` with the `resume` token
// from the last `joined`, so the server gives the same id back and delivers what was queued for
// us. Signals sent while the socket is down are held (bounded) and flushed after a resumed
// join; after a fresh join they are stale and dropped, because the peers they were for have
// already been told we left.
//
// In a locked room the server answers `join` with `waiting` (state `waiting`) until the host
// admits us (`joined`), turns us away (`declined`) or the wait times out (`lobby-timeout`). A
// join the room's knock limit refused (`rate-limited`) is tried again a little later.
//
// Events (CustomEvent, payload in `detail`): `state` ({state}), `joined`, `waiting`,
// `peer-joined`, `peer-left`, `signal`, `ice-servers`, `knock`, `knock-withdrawn`,
// `host-changed`, `room-locked`, `mute-request`, `ended`, `error` (the server's message objects).

const PING_EVERY_MS = 15000;
const DEAD_AFTER_MS = 40000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
const MAX_HELD_SIGNALS = 500;
/** Errors that end a pending join; reconnecting cannot help. */
const FATAL_CODES = new Set(['room-full', 'forbidden', 'unauthorized', 'declined', 'lobby-timeout', 'removed']);
/** Errors that end the membership whenever they come. */
const ENDING_CODES = new Set(['removed']);
/** How long to wait before knocking again after the room's knock limit said no. */
const KNOCK_RETRY_MS = 2000;

export class Signaling extends EventTarget {
  /**
   * @param {{url: string, room: string, name: string, token: string|null}} options
   */
  constructor({ url, room, name, token }) {
    super();
    this.url = url;
    this.room = room;
    this.name = name;
    this.token = token;
    this.ws = null;
    this.id = null;
    this.resumeToken = null;
    this.state = 'idle';
    this.attempt = 0;
    this.stopped = false;
    this.joinPending = false;
    this.sentResume = false;
    this.held = [];
    this.lastHeard = 0;
    this.pingTimer = null;
    this.retryTimer = null;
    this.onOnline = () => {
      if (this.state === 'reconnecting' && !this.ws) this.reconnectNow();
    };
    window.addEventListener('online', this.onOnline);
  }

  connect() {
    this.stopped = false;
    this.open();
  }

  /** Sends a `signal` to one peer; held while the socket is down. */
  signal(to, data) {
    const msg = { type: 'signal', to, data };
    if (this.isJoined()) {
      this.send(msg);
    } else if (this.held.length < MAX_HELD_SIGNALS) {
      this.held.push(msg);
    }
  }

  isJoined() {
    return this.state === 'connected' && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a host-only message (`lock`, `admit`, `remove`, …); the server checks who we are. */
  host(type, fields = {}) {
    return this.isJoined() && this.send({ type, ...fields });
  }

  /** Leaves the room for good: tells the server, closes, and stops reconnecting. */
  leave() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      try {
        this.ws.send(JSON.stringify({ type: 'leave' }));
      } catch {
        // closing anyway
      }
    }
    this.stop();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.pingTimer);
    clearTimeout(this.retryTimer);
    window.removeEventListener('online', this.onOnline);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, 'leaving');
    }
    this.setState('closed');
  }

  reconnectNow() {
    clearTimeout(this.retryTimer);
    this.open();
  }

  // --- internals, in call order ---

  open() {
    if (this.stopped) return;
    this.setState(this.attempt === 0 && !this.id ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      console.warn('signaling: cannot open WebSocket', err);
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      this.sendJoin(true);
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.keepAlive(), PING_EVERY_MS);
    };
    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      if (!this.stopped) this.scheduleReconnect();
    };
    // An error is always followed by close; nothing to do here, and logging it would only
    // repeat what the browser already reports.
    ws.onerror = () => {};
  }

  sendJoin(withResume) {
    const msg = { type: 'join', room: this.room, name: this.name };
    if (withResume && this.resumeToken) msg.resume = this.resumeToken;
    if (this.token) msg.token = this.token;
    this.sentResume = Boolean(msg.resume);
    this.joinPending = true;
    this.send(msg);
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  keepAlive() {
    if (!this.ws) return;
    if (Date.now() - this.lastHeard > DEAD_AFTER_MS) {
      // The socket looks open but nothing arrives: treat it as lost.
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close();
      clearInterval(this.pingTimer);
      this.scheduleReconnect();
      return;
    }
    this.send({ type: 'ping' });
  }

  onMessage(text) {
    this.lastHeard = Date.now();
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn('signaling: ignoring a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'joined':
        this.onJoined(msg);
        break;
      case 'pong':
        break;
      case 'error':
        this.onError(msg);
        break;
      case 'waiting':
        this.setState('waiting');
        this.emit('waiting', msg);
        break;
      case 'ended':
        this.stop();
        this.emit('ended', msg);
        break;
      case 'peer-joined':
      case 'peer-left':
      case 'signal':
      case 'ice-servers':
      case 'server-shutdown':
      case 'knock':
      case 'knock-withdrawn':
      case 'host-changed':
      case 'room-locked':
      case 'mute-request':
        this.emit(msg.type, msg);
        break;
      default:
        console.warn(`signaling: ignoring unknown message type ${msg.type}`);
    }
  }

  onJoined(msg) {
    const resumed = this.id !== null && msg.id === this.id;
    this.joinPending = false;
    this.id = msg.id;
    if (typeof msg.resume === 'string') this.resumeToken = msg.resume;
    this.attempt = 0;
    this.setState('connected');
    this.emit('joined', { ...msg, resumed });
    const held = this.held;
    this.held = [];
    if (resumed) for (const m of held) this.send(m);
  }

  onError(msg) {
    if (this.joinPending && msg.code === 'rate-limited' && this.state !== 'connected') {
      // Too many people knocking on this room at once: knock again shortly.
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.sendJoin(true), KNOCK_RETRY_MS / 2 + Math.random() * KNOCK_RETRY_MS);
      return;
    }
    if (ENDING_CODES.has(msg.code)) {
      this.stop();
      this.emit('error', msg);
      return;
    }
    if (this.joinPending && this.sentResume && !FATAL_CODES.has(msg.code)) {
      // The resume token was refused (expired or unknown): join as a new participant.
      this.resumeToken = null;
      this.sendJoin(false);
      return;
    }
    if (this.joinPending && FATAL_CODES.has(msg.code)) {
      this.emit('error', msg);
      this.stop();
      return;
    }
    this.emit('error', msg);
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.setState('reconnecting');
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The WebSocket address of this server's signaling endpoint. */
export function signalingUrl() {
  const scheme = location.protocol === 'http:' ? 'ws:' : 'wss:';
  return `${scheme}//${location.host}/ws`;
}
