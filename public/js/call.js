// The call screen: pre-join for a room link, then the call itself — tiles, controls, chat,
// participants, devices, path indicator — and what happens when it ends.
//
// `LocalMedia` (camera, microphone, screen) and, from the client module `/sdk/signalbox.js`,
// `Signaling` (the room over WebSocket) and `Room` (one peer connection per remote participant,
// negotiated there). App messages (chat, mute state) go over each peer's data channel, or
// through signaling while that channel is not open yet.
//
// Meetings: the room's host (the server says who) sees who knocks on a locked room and can
// admit or decline them, lock the room, remove someone, ask people to mute and end the meeting
// for everyone; the server enforces all of it. A guest of a locked room waits on the lobby
// screen until the host answers.
//
// A direct call from the People view (`people.js`) uses the same screen on the space's
// connection, in the call's private room: no pre-join, no invite link, no host controls, and
// hanging up goes back to the people list. Every listener the call screen adds is removed when
// it ends, so one page can hold one call after another.

import { tokenFromHash } from './names.js';
import { LocalMedia } from './media.js';
import { Signaling, Room, signalingUrl } from '../sdk/signalbox.js';
import { summarize, describePath } from './stats.js';
import { Meeting } from './meeting.js';
import {
  $, el, icon, setIcon, showScreen, showBanner, hideBanner, toast, copyText, Tile, layoutGrid,
  appendChat, appendChatNote, renderPeople, fillSelect,
} from './ui.js';

/** The display name, remembered for the next call. */
export const NAME_KEY = 'signalbox.name';
/** Set while this tab is in a call, so that a reload goes straight back in. */
const IN_CALL_KEY = 'signalbox.in-call';
const STATS_EVERY_MS = 2000;
const SPEAKING_EVERY_MS = 250;
/** Audio level (0–1, from the RTP header extension) above which a tile shows someone speaking. */
const SPEAKING_LEVEL = 0.04;
const MAX_CHAT_CHARS = 2000;

/** The link to a room, with this page's access token. */
export function roomLink(room) {
  const token = tokenFromHash(location.hash);
  const hash = token ? `#token=${encodeURIComponent(token)}` : '';
  return `${location.origin}/r/${encodeURIComponent(room)}${hash}`;
}

// ---------------------------------------------------------------------------------------
// The room: pre-join, call, and what happens when it ends

export class CallScreen {
  /**
   * @param {string} room the room's name
   * @param {object} [o]
   * @param {LocalMedia} [o.media] local media already started (a direct call)
   * @param {{peerName: string, hangUp: () => void}|null} [o.privateCall] set for a direct
   *   call: whom it is with, and how to hang up (the space does it)
   */
  constructor(room, { media = new LocalMedia(), privateCall = null } = {}) {
    this.room = room;
    this.token = tokenFromHash(location.hash);
    this.media = media;
    this.privateCall = privateCall;
    /** Removes every listener this call added (to the page, the media, signaling) when it ends. */
    this.listening = new AbortController();
    this.signaling = null;
    /** The peer connections of the room (the client module's `Room`). */
    this.peerRoom = null;
    this.myId = null;
    this.name = '';
    /** Remote participants as shown, by id: {id, name, tile, micMuted, cameraOff, path, stats}. */
    this.peers = new Map();
    this.localTile = null;
    this.statsTimer = null;
    this.panel = null;
    this.unread = 0;
    this.ended = false;
    this.wasReconnecting = false;
    /** Host, lock and lobby: what the server says about running this meeting. */
    this.meeting = new Meeting(this);
  }

  // --- pre-join ---

  async prejoin() {
    showScreen('prejoin');
    document.title = `${this.room} · signalbox`;
    $('topbar-room').hidden = false;
    $('topbar-room-name').textContent = this.room;
    $('prejoin-room').textContent = this.room;
    $('prejoin-link').textContent = roomLink(this.room);
    $('display-name').value = localStorage.getItem(NAME_KEY) || '';
    $('copy-prejoin-link').addEventListener('click', () => copyText(roomLink(this.room)));

    this.media.addEventListener('change', () => this.showPreview());
    $('camera-select').addEventListener('change', async (e) => {
      if (!(await this.media.switchCamera(e.target.value))) this.showMediaProblem();
    });
    $('mic-select').addEventListener('change', async (e) => {
      if (!(await this.media.switchMic(e.target.value))) this.showMediaProblem();
    });
    $('pre-mic').addEventListener('click', () => {
      this.media.setMicMuted(!this.media.micMuted);
      this.reflectMicButton($('pre-mic'));
    });
    $('pre-cam').addEventListener('click', async () => {
      await this.media.setCameraOn(!this.media.cameraOn);
      this.reflectCamButton($('pre-cam'));
      this.showPreview();
    });
    this.reflectMicButton($('pre-mic'));
    this.reflectCamButton($('pre-cam'));
    $('prejoin-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.join({ audioOnly: false });
    });
    $('join-audio-btn').addEventListener('click', () => this.join({ audioOnly: true }));

