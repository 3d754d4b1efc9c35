/**
 * signalbox client module: everything a web page needs to call through a signalbox server.
 *
 * One ES module with no dependencies, served by every signalbox server at `/sdk/signalbox.js`
 * (the server's own web app imports it too). It speaks the protocol of `docs/protocol.md`:
 *
 * - {@link Signaling}: one WebSocket to the server that stays alive across network trouble
 *   (reconnect with back-off and jitter, keep-alive pings, `resume`), in a room or in a space.
 * - {@link Room}: the people in a room and one {@link PeerSession} per remote participant,
 *   negotiated with perfect negotiation; remote tracks, peers coming and going, app messages.
 * - {@link PeerSession}: one `RTCPeerConnection` with perfect negotiation, trickle ICE, ICE
 *   restarts and TURN credential renewal through `setConfiguration`.
 * - {@link Space}: who is online in a space, and direct calls between them (call, accept,
 *   decline, cancel, hang up, block); an accepted call is a private two-person {@link Room}.
 *
 * Every class is an `EventTarget`; events are `CustomEvent`s with their payload in `detail`.
 * See `docs/sdk.md` for a walk-through and a complete example page.
 *
 * @module signalbox
 */

/** This page load's identity in peer messages (`sid`); a reload is a new session. */
const SESSION_ID = randomHex(8);

// ---------------------------------------------------------------------------------------
// Signaling: the WebSocket

const PING_EVERY_MS = 15000;
const DEAD_AFTER_MS = 40000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
const MAX_HELD_SIGNALS = 500;
/** Errors that end a pending join or hello; reconnecting cannot help. */
const FATAL_CODES = new Set(['room-full', 'forbidden', 'unauthorized', 'declined', 'lobby-timeout', 'removed']);
/** Errors that end a room membership whenever they come. */
const ENDING_CODES = new Set(['removed']);
/** How long to wait before knocking again after the room's knock limit said no. */
const KNOCK_RETRY_MS = 2000;
/**
 * After `server-shutdown` with `reconnect` (another node of a cluster is up), the reconnect
 * waits a random delay up to this long, so that a node's clients do not all arrive at once.
 */
const MOVE_SPREAD_MS = 1000;
/** Server messages passed on as events of the same name, as they are. */
const FORWARDED = new Set([
  'peer-joined', 'peer-left', 'signal', 'ice-servers', 'knock', 'knock-withdrawn',
  'host-changed', 'room-locked', 'mute-request',
  'person-joined', 'person-left', 'person-busy', 'ring', 'ringing', 'call-accepted', 'call-declined',
  'call-busy', 'call-cancelled', 'call-missed', 'call-ended',
]);

/**
 * The WebSocket address of a signalbox server's signaling endpoint.
 *
 * @param {string} [server] the server's origin, such as `https://calls.example.org`; by default
 *   the origin of the current page
 * @returns {string} `wss://HOST/ws` (or `ws://` for a plain `http:` origin)
 */
export function signalingUrl(server = globalThis.location ? globalThis.location.origin : '') {
  const url = new URL('/ws', server);
  url.protocol = url.protocol === 'http:' ? 'ws:' : 'wss:';
  return url.href;
}

/**
 * One signaling connection, kept alive across network trouble.
 *
 * In a **room** (`room` given): the connection opens with `join`. When the socket drops it
 * reconnects with exponential back-off and jitter and sends `join` again with the `resume`
 * token from the last `joined`, so the server gives the same id back and delivers what was
 * queued. Signals sent while the socket is down are held (bounded) and flushed after a resumed
 * join; after a fresh join they are stale and dropped, because their peers were told we left.
 * In a locked room the server answers `join` with `waiting` until the host admits us.
 * A `server-shutdown` with `reconnect: true` (a node of a cluster drains while others are up)
 * makes it reconnect and resume within a second instead of waiting for the server to close.
 *
 * In a **space** (`space` given): the connection opens with `hello` and gets the people list;
 * it may then join one room at a time ({@link Signaling#joinRoom}, what {@link Space} does for
 * an accepted call) and leave it again ({@link Signaling#leaveRoom}) without closing. A
 * reconnect sends `hello` with the `resume` token from `people`, which covers the space and
 * the room.
 *
 * Events: `state` ({state}: `connecting`, `connected`, `waiting`, `reconnecting`, `closed`),
 * `joined` (the server's message plus `resumed`), `people` (the same), `waiting`, `ended`,
 * `error` (the server's `error` message: {code, message}), `room-lost` (a reconnect could not
 * take the room membership back), and every other server message under its own type:
 * `peer-joined`, `peer-left`, `signal`, `ice-servers`, `server-shutdown`, `knock`,
 * `knock-withdrawn`, `host-changed`, `room-locked`, `mute-request`, `person-joined`,
 * `person-left`, `person-busy`, `ring`, `ringing`, `call-accepted`, `call-declined`,
 * `call-busy`, `call-cancelled`, `call-missed`, `call-ended`.
 */
