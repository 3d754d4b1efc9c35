// One RTCPeerConnection per remote participant, negotiated with the "perfect negotiation"
// pattern: either side may start a (re)negotiation at any time; when both offer at once the
// polite side rolls back and answers, the impolite side ignores the colliding offer. Which
// side is polite follows from comparing the two ids, so both agree without a message.
//
// Everything sent to the other side goes through `send(data)` (the app routes it over
// signaling). Messages carry the sender's page session `sid`, so that a participant who
// reloads and comes back under the same id is recognised as a new connection.
//
// Events: `track` (remote media changed), `state` ({connection}), `channel-open`,
// `message` ({data} parsed from the data channel).

const DISCONNECTED_GRACE_MS = 4000;
const RESTART_COOLDOWN_MS = 8000;

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
    this.remoteStream = new MediaStream();
    this.remoteSid = null;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.closed = false;
    this.disconnectedTimer = null;
    this.lastRestart = 0;
    this.statsSample = null;
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

  /** Whether app messages can go over the data channel right now. */
  channelOpen() {
    return this.channel.readyState === 'open';
  }

  sendOnChannel(data) {
    if (!this.channelOpen()) return false;
    try {
      this.channel.send(JSON.stringify(data));
      return true;
    } catch {
      return false;
    }
  }

  /** Applies a `description` or `candidate` message from the other side. */
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

  /** Sends `track` (or nothing) as our `kind` media, renegotiating only when needed. */
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

  setIceServers(iceServers) {
    if (this.closed) return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (err) {
      console.warn(`peer ${this.id}: new ICE servers not applied`, err);
    }
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

  async getStats() {
    return this.pc.getStats();
  }

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

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