    // Listeners are in place before the (slow) camera start, so an early click on Join
    // is handled by join(), which waits for the devices.
    const resume = readInCall(this.room);
    this.mediaReady = this.media.start({ audioOnly: resume ? resume.audioOnly : false }).then(async () => {
      this.showPreview();
      await this.fillDeviceSelects($('camera-select'), $('mic-select'));
      this.reflectMicButton($('pre-mic'));
      this.reflectCamButton($('pre-cam'));
    });
    if (resume) {
      this.join({ audioOnly: resume.audioOnly });
    } else {
      $('display-name').focus();
    }
  }

  showPreview() {
    const video = $('preview-video');
    const track = this.media.videoTrack;
    if (track) {
      if (video.srcObject !== this.media.stream) video.srcObject = this.media.stream;
      video.play().catch(() => {});
    }
    $('preview-tile').classList.toggle('no-video', !track);
    const avatar = $('preview-avatar');
    avatar.hidden = Boolean(track);
    avatar.firstChild.textContent = initialsOrIcon($('display-name').value);
    this.showMediaProblem();
  }

  showMediaProblem() {
    const text = mediaProblemText(this.media);
    const p = $('preview-problem');
    p.hidden = !text;
    p.textContent = text || '';
  }

  async fillDeviceSelects(cameraSelect, micSelect) {
    const { cameras, mics } = await this.media.listDevices();
    const why = (problem) => (problem === 'blocked' ? 'Blocked in this browser' : 'None found');
    fillSelect(cameraSelect, cameras, this.media.cameraId, why(this.media.cameraProblem));
    fillSelect(micSelect, mics, this.media.micId, why(this.media.micProblem));
  }

  reflectMicButton(button) {
    const muted = this.media.micMuted || !this.media.audioTrack;
    button.setAttribute('aria-pressed', String(muted));
    button.setAttribute('aria-label', muted ? 'Unmute microphone' : 'Mute microphone');
    button.title = muted ? 'Unmute' : 'Mute';
    button.classList.toggle('off', muted);
    setIcon(button, muted ? 'mic-off' : 'mic');
  }

  reflectCamButton(button) {
    const off = !this.media.cameraTrack;
    button.setAttribute('aria-pressed', String(off));
    button.setAttribute('aria-label', off ? 'Turn camera on' : 'Turn camera off');
    button.title = off ? 'Turn camera on' : 'Turn camera off';
    button.classList.toggle('off', off);
    setIcon(button, off ? 'cam-off' : 'cam');
  }

  // --- joining ---

  async join({ audioOnly }) {
    if (this.signaling || this.joining) return;
    this.joining = true;
    await this.mediaReady;
    this.name = $('display-name').value.trim().slice(0, 64);
    if (this.name) localStorage.setItem(NAME_KEY, this.name);
    if (audioOnly) await this.media.setCameraOn(false);
    this.media.rememberChoices();
    sessionStorage.setItem(IN_CALL_KEY, JSON.stringify({ room: this.room, audioOnly }));

    this.enterCallScreen();
    const s = new Signaling({ url: signalingUrl(), room: this.room, name: this.name, token: this.token });
    this.attach(s, new Room({ signaling: s, localStream: this.media.stream }));
    s.connect();
    window.addEventListener('pagehide', () => {
      // Tell the room at once (a reload comes back as a new participant) instead of leaving
      // a silent seat for the reconnect grace.
      if (this.signaling) this.signaling.leave();
    });
    window.addEventListener('pageshow', (e) => {
      // Restored from the back/forward cache after pagehide left the room: start over.
      if (e.persisted && !this.ended) location.reload();
    });
  }

  /**
   * Shows a direct call: `peerRoom` is the call's private room on the space's connection
   * (already joining), `name` our display name.
   */
  startPrivate({ signaling, peerRoom, name }) {
    this.name = name;
    this.enterCallScreen();
    this.attach(signaling, peerRoom);
    this.onSignalingState(signaling.state);
  }

  /** Follows the room's and the connection's events until the call ends. */
  attach(signaling, peerRoom) {
    this.signaling = signaling;
    this.peerRoom = peerRoom;
    const s = signaling;
    const r = peerRoom;
    this.on(r, 'joined', (e) => this.onJoined(e.detail));
    this.on(r, 'peer-joined', (e) => this.onPeerJoined(e.detail));
    this.on(r, 'peer-left', (e) => this.onPeerLeft(e.detail));
    this.on(r, 'track', (e) => this.onTrack(e.detail));
    this.on(r, 'connection', (e) => this.onConnection(e.detail));
    this.on(r, 'channel-open', (e) => this.sendState(e.detail.id));
    this.on(r, 'message', (e) => this.onAppMessage(e.detail.id, e.detail.data));
    this.on(s, 'state', (e) => this.onSignalingState(e.detail.state));
    this.on(s, 'error', (e) => this.onServerError(e.detail));
    this.meeting.listen(s, this.listening.signal);
    this.on(s, 'server-shutdown', (e) => {
      // Another node of the cluster takes over at once: the module reconnects by itself.
      if (e.detail.reconnect === true) return;
      // Calls keep running over their current connections for the grace; signaling comes
      // back through the usual reconnect once the server is up again.
      const secs = Number(e.detail.grace_s) || 0;
      showBanner(`The server is restarting — the call continues${secs ? ` for up to ${secs} s` : ''}, then reconnects.`);
    });
  }

  /** `target.addEventListener`, undone when this call ends. */
  on(target, type, handler) {
    target.addEventListener(type, handler, { signal: this.listening.signal });
  }

  enterCallScreen() {
    showScreen('call');
    const title = this.privateCall ? `Call with ${displayName(this.privateCall.peerName)}` : this.room;
    $('call-room').textContent = title;
    $('grid').replaceChildren();
    $('chat-log').replaceChildren();
    for (const id of ['btn-link', 'copy-people-link']) $(id).hidden = Boolean(this.privateCall);
    this.localTile = new Tile({ id: 'local', name: this.name, local: true });
    $('grid').append(this.localTile.node);
    this.localTile.attach(this.media.stream);
    this.refreshLocalTile();
    this.updateWaiting();
    this.wireControls();
    this.on(this.media, 'change', (e) => this.onLocalTrack(e.detail));
    this.statsTimer = setInterval(() => this.pollStats(), STATS_EVERY_MS);
    this.speakingTimer = setInterval(() => this.pollSpeaking(), SPEAKING_EVERY_MS);
    if (this.media.cameraProblem === 'blocked') {
      toast('Camera blocked — others cannot see you. Allow the camera in site settings to turn it on.', { kind: 'error', ms: 7000 });
    }
    this.renderPeople();
  }

  wireControls() {
    this.on($('btn-mic'), 'click', () => {
      if (!this.media.audioTrack) {
        toast(mediaProblemText(this.media) || 'No microphone', { kind: 'error' });
        return;
      }
      this.media.setMicMuted(!this.media.micMuted);
      this.refreshLocalTile();
      this.broadcastState();
    });
    this.on($('btn-cam'), 'click', async () => {
      const ok = await this.media.setCameraOn(!this.media.cameraOn || !this.media.cameraTrack);
      if (!ok) toast(mediaProblemText(this.media) || 'Camera unavailable', { kind: 'error', ms: 6000 });
      this.refreshLocalTile();
      this.broadcastState();
    });
    const screenBtn = $('btn-screen');
    if (!this.media.canShareScreen()) screenBtn.hidden = true;
    this.on(screenBtn, 'click', async () => {
      if (this.media.screenTrack) this.media.stopScreenShare();
      else if (!(await this.media.startScreenShare())) return;
      this.refreshLocalTile();
      this.broadcastState();
    });
    this.on($('btn-hangup'), 'click', () => this.hangUp());
    this.meeting.wireControls(this.listening.signal);
    this.on($('btn-link'), 'click', () => copyText(roomLink(this.room), 'Invite link'));
    this.on($('copy-people-link'), 'click', () => copyText(roomLink(this.room), 'Invite link'));
    this.on($('btn-chat'), 'click', () => this.togglePanel('chat'));
    this.on($('btn-people'), 'click', () => this.togglePanel('people'));
    this.on($('btn-settings'), 'click', () => this.togglePanel('settings'));
    this.on($('panel-close'), 'click', () => this.togglePanel(null));
    this.on($('panel'), 'keydown', (e) => {
      if (e.key === 'Escape') this.togglePanel(null);
    });
    this.on($('chat-form'), 'submit', (e) => {
      e.preventDefault();
      this.sendChat();
    });
    this.on($('call-camera-select'), 'change', async (e) => {
      if (!(await this.media.switchCamera(e.target.value))) {
        toast(mediaProblemText(this.media) || 'That camera cannot be opened', { kind: 'error' });
      }
      this.refreshLocalTile();
    });
    this.on($('call-mic-select'), 'change', async (e) => {
      if (!(await this.media.switchMic(e.target.value))) {
        toast(mediaProblemText(this.media) || 'That microphone cannot be opened', { kind: 'error' });
      }
      this.refreshLocalTile();
    });
  }

  // --- signaling events ---

  onSignalingState(state) {
    const dot = $('conn-dot');
    dot.dataset.state = state;
    dot.setAttribute('aria-label', `Signaling ${state}`);
    if (state === 'reconnecting') {
      this.wasReconnecting = true;
      showBanner('Connection lost — reconnecting…');
    } else if (state === 'connected') {
      hideBanner();
      if (this.wasReconnecting) toast('Reconnected');
      this.wasReconnecting = false;
    }
  }

  /** `joined`, after the client module has set up (or kept) the peer connections. */
  onJoined(msg) {
    this.meeting.onJoined(msg, msg.peers);
    if (!msg.resumed) {
      this.myId = msg.id;
      if (msg.peers.length === 0) appendChatNote($('chat-log'), 'You joined. Share the link to invite others.');
    }
    this.broadcastState();
    this.renderPeople();
  }

  onPeerJoined({ id, name, host, reason }) {
    if (host) this.meeting.hostId = id;
    this.addPeer({ id, name });
    if (reason === 'joined') {
      toast(`${displayName(name)} joined`);
      appendChatNote($('chat-log'), `${displayName(name)} joined`);
    }
  }

  onPeerLeft({ id, quiet }) {
    const entry = this.peers.get(id);
    if (!entry) return;
    if (!quiet) {
      toast(`${displayName(entry.name)} left`);
      appendChatNote($('chat-log'), `${displayName(entry.name)} left`);
    }
    this.removePeer(id);
  }

  onTrack({ id, stream }) {
    const entry = this.peers.get(id);
    if (!entry) return;
    entry.tile.attach(stream);
    this.refreshRemoteVideo(entry);
  }

  onConnection({ id, state }) {
    const entry = this.peers.get(id);
    if (!entry) return;
    if (state === 'failed' || state === 'disconnected') entry.tile.setConnecting('reconnecting…');
    else if (state === 'new' || state === 'connecting' || state === 'checking') entry.tile.setConnecting('connecting');
  }

  onServerError(msg) {
    if (msg.code === 'room-full') {
      this.end({
        title: 'This room is full',
        text: `“${this.room}” already has as many participants as this server allows. Try again when someone leaves, or start a new room.`,
        retry: 'Try again',
      });
      return;
    }
    if (msg.code === 'forbidden' || msg.code === 'unauthorized') {
      this.end({ title: 'You cannot join this room', text: msg.message || 'The link is missing a valid access token.', retry: 'Try again' });
      return;
    }
    if (msg.code === 'declined') {
      this.end({ title: 'The host did not let you in', text: `Your request to join “${this.room}” was declined.`, retry: 'Ask again' });
      return;
    }
    if (msg.code === 'lobby-timeout') {
      this.end({ title: 'Nobody let you in', text: `No one answered your request to join “${this.room}” in time.`, retry: 'Ask again' });
      return;
    }
    if (msg.code === 'removed') {
      this.end({ title: 'You were removed from the meeting', text: `The host removed you from “${this.room}”.`, retry: null });
      return;
    }
    if (msg.code === 'not-host') toast('Only the host can do that.', { kind: 'error' });
    if (msg.code === 'rate-limited') toast('Slow down — the server is limiting messages.', { kind: 'error' });
    console.warn(`signaling error ${msg.code}: ${msg.message || ''}`);
  }

  // --- peers ---

  addPeer(p) {
    let entry = this.peers.get(p.id);
    if (entry) {
      if (p.name) this.renamePeer(entry, p.name);
      return entry;
    }
    const name = typeof p.name === 'string' ? p.name.slice(0, 64) : '';
    entry = { id: p.id, name, tile: new Tile({ id: p.id, name, local: false }), micMuted: false, cameraOff: false, path: 'unknown', stats: null };
    this.peers.set(p.id, entry);
    entry.tile.setConnecting('connecting');
    $('grid').append(entry.tile.node);
    this.updateWaiting();
    this.renderPeople();
    return entry;
  }

  renamePeer(entry, name) {
    const clean = String(name).slice(0, 64);
    if (!clean || clean === entry.name) return;
    entry.name = clean;
    entry.tile.setName(clean);
    this.renderPeople();
  }

  /** The peer connection to `id` (the client module's `PeerSession`), or null. */
  sessionOf(id) {
    const peer = this.peerRoom ? this.peerRoom.peers.get(id) : null;
    return peer && peer.session && !peer.session.closed ? peer.session : null;
  }

  removePeer(id) {
    const entry = this.peers.get(id);
    if (!entry) return;
    entry.tile.remove();
    this.peers.delete(id);
    this.updateWaiting();
    this.renderPeople();
  }

  refreshRemoteVideo(entry) {
    const session = this.sessionOf(entry.id);
    const video = session ? session.remoteStream.getVideoTracks()[0] : null;
    entry.tile.setVideoVisible(Boolean(video && !video.muted && video.readyState === 'live' && !entry.cameraOff));
    entry.tile.setMicMuted(entry.micMuted);
  }

  // --- app messages: chat and state ---

  sendApp(id, data) {
    if (this.peerRoom) this.peerRoom.send(id, data);
  }

  onAppMessage(from, data) {
    const entry = this.peers.get(from);
    if (data.kind === 'chat') {
      if (typeof data.text !== 'string' || !data.text) return;
      if (entry && data.name) this.renamePeer(entry, data.name);
      appendChat($('chat-log'), {
        name: entry ? entry.name : data.name,
        text: data.text.slice(0, MAX_CHAT_CHARS),
        ts: typeof data.ts === 'number' ? data.ts : Date.now(),
        mine: false,
      });
      if (this.panel !== 'chat') {
        this.unread += 1;
        $('chat-unread').textContent = String(this.unread);
        $('chat-unread').hidden = false;
        $('btn-chat').setAttribute('aria-label', `Chat, ${this.unread} unread`);
        toast(`${displayName(entry ? entry.name : data.name)}: ${data.text.slice(0, 80)}`);
      }
    } else if (data.kind === 'state' && entry) {
      if (typeof data.name === 'string') this.renamePeer(entry, data.name);
      entry.micMuted = Boolean(data.micMuted);
      entry.cameraOff = Boolean(data.cameraOff);
      entry.tile.setMirror(false);
      this.refreshRemoteVideo(entry);
      this.renderPeople();
    }
  }

  sendChat() {
    const input = $('chat-input');
    const text = input.value.trim().slice(0, MAX_CHAT_CHARS);
    if (!text) return;
    const msg = { kind: 'chat', text, name: this.name, ts: Date.now() };
    for (const id of this.peers.keys()) this.sendApp(id, msg);
    appendChat($('chat-log'), { name: this.name, text, ts: msg.ts, mine: true });
    input.value = '';
  }

  stateMessage() {
    return {
      kind: 'state',
      name: this.name,
      micMuted: this.media.micMuted || !this.media.audioTrack,
      cameraOff: !this.media.videoTrack,
      screen: Boolean(this.media.screenTrack),
    };
  }

  sendState(id) {
    this.sendApp(id, this.stateMessage());
  }

  broadcastState() {
    for (const id of this.peers.keys()) this.sendState(id);
  }

  // --- local media in the call ---

  onLocalTrack({ kind, track }) {
    if (this.peerRoom) this.peerRoom.setLocalTrack(kind, track);
    this.refreshLocalTile();
    this.broadcastState();
  }

  refreshLocalTile() {
    const tile = this.localTile;
    if (!tile) return;
    tile.setName(this.name);
    tile.setVideoVisible(Boolean(this.media.videoTrack));
    tile.setMirror(!this.media.screenTrack);
    tile.setMicMuted(this.media.micMuted || !this.media.audioTrack);
    if (this.media.videoTrack) tile.attach(this.media.stream);
    this.reflectMicButton($('btn-mic'));
    this.reflectCamButton($('btn-cam'));
    const sharing = Boolean(this.media.screenTrack);
    const screenBtn = $('btn-screen');
    screenBtn.setAttribute('aria-pressed', String(sharing));
    screenBtn.setAttribute('aria-label', sharing ? 'Stop sharing screen' : 'Share screen');
    screenBtn.title = sharing ? 'Stop sharing' : 'Share screen';
    screenBtn.classList.toggle('active', sharing);
    this.renderPeople();
  }

  // --- panels, people, waiting card ---

  async togglePanel(which) {
    const next = which === this.panel ? null : which;
    const previous = this.panel;
    this.panel = next;
    const panel = $('panel');
    panel.hidden = !next;
    document.body.classList.toggle('panel-open', Boolean(next));
    for (const k of ['chat', 'people', 'settings']) {
      $(`panel-${k}`).hidden = k !== next;
      $(`btn-${k}`).setAttribute('aria-pressed', String(k === next));
    }
    if (!next) {
      // Back to the button that opened the panel, so keyboard users keep their place.
      if (previous) $(`btn-${previous}`).focus();
      return;
    }
    $('panel-title').textContent = { chat: 'Chat', people: 'Participants', settings: 'Devices' }[next];
    if (next === 'chat') {
      this.unread = 0;
      $('chat-unread').hidden = true;
      $('btn-chat').setAttribute('aria-label', 'Chat');
      $('chat-input').focus();
    } else if (next === 'settings') {
      await this.fillDeviceSelects($('call-camera-select'), $('call-mic-select'));
      $('call-camera-select').focus();
    } else {
      $('panel-close').focus();
    }
  }

  renderPeople() {
    const people = [
      {
        id: this.myId || 'local',
        name: this.name,
        local: true,
        host: this.meeting.isHost,
        micMuted: this.media.micMuted || !this.media.audioTrack,
        cameraOff: !this.media.videoTrack,
      },
      ...[...this.peers.values()].map((e) => ({ id: e.id, name: e.name, host: e.id === this.meeting.hostId, micMuted: e.micMuted, cameraOff: e.cameraOff, path: e.path })),
    ];
    renderPeople($('people-list'), people, this.meeting.isHost ? (p) => this.meeting.personActions(p) : null);
    this.meeting.renderWaiting();
    $('people-count').textContent = String(people.length);
    $('btn-people').setAttribute('aria-label', `Participants (${people.length})`);
  }

  updateWaiting() {
    const grid = $('grid');
    let card = $('waiting-card');
    const alone = this.peers.size === 0;
    if (alone && !card && this.privateCall) {
      card = el(
        'div',
        { class: 'waiting cell', id: 'waiting-card' },
        el('div', { class: 'pulse', 'aria-hidden': 'true' }),
        el('h2', { text: `Connecting to ${displayName(this.privateCall.peerName)}…` }),
      );
      grid.append(card);
    } else if (alone && !card) {
      const copy = el('button', { type: 'button', class: 'btn secondary' }, icon('link'), el('span', { text: 'Copy invite link' }));
      copy.addEventListener('click', () => copyText(roomLink(this.room), 'Invite link'));
      card = el(
        'div',
        { class: 'waiting cell', id: 'waiting-card' },
        el('div', { class: 'pulse', 'aria-hidden': 'true' }),
        el('h2', { text: 'Waiting for others to join' }),
        el('p', { class: 'link-text', text: roomLink(this.room) }),
        copy,
      );
      grid.append(card);
    } else if (!alone && card) {
      card.remove();
    }
    layoutGrid(grid);
  }

  // --- stats ---

  async pollStats() {
    for (const entry of this.peers.values()) {
      const session = this.sessionOf(entry.id);
      if (!session) continue;
      let report;
      try {
        report = await session.getStats();
      } catch {
        continue;
      }
      if (this.sessionOf(entry.id) !== session) continue;
      const { summary, sample } = summarize(report, entry.stats);
      entry.stats = sample;
      const state = session.pc.connectionState;
      if (state === 'connected') entry.tile.setPath(summary, describePath(summary));
      if (entry.path !== summary.path) {
        entry.path = summary.path;
        this.renderPeople();
      }
    }
  }

  /** Rings the tile of whoever is talking; levels come with each RTP packet, no audio graph needed. */
  pollSpeaking() {
    for (const entry of this.peers.values()) {
      const session = this.sessionOf(entry.id);
      let speaking = false;
      if (session && !entry.micMuted) {
        const receiver = session.pc.getReceivers().find((r) => r.track && r.track.kind === 'audio');
        const sources = receiver ? receiver.getSynchronizationSources() : [];
        const recent = sources.find((src) => performance.timeOrigin + performance.now() - src.timestamp < 1000);
        speaking = Boolean(recent && recent.audioLevel > SPEAKING_LEVEL);
      }
      entry.tile.setSpeaking(speaking);
    }
  }

  // --- leaving ---

  hangUp() {
    this.end({ title: 'You left the call', text: `You left “${this.room}”.`, retry: 'Rejoin' });
  }

  /**
   * The call is over for us. A room link shows the notice screen (`title`, `text`, a `retry`
   * button); a direct call hangs up through the space, which then closes this screen.
   */
  end({ title, text, retry }) {
    if (this.ended) return;
    if (this.privateCall) {
      this.privateCall.hangUp();
      return;
    }
    sessionStorage.removeItem(IN_CALL_KEY);
    // Tells the others directly as well (`bye`); the server's `peer-left` follows the `leave`.
    if (this.peerRoom) this.peerRoom.leave();
    this.close();
    $('topbar-room').hidden = true;
    $('notice-title').textContent = title;
    $('notice-text').textContent = text;
    const home = el('a', { class: 'btn ghost', href: '/' }, 'Start a new call');
    let again = null;
    if (retry) {
      again = el('button', { type: 'button', class: 'btn primary' }, retry);
      again.addEventListener('click', () => location.reload());
    }
    $('notice-actions').replaceChildren(...[again, home].filter(Boolean));
    showScreen('notice');
    (again || home).focus();
  }

  /** Takes the call screen down: tiles, timers, local media, panels and every listener. */
  close() {
    if (this.ended) return;
    this.ended = true;
    for (const id of [...this.peers.keys()]) this.removePeer(id);
    clearInterval(this.statsTimer);
    clearInterval(this.speakingTimer);
    this.media.stopAll();
    hideBanner();
    this.meeting.reset();
    if (this.panel) this.togglePanel(null);
    this.listening.abort();
    if (this.localTile) this.localTile.remove();
    $('grid').replaceChildren();
  }
}