export class Signaling extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.url] the `/ws` address ({@link signalingUrl}); this page's server by default
   * @param {string|null} [options.room] the room to join (room mode)
   * @param {string|null} [options.space] the space to say `hello` to (space mode)
   * @param {string} [options.name] display name, at most 64 characters
   * @param {string|null} [options.token] an invitation, for servers in `[access] mode = "token"`
   */
  constructor({ url = signalingUrl(), room = null, space = null, name = '', token = null } = {}) {
    super();
    this.url = url;
    /** The room joined or being joined, or null. */
    this.room = room;
    /** The space, or null in room mode. */
    this.space = space;
    this.name = name;
    /** The invitation sent with `join` (room mode) or `hello` (space mode). */
    this.token = token;
    /** The invitation for the room joined in space mode (a call's private room token). */
    this.roomToken = null;
    this.ws = null;
    /** Our peer id in the room, or null. */
    this.id = null;
    /** Our person id in the space, or null. */
    this.you = null;
    this.resumeToken = null;
    this.spaceResumeToken = null;
    /** `connecting`, `connected`, `waiting`, `reconnecting`, `closed` or `idle`. */
    this.state = 'idle';
    this.attempt = 0;
    this.stopped = false;
    this.joinPending = false;
    this.helloPending = false;
    /** Space mode: the socket was replaced and the room is not joined again yet. */
    this.roomAway = false;
    this.sentResume = false;
    this.held = [];
    this.lastHeard = 0;
    this.pingTimer = null;
    this.retryTimer = null;
    this.onOnline = () => {
      if (this.state === 'reconnecting' && !this.ws) this.reconnectNow();
    };
    globalThis.addEventListener?.('online', this.onOnline);
  }

  /** Opens the connection (and keeps reopening it until {@link Signaling#leave} or `stop`). */
  connect() {
    this.stopped = false;
    this.open();
  }

  /**
   * Sends a `signal` to one peer of the room; held while the socket is down.
   * @param {string} to the peer's id
   * @param {object} data anything JSON; the peer gets it as is
   */
  signal(to, data) {
    const msg = { type: 'signal', to, data };
    if (this.isJoined()) {
      this.send(msg);
    } else if (this.held.length < MAX_HELD_SIGNALS) {
      this.held.push(msg);
    }
  }

  /** Whether we are in a room right now, with an open socket. */
  isJoined() {
    return this.state === 'connected' && this.id !== null && !this.joinPending && !this.roomAway && this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Sends a host-only message (`lock`, `admit`, `remove`, …); the server checks who we are.
   * @param {string} type
   * @param {object} [fields]
   * @returns {boolean} whether it was sent
   */
  host(type, fields = {}) {
    return this.isJoined() && this.send({ type, ...fields });
  }

  /**
   * Joins a room on this connection (space mode: the private room of an accepted call).
   * @param {string} room
   * @param {string|null} token the room's invitation (`call-accepted` carries one)
   */
  joinRoom(room, token) {
    if (this.room === room && this.id !== null) {
      // The same room after a reconnect: resume our place in it.
      this.roomToken = token;
      this.sendJoin(true);
      return;
    }
    this.room = room;
    this.roomToken = token;
    this.id = null;
    this.resumeToken = null;
    this.held = [];
    this.sendJoin(false);
  }

  /** Leaves the room but keeps the connection (space mode). */
  leaveRoom() {
    if (this.room !== null) this.send({ type: 'leave' });
    this.forgetRoom();
  }

  /** Leaves the room for good (`leave`): tells the server, closes, and stops reconnecting. */
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

  /** Closes without a word to the server (it keeps our place for the reconnect grace). */
  stop() {
    this.stopped = true;
    clearInterval(this.pingTimer);
    clearTimeout(this.retryTimer);
    globalThis.removeEventListener?.('online', this.onOnline);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, 'leaving');
    }
    this.setState('closed');
  }

  /** Reconnects at once instead of waiting for the back-off timer. */
  reconnectNow() {
    clearTimeout(this.retryTimer);
    this.open();
  }

  /**
   * Sends one protocol message as it is.
   * @param {object} msg
   * @returns {boolean} false when the socket is not open
   */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  // --- internals, in call order ---

  open() {
    if (this.stopped) return;
    const first = this.attempt === 0 && this.id === null && this.you === null;
    this.setState(first ? 'connecting' : 'reconnecting');
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
      if (this.space !== null) {
        // The room comes back after `people`, when the server repeats `call-accepted`.
        this.roomAway = this.room !== null;
        this.sendHello(true);
      } else {
        this.sendJoin(true);
      }
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

  sendHello(withResume) {
    const msg = { type: 'hello', space: this.space, name: this.name };
    if (withResume && this.spaceResumeToken) msg.resume = this.spaceResumeToken;
    if (this.token) msg.token = this.token;
    this.sentResume = Boolean(msg.resume);
    this.helloPending = true;
    this.send(msg);
  }

  sendJoin(withResume) {
    const msg = { type: 'join', room: this.room, name: this.name };
    if (withResume && this.resumeToken) msg.resume = this.resumeToken;
    const token = this.space !== null ? this.roomToken : this.token;
    if (token) msg.token = token;
    this.sentResume = Boolean(msg.resume);
    this.joinPending = true;
    this.send(msg);
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
      case 'people':
        this.onPeople(msg);
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
        if (this.space !== null) this.forgetRoom();
        else this.stop();
        this.emit('ended', msg);
        break;
      case 'server-shutdown':
        this.emit('server-shutdown', msg);
        if (msg.reconnect === true) this.moveSoon();
        break;
      default:
        if (FORWARDED.has(msg.type)) this.emit(msg.type, msg);
        else console.warn(`signaling: ignoring unknown message type ${msg.type}`);
    }
  }

  onPeople(msg) {
    const resumed = this.you !== null && msg.you === this.you;
    this.helloPending = false;
    if (!resumed && this.id !== null) {
      // A new person: the room membership of the old one is gone with it.
      this.forgetRoom();
      this.emit('room-lost', {});
    }
    this.you = typeof msg.you === 'string' ? msg.you : null;
    if (typeof msg.resume === 'string') this.spaceResumeToken = msg.resume;
    this.attempt = 0;
    this.setState('connected');
    this.emit('people', { ...msg, resumed });
  }

  onJoined(msg) {
    const resumed = this.id !== null && msg.id === this.id;
    this.joinPending = false;
    this.roomAway = false;
    this.id = msg.id;
    if (typeof msg.resume === 'string') this.resumeToken = msg.resume;
    this.attempt = 0;
    this.setState('connected');
    this.emit('joined', { ...msg, resumed });
    if (resumed) this.flushHeld();
    else this.held = [];
  }

  flushHeld() {
    if (!this.isJoined()) return;
    const held = this.held;
    this.held = [];
    for (const m of held) this.send(m);
  }

  onError(msg) {
    if (this.joinPending && msg.code === 'rate-limited' && this.state !== 'connected') {
      // Too many people knocking on this room at once: knock again shortly.
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.sendJoin(true), KNOCK_RETRY_MS / 2 + Math.random() * KNOCK_RETRY_MS);
      return;
    }
    if (this.helloPending) {
      this.helloPending = false;
      if (this.sentResume && !FATAL_CODES.has(msg.code)) {
        // The resume token was refused (expired or unknown): say hello as a new person.
        this.spaceResumeToken = null;
        this.sendHello(false);
        return;
      }
      // Refused at the door: closed before anyone hears why, so listeners see the end state.
      this.stop();
      this.emit('error', msg);
      return;
    }
    if (ENDING_CODES.has(msg.code)) {
      this.endRoom();
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
      this.endRoom();
      return;
    }
    this.emit('error', msg);
  }

  /** The room is over for us: in room mode that is the end of the connection. */
  endRoom() {
    if (this.space === null) {
      this.stop();
      return;
    }
    this.forgetRoom();
    this.emit('room-lost', {});
  }

  forgetRoom() {
    this.room = null;
    this.roomToken = null;
    this.id = null;
    this.resumeToken = null;
    this.joinPending = false;
    this.roomAway = false;
    this.held = [];
  }

  /** Reconnects and resumes after a random delay of up to {@link MOVE_SPREAD_MS}. */
  moveSoon() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.move(), Math.random() * MOVE_SPREAD_MS);
  }

  /** Leaves a draining node's socket (keeping our place, as a drop does) for a new one. */
  move() {
    if (this.stopped) return;
    const ws = this.ws;
    if (ws) {
      this.ws = null;
      ws.onclose = null;
      clearInterval(this.pingTimer);
      ws.close(1000, 'moving');
    }
    this.open();
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

// ---------------------------------------------------------------------------------------
// PeerSession: one RTCPeerConnection

const DISCONNECTED_GRACE_MS = 4000;
const RESTART_COOLDOWN_MS = 8000;

/**
 * One `RTCPeerConnection` to one remote participant, negotiated with the "perfect negotiation"
 * pattern: either side may start a (re)negotiation at any time; when both offer at once the
 * polite side rolls back and answers, the impolite side ignores the colliding offer. Which
 * side is polite follows from comparing the two ids, so both agree without a message.
 *
 * A connection that goes `failed`, or stays `disconnected` for 4 s, gets an ICE restart (at
 * most one per 8 s). Fresh TURN credentials are applied with {@link PeerSession#setIceServers}.
 * A data channel (label `chat`, negotiated with id 0) carries app messages as JSON.
 *
 * Everything for the other side goes through `send(data)` (a {@link Room} routes it over
 * signaling).
 *
 * Events: `track` (remote media changed; see `remoteStream`), `state` ({connection}),
 * `channel-open`, `message` ({data}: an object from the data channel).
 */
export class PeerSession extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.id the remote participant's id
   * @param {boolean} o.polite
   * @param {RTCIceServer[]} o.iceServers
   * @param {MediaStream} o.localStream the stream local tracks belong to
   * @param {{audio: MediaStreamTrack|null, video: MediaStreamTrack|null}} o.tracks
   * @param {boolean} o.initiator whether we make the first offer (the newcomer does)
   * @param {(data: object) => void} o.send
   */
  constructor({ id, polite, iceServers, localStream, tracks, initiator, send }) {
    super();
    this.id = id;
    this.polite = polite;
    this.send = send;
    this.localStream = localStream;
    /** The other side's audio and video, as one stream. */
    this.remoteStream = new MediaStream();
    /** The other page's session id (`sid`), once known. */
    this.remoteSid = null;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.closed = false;
    this.disconnectedTimer = null;
    this.lastRestart = 0;
    /** The `RTCPeerConnection`, for `getStats`, receivers and the like. */
    this.pc = new RTCPeerConnection({ iceServers });
    this.wire();
    // Both sides create the chat channel with the same fixed id, so neither has to wait for
    // the other's `datachannel` event.
    this.channel = this.pc.createDataChannel('chat', { negotiated: true, id: 0 });
    this.wireChannel();
    for (const kind of ['audio', 'video']) {
      const track = tracks[kind];
      if (initiator) {
        // The offerer always offers both kinds, so a peer who has a camera can send video to
        // one who joined without.
        this.pc.addTransceiver(track || kind, { direction: 'sendrecv', streams: [localStream] });
      } else if (track) {
        // Added before the remote offer is applied, so it takes the offer's m-line.
        this.pc.addTrack(track, localStream);
      }
    }
  }

  /** Whether app messages can go over the data channel right now. */
  channelOpen() {
    return this.channel.readyState === 'open';
  }

  /**
   * Sends an app message over the data channel.
   * @param {object} data
   * @returns {boolean} false when the channel is not open
   */
  sendOnChannel(data) {
    if (!this.channelOpen()) return false;
    try {
      this.channel.send(JSON.stringify(data));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Applies a `description` or `candidate` message from the other side.
   * @param {{kind: string, description?: RTCSessionDescriptionInit, candidate?: RTCIceCandidateInit}} data
   */
  async handleSignal(data) {
    const pc = this.pc;
    try {
      if (data.kind === 'description' && data.description) {
        const description = data.description;
        const readyForOffer =
          !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
        const collision = description.type === 'offer' && !readyForOffer;
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        this.settingRemoteAnswer = description.type === 'answer';
        await pc.setRemoteDescription(description);
        this.settingRemoteAnswer = false;
        if (description.type === 'offer') {
          await pc.setLocalDescription();
          this.send({ kind: 'description', description: pc.localDescription.toJSON() });
        }
      } else if (data.kind === 'candidate' && data.candidate) {
        try {
          await pc.addIceCandidate(data.candidate);
        } catch (err) {
          if (!this.ignoreOffer) throw err;
        }
      }
    } catch (err) {
      this.settingRemoteAnswer = false;
      if (!this.closed) console.warn(`peer ${this.id}: signal not applied`, err);
    }
  }

  /**
   * Sends `track` (or nothing) as our `kind` media, renegotiating only when needed.
   * @param {'audio'|'video'} kind
   * @param {MediaStreamTrack|null} track
   */
  async setLocalTrack(kind, track) {
    if (this.closed) return;
    const live = this.pc.getTransceivers().filter((t) => !t.stopped && t.receiver.track.kind === kind);
    const transceiver = live.find((t) => t.sender.track) || live[0];
    if (!transceiver) {
      if (track) this.pc.addTrack(track, this.localStream);
      return;
    }
    await transceiver.sender.replaceTrack(track);
    if (track && (transceiver.direction === 'recvonly' || transceiver.direction === 'inactive')) {
      // A transceiver the remote offer created: it has no stream yet and must start sending,
      // which needs one renegotiation. A plain switch of devices needs none.
      transceiver.sender.setStreams(this.localStream);
      transceiver.direction = 'sendrecv';
    }
  }

  /**
   * Uses fresh STUN/TURN servers (the server's `ice-servers`) from now on, for ICE restarts too.
   * @param {RTCIceServer[]} iceServers
   */
  setIceServers(iceServers) {
    if (this.closed) return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (err) {
      console.warn(`peer ${this.id}: new ICE servers not applied`, err);
    }
  }

  /** Restarts ICE now, unless one ran less than 8 s ago (then once the cool-down is over). */
  restartIce() {
    const now = Date.now();
    if (now - this.lastRestart < RESTART_COOLDOWN_MS) {
      // Try again once the cool-down is over if it is still broken.
      clearTimeout(this.disconnectedTimer);
      this.disconnectedTimer = setTimeout(() => {
        this.disconnectedTimer = null;
        const s = this.pc.iceConnectionState;
        if (s === 'failed' || s === 'disconnected') this.restartIce();
      }, RESTART_COOLDOWN_MS - (now - this.lastRestart));
      return;
    }
    this.lastRestart = now;
    this.pc.restartIce();
  }

  /** @returns {Promise<RTCStatsReport>} */
  async getStats() {
    return this.pc.getStats();
  }

  /** Closes the connection and stops the remote tracks. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.disconnectedTimer);
    try {
      this.channel.close();
    } catch {
      // already closed
    }
    this.pc.close();
    for (const t of this.remoteStream.getTracks()) t.stop();
  }

  // --- internals ---

  wire() {
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        this.send({ kind: 'description', description: pc.localDescription.toJSON() });
      } catch (err) {
        if (!this.closed) console.warn(`peer ${this.id}: could not make an offer`, err);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.send({ kind: 'candidate', candidate: candidate.toJSON() });
    };
    pc.ontrack = ({ track }) => {
      for (const old of this.remoteStream.getTracks()) {
        if (old.kind === track.kind && old !== track) this.remoteStream.removeTrack(old);
      }
      if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
      track.onunmute = () => this.emit('track', {});
      track.onmute = () => this.emit('track', {});
      this.emit('track', {});
    };
    pc.onconnectionstatechange = () => this.onConnectionState();
    pc.oniceconnectionstatechange = () => this.onConnectionState();
  }

  wireChannel() {
    const ch = this.channel;
    ch.onopen = () => this.emit('channel-open', {});
    ch.onmessage = (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (data && typeof data === 'object') this.emit('message', { data });
    };
  }

  onConnectionState() {
    if (this.closed) return;
    const pc = this.pc;
    const state = pc.connectionState === 'new' ? pc.iceConnectionState : pc.connectionState;
    if (pc.iceConnectionState === 'failed' || pc.connectionState === 'failed') {
      this.restartIce();
    } else if (pc.iceConnectionState === 'disconnected') {
      if (!this.disconnectedTimer) {
        this.disconnectedTimer = setTimeout(() => {
          this.disconnectedTimer = null;
          if (this.pc.iceConnectionState === 'disconnected') this.restartIce();
        }, DISCONNECTED_GRACE_MS);
      }
    } else {
      clearTimeout(this.disconnectedTimer);
      this.disconnectedTimer = null;
    }
    this.emit('state', { connection: state });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// ---------------------------------------------------------------------------------------
// Room: the peers of one room

/**
 * The participants of the room a {@link Signaling} connection is in, with one
 * {@link PeerSession} each: the newcomer offers to everyone listed in `joined` (with an audio
 * and a video transceiver, so it can receive video without a camera); the others answer when
 * that offer arrives. Fresh `ice-servers` go to every connection. A resumed `joined` keeps the
 * connections; a fresh one starts over. Signals carry this page's `sid`, so a participant who
 * reloads under the same id is recognised as a new page.
 *
 * App messages ({@link Room#send}) go over the peer's data channel once it is open, through
 * signaling before. `{kind: 'bye'}` is the SDK's own: the sender hangs up.
 *
 * Events: `joined` (the server's `joined` plus `resumed`), `peer-joined` ({id, name, host,
 * reason: `listed` | `joined` | `signal`}), `peer-left` ({id, name, quiet}; `quiet` when the
 * peer was replaced by its own reload or a fresh join, not gone), `track` ({id, stream}),
 * `connection` ({id, state}), `channel-open` ({id}), `message` ({id, data}), `ended` (the
 * room was ended for everyone, or left).
 */
export class Room extends EventTarget {
  /**
   * @param {object} o
   * @param {Signaling} o.signaling the connection, in the room or about to join it
   * @param {MediaStream} [o.localStream] what we send: its first audio and first video track
   *   at the moment a connection is made; later changes go through {@link Room#setLocalTrack}
   */
  constructor({ signaling, localStream = new MediaStream() }) {
    super();
    this.signaling = signaling;
    this.localStream = localStream;
    /** @type {Map<string, {id: string, name: string, session: PeerSession|null}>} */
    this.peers = new Map();
    /** Our own peer id, once joined. */
    this.id = null;
    this.iceServers = [];
    this.closed = false;
    this.listening = new AbortController();
    const on = (type, handler) => signaling.addEventListener(type, (e) => handler.call(this, e.detail), { signal: this.listening.signal });
    on('joined', this.onJoined);
    on('peer-joined', this.onPeerJoined);
    on('peer-left', (msg) => this.removePeer(msg.id, { quiet: false }));
    on('signal', this.onSignal);
    on('ice-servers', this.onIceServers);
    on('ended', () => this.close());
    on('room-lost', () => this.close());
  }

  /**
   * Sends an app message to one peer: over its data channel when open, else through signaling.
   * @param {string} id
   * @param {object} data an object with a `kind` other than `description`, `candidate`, `bye`
   */
  send(id, data) {
    const entry = this.peers.get(id);
    if (entry && entry.session && entry.session.sendOnChannel(data)) return;
    if (!this.closed) this.signaling.signal(id, { ...data, sid: SESSION_ID });
  }

  /** Sends an app message to everyone in the room. @param {object} data */
  broadcast(data) {
    for (const id of this.peers.keys()) this.send(id, data);
  }

  /**
   * Sends `track` as our `kind` media to everyone (a new camera, the screen, or nothing).
   * @param {'audio'|'video'} kind
   * @param {MediaStreamTrack|null} track
   */
  setLocalTrack(kind, track) {
    for (const entry of this.peers.values()) {
      if (entry.session) entry.session.setLocalTrack(kind, track).catch((err) => console.warn('track not replaced', err));
    }
  }

  /** Hangs up: tells every peer (`bye`), leaves the room on the server, closes every connection. */
  leave() {
    if (this.closed) return;
    this.broadcast({ kind: 'bye' });
    if (this.signaling.space !== null) this.signaling.leaveRoom();
    else this.signaling.leave();
    this.close();
  }

  /** Closes every connection and stops following the signaling connection. */
  close() {
    if (this.closed) return;
    for (const id of [...this.peers.keys()]) this.removePeer(id, { quiet: true });
    this.closed = true;
    this.listening.abort();
    this.emit('ended', {});
  }

  // --- signaling events ---

  onJoined(msg) {
    this.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
    const listed = Array.isArray(msg.peers) ? msg.peers.filter((p) => p && typeof p.id === 'string') : [];
    if (msg.resumed) {
      // Same id: existing connections stay. Drop those who left meanwhile; newcomers will
      // offer to us themselves.
      const present = new Set(listed.map((p) => p.id));
      for (const id of [...this.peers.keys()]) if (!present.has(id)) this.removePeer(id, { quiet: false });
      for (const p of listed) if (!this.peers.has(p.id)) this.addPeer(p, 'listed');
      for (const entry of this.peers.values()) if (entry.session) entry.session.setIceServers(this.iceServers);
    } else {
      // A fresh membership: every old connection belongs to the previous id.
      for (const id of [...this.peers.keys()]) this.removePeer(id, { quiet: true });
      this.id = msg.id;
      for (const p of listed) {
        this.addPeer(p, 'listed');
        this.ensureSession(p.id, true);
      }
    }
    this.emit('joined', { ...msg, peers: listed });
  }

  onPeerJoined(msg) {
    const p = msg.peer;
    if (!p || typeof p.id !== 'string' || p.id === this.id) return;
    const existing = this.peers.get(p.id);
    // Came back under the same id after a reload: the old connection is dead.
    if (existing && existing.session) this.removePeer(p.id, { quiet: true });
    this.addPeer(p, 'joined');
  }

  onSignal(msg) {
    const from = msg.from;
    const data = msg.data;
    if (typeof from !== 'string' || !data || typeof data !== 'object') return;
    if (data.kind === 'description' || data.kind === 'candidate') this.onNegotiation(from, data);
    else this.onAppMessage(from, data);
  }

  onNegotiation(from, data) {
    let entry = this.peers.get(from);
    if (entry && entry.session && data.sid && entry.session.remoteSid && data.sid !== entry.session.remoteSid) {
      // The other side reloaded and kept its id: start over with its new page.
      entry.session.close();
      entry.session = null;
    }
    if (!entry || !entry.session) {
      // Only an offer can start a connection; stray answers or candidates from an old
      // page are dropped.
      if (data.kind !== 'description' || !data.description || data.description.type !== 'offer') return;
      if (!entry) entry = this.addPeer({ id: from }, 'signal');
      this.ensureSession(from, false);
    }
    if (!entry.session.remoteSid && data.sid) entry.session.remoteSid = data.sid;
    entry.session.handleSignal(data);
  }

  onAppMessage(from, data) {
    if (data.kind === 'bye') {
      this.removePeer(from, { quiet: false });
      return;
    }
    this.emit('message', { id: from, data });
  }

  onIceServers(msg) {
    if (!Array.isArray(msg.iceServers)) return;
    this.iceServers = msg.iceServers;
    for (const entry of this.peers.values()) if (entry.session) entry.session.setIceServers(this.iceServers);
  }

  // --- peers ---

  addPeer(p, reason) {
    let entry = this.peers.get(p.id);
    if (entry) return entry;
    const name = typeof p.name === 'string' ? p.name.slice(0, 64) : '';
    entry = { id: p.id, name, session: null };
    this.peers.set(p.id, entry);
    this.emit('peer-joined', { id: p.id, name, host: p.host === true, reason });
    return entry;
  }

  ensureSession(id, initiator) {
    const entry = this.peers.get(id);
    if (entry.session) return entry.session;
    const session = new PeerSession({
      id,
      polite: this.id < id,
      iceServers: this.iceServers,
      localStream: this.localStream,
      tracks: { audio: this.localStream.getAudioTracks()[0] || null, video: this.localStream.getVideoTracks()[0] || null },
      initiator,
      send: (data) => this.signaling.signal(id, { ...data, sid: SESSION_ID }),
    });
    entry.session = session;
    const current = () => entry.session === session && this.peers.get(id) === entry;
    session.addEventListener('track', () => {
      if (current()) this.emit('track', { id, stream: session.remoteStream });
    });
    session.addEventListener('state', (e) => {
      if (current()) this.emit('connection', { id, state: e.detail.connection });
    });
    session.addEventListener('channel-open', () => {
      if (current()) this.emit('channel-open', { id });
    });
    session.addEventListener('message', (e) => {
      if (current()) this.onAppMessage(id, e.detail.data);
    });
    return session;
  }

  removePeer(id, { quiet }) {
    const entry = this.peers.get(id);
    if (!entry) return;
    if (entry.session) entry.session.close();
    this.peers.delete(id);
    this.emit('peer-left', { id, name: entry.name, quiet });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// ---------------------------------------------------------------------------------------
// Space: people and direct calls

/**
 * A space: everyone connected to it sees who else is online and can call them directly.
 *
 * `people` is kept up to date from the server (`people`, `person-joined`, `person-left`,
 * `person-busy`). One call at a time: {@link Space#call} rings a person; an incoming `ring`
 * is answered with {@link Space#accept} or {@link Space#decline}. When a call is accepted the
 * connection joins the call's private room and `call-accepted` hands over a {@link Room} for
 * it, already sending the local stream given to `call` or `accept`. {@link Space#hangUp} ends
 * it; so does the other side hanging up (`call-ended`).
 *
 * Events: `state` ({state}, as {@link Signaling}), `people` ({you, people, resumed}),
 * `person-joined` ({person}), `person-left` ({id, person}), `person-busy` ({id, busy}),
 * `ring` ({call, from, name, audioOnly}: someone calls us), `ringing` ({call, to}: our call
 * rings), `call-accepted` ({call, peer, name, audioOnly, outgoing, room}),
 * `call-declined`, `call-busy`, `call-cancelled`, `call-missed` ({call, peer, name, outgoing}),
 * `call-ended` ({call, peer, name, outgoing, byUs}), `error` (the server's `error`: {code, message}).
 */
export class Space extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.space the space's name (rules as room names: 1–64 of `A-Za-z0-9._-`)
   * @param {string} [options.name] our display name
   * @param {string} [options.url] the `/ws` address ({@link signalingUrl}); this page's server by default
   * @param {string|null} [options.token] an invitation for the space (`[access] mode = "token"`)
   */
  constructor({ space, name = '', url = signalingUrl(), token = null }) {
    super();
    /** The connection; its `state` event is forwarded. */
    this.signaling = new Signaling({ url, space, name, token });
    /** Our own person id. */
    this.you = null;
    /** @type {Map<string, {id: string, name: string, busy: boolean}>} everyone else in the space */
    this.people = new Map();
    /**
     * The call in progress, or null: {id, peer, name, audioOnly, outgoing, state (`calling`,
     * `ringing`, `accepting`, `active`, `cancelling`), localStream}.
     */
    this.current = null;
    /** The private room of the active call. @type {Room|null} */
    this.room = null;
    const s = this.signaling;
    const on = (type, handler) => s.addEventListener(type, (e) => handler.call(this, e.detail));
    on('state', (d) => this.emit('state', d));
    on('people', this.onPeople);
    on('person-joined', this.onPersonJoined);
    on('person-left', this.onPersonLeft);
    on('person-busy', this.onPersonBusy);
    on('ring', this.onRing);
    on('ringing', this.onRinging);
    on('call-accepted', this.onAccepted);
    for (const outcome of ['call-declined', 'call-busy', 'call-cancelled', 'call-missed']) on(outcome, (msg) => this.onOutcome(outcome, msg));
    on('call-ended', this.onEnded);
    on('room-lost', () => this.finish('call-ended', { byUs: false }));
    on('error', this.onError);
  }

  /** Connects and says hello; `people` follows. */
  connect() {
    this.signaling.connect();
  }

  /**
   * Rings a person. `ringing` follows, then one of `call-accepted`, `call-declined`,
   * `call-busy`, `call-missed`; {@link Space#cancel} stops ringing.
   * @param {string} to the person's id
   * @param {object} [o]
   * @param {boolean} [o.audioOnly] ask for an audio-only call (the other side is told)
   * @param {MediaStream} [o.localStream] what to send once the call is accepted
   * @returns {boolean} false when a call is already in progress or the connection is down
   */
  call(to, { audioOnly = false, localStream = new MediaStream() } = {}) {
    if (this.current || !this.signaling.send({ type: 'call', to, audioOnly })) return false;
    const person = this.people.get(to);
    this.current = { id: null, peer: to, name: person ? person.name : '', audioOnly, outgoing: true, state: 'calling', localStream };
    return true;
  }

  /**
   * Accepts the ringing incoming call; `call-accepted` follows with the call's {@link Room}.
   * @param {object} [o]
   * @param {MediaStream} [o.localStream] what to send in the call
   */
  accept({ localStream = new MediaStream() } = {}) {
    const c = this.current;
    if (!c || c.outgoing || c.state !== 'ringing') return;
    c.state = 'accepting';
    c.localStream = localStream;
    this.signaling.send({ type: 'accept', call: c.id });
  }

  /** Declines the ringing incoming call. */
  decline() {
    const c = this.current;
    if (!c || c.outgoing || c.state !== 'ringing') return;
    this.signaling.send({ type: 'decline', call: c.id });
    this.current = null;
  }

  /** Stops ringing our outgoing call (`call-cancelled` follows). */
  cancel() {
    const c = this.current;
    if (!c || !c.outgoing || (c.state !== 'ringing' && c.state !== 'calling')) return;
    if (c.id === null) {
      // Not ringing yet: cancel as soon as the server says it rings.
      c.state = 'cancelling';
      return;
    }
    c.state = 'cancelling';
    this.signaling.send({ type: 'cancel', call: c.id });
  }

  /** Ends the call: hangs up an active one, cancels an outgoing one, declines an incoming one. */
  hangUp() {
    const c = this.current;
    if (!c) return;
    if (c.state === 'active' && this.room) {
      this.room.leave();
      this.room = null;
      this.finish('call-ended', { byUs: true });
    } else if (c.state === 'accepting') {
      // Accepted, not yet confirmed: hang up as soon as `call-accepted` arrives.
      c.state = 'cancelling';
    } else if (c.outgoing) {
      this.cancel();
    } else if (c.state === 'ringing') {
      this.decline();
    }
  }

  /**
   * Blocks a person for the rest of this connection's session: their calls no longer ring
   * here. A call ringing from them is declined.
   * @param {string} id the person's id
   */
  block(id) {
    const c = this.current;
    if (c && !c.outgoing && c.peer === id && c.state === 'ringing') this.decline();
    this.signaling.send({ type: 'block', id });
  }

  /** Unblocks a person blocked with {@link Space#block}. @param {string} id */
  unblock(id) {
    this.signaling.send({ type: 'unblock', id });
  }

  /** Leaves the space for good (`leave-space`), ending any call, and closes the connection. */
  leave() {
    if (this.room) {
      this.room.close();
      this.room = null;
    }
    this.current = null;
    this.signaling.send({ type: 'leave-space' });
    this.signaling.stop();
  }

  // --- server messages ---

  onPeople(msg) {
    const c = this.current;
    if (c && (c.state === 'calling' || c.state === 'ringing')) {
      // Back after a dropped connection: a ring does not wait for a resume, it is over.
      this.finish(c.outgoing ? 'call-cancelled' : 'call-missed', {});
    } else if (c && msg.resumed && c.id !== null && msg.call !== c.id) {
      // `people` names the accepted call that goes on; ours is not it, so it ended while we
      // were away (its `call-ended` may follow, or may have gone to the dropped socket).
      if (this.room) this.room.close();
      this.room = null;
      this.finish('call-ended', { byUs: false });
    }
    // When the call goes on, `call-accepted` follows and the room is joined again.
    this.you = typeof msg.you === 'string' ? msg.you : null;
    this.people.clear();
    for (const p of Array.isArray(msg.people) ? msg.people : []) {
      const person = cleanPerson(p);
      if (person && person.id !== this.you) this.people.set(person.id, person);
    }
    this.emit('people', { you: this.you, people: [...this.people.values()], resumed: msg.resumed === true });
  }

  onPersonJoined(msg) {
    const person = cleanPerson(msg.person);
    if (!person || person.id === this.you) return;
    this.people.set(person.id, person);
    this.emit('person-joined', { person });
  }

  onPersonLeft(msg) {
    const person = this.people.get(msg.id);
    if (!person) return;
    this.people.delete(msg.id);
    this.emit('person-left', { id: msg.id, person });
  }

  onPersonBusy(msg) {
    const person = this.people.get(msg.id);
    if (!person) return;
    person.busy = msg.busy === true;
    this.emit('person-busy', { id: msg.id, busy: person.busy });
  }

  onRing(msg) {
    if (typeof msg.call !== 'string' || typeof msg.from !== 'string') return;
    if (this.current) {
      // The server rings only people who are free; a ring now is one too many.
      this.signaling.send({ type: 'decline', call: msg.call });
      return;
    }
    const person = this.people.get(msg.from);
    const name = typeof msg.name === 'string' ? msg.name.slice(0, 64) : person ? person.name : '';
    this.current = { id: msg.call, peer: msg.from, name, audioOnly: msg.audioOnly === true, outgoing: false, state: 'ringing', localStream: null };
    this.emit('ring', { call: msg.call, from: msg.from, name, audioOnly: msg.audioOnly === true });
  }

  onRinging(msg) {
    const c = this.current;
    if (!c || !c.outgoing || c.id !== null || typeof msg.call !== 'string') return;
    c.id = msg.call;
    if (c.state === 'cancelling') {
      this.signaling.send({ type: 'cancel', call: c.id });
      return;
    }
    c.state = 'ringing';
    this.emit('ringing', { call: c.id, to: c.peer });
  }

  onAccepted(msg) {
    const c = this.current;
    if (!c || !this.isThisCall(msg.call) || typeof msg.room !== 'string') return;
    const token = typeof msg.token === 'string' ? msg.token : null;
    if (c.state === 'active' && this.room) {
      // Repeated after our connection came back: resume the room; the connections stay.
      this.signaling.joinRoom(msg.room, token);
      return;
    }
    const hangUpAtOnce = c.state === 'cancelling';
    c.id = msg.call;
    c.state = 'active';
    this.signaling.joinRoom(msg.room, token);
    this.room = new Room({ signaling: this.signaling, localStream: c.localStream || new MediaStream() });
    if (hangUpAtOnce) {
      // Accepted just as we cancelled or hung up: join, then hang up, so both sides end
      // cleanly.
      this.room.addEventListener('joined', () => this.hangUp(), { once: true });
      return;
    }
    this.emit('call-accepted', { call: c.id, peer: c.peer, name: c.name, audioOnly: c.audioOnly, outgoing: c.outgoing, room: this.room });
  }

  onOutcome(type, msg) {
    if (!this.current || !this.isThisCall(msg.call)) return;
    if (this.current.state === 'active') return;
    this.finish(type, {});
  }

  onEnded(msg) {
    if (!this.current || !this.isThisCall(msg.call)) return;
    if (this.room) this.room.close();
    this.room = null;
    this.finish('call-ended', { byUs: false });
  }

  onError(msg) {
    const c = this.current;
    const refusals = ['unknown-person', 'rate-limited', 'bad-request', 'already-joined'];
    if (c && c.outgoing && c.id === null && refusals.includes(msg.code)) {
      // The call never rang.
      this.current = null;
    }
    this.emit('error', msg);
  }

  // --- helpers ---

  /** Whether a message's `call` is the current call (or answers our call not yet ringing). */
  isThisCall(call) {
    const c = this.current;
    return Boolean(c) && (c.id === call || (c.id === null && c.outgoing && typeof call === 'string'));
  }

  finish(type, extra) {
    const c = this.current;
    if (!c) return;
    this.current = null;
    if (this.room) {
      this.room.close();
      this.room = null;
    }
    this.emit(type, { call: c.id, peer: c.peer, name: c.name, outgoing: c.outgoing, ...extra });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// ---------------------------------------------------------------------------------------
// helpers

function cleanPerson(p) {
  if (!p || typeof p.id !== 'string') return null;
  return { id: p.id, name: typeof p.name === 'string' ? p.name.slice(0, 64) : '', busy: p.busy === true };
}

function randomHex(bytes) {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