// ---------------------------------------------------------------------------------------
// helpers

function readInCall(room) {
  try {
    const v = JSON.parse(sessionStorage.getItem(IN_CALL_KEY) || 'null');
    return v && v.room === room ? { audioOnly: Boolean(v.audioOnly) } : null;
  } catch {
    return null;
  }
}

function displayName(name) {
  return name ? name : 'Someone';
}

function initialsOrIcon(name) {
  const n = (name || '').trim();
  return n ? n.split(/\s+/).map((w) => w[0]).slice(0, 2).join('').toUpperCase() : '🙂';
}

function mediaProblemText(media) {
  const cam = media.cameraProblem;
  const mic = media.micProblem;
  if (cam === 'blocked' && mic === 'blocked') {
    return 'Camera and microphone blocked. Allow them in your browser’s site settings and reload — or join to watch and chat.';
  }
  if (cam === 'blocked') return 'Camera blocked. Allow it in your browser’s site settings, or join with audio only.';
  if (mic === 'blocked') return 'Microphone blocked. Allow it in your browser’s site settings; others will not hear you.';
  if (cam === 'busy') return 'The camera is in use by another app. Close it and try again, or join with audio only.';
  if (cam === 'missing' && mic === 'missing') return 'No camera or microphone found. You can still join to watch and chat.';
  if (cam === 'missing') return 'No camera found. You can join with audio only.';
  if (mic === 'missing') return 'No microphone found; others will not hear you.';
  if (cam === 'unsupported') return 'This browser cannot use the camera here (a secure https:// page is required).';
  return null;
}
