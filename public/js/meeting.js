// Running a meeting: who hosts, whether the room is locked, who knocks, and the host's controls
// (admit, decline, lock, ask to mute, remove, end for everyone); for a guest, the lobby screen,
// mute requests and the end of the meeting. The server decides and enforces all of it; this
// module shows what it says and sends the host's requests. `room` is app.js's Room: its
// signaling, media, peers and end screen.

import { $, el, renderPeople as renderPeopleList, setIcon, showScreen, toast } from './ui.js';

export class Meeting {
  constructor(room) {
    this.room = room;
    /** From the server: are we host, who is, is the room locked. */
    this.isHost = false;
    this.hostId = null;
    this.locked = false;
    /** People waiting in the lobby (host only): id → name, in knock order. */
    this.knocks = new Map();
  }

  /** Follows the meeting's messages on `signaling` until `signal` aborts. */
  listen(signaling, signal) {
    signaling.addEventListener('waiting', () => this.onWaiting(), { signal });
    signaling.addEventListener('knock', (e) => this.onKnock(e.detail), { signal });
    signaling.addEventListener('knock-withdrawn', (e) => this.dropKnock(e.detail.peer), { signal });
    signaling.addEventListener('host-changed', (e) => this.onHostChanged(e.detail), { signal });
    signaling.addEventListener('room-locked', (e) => this.onRoomLocked(e.detail), { signal });
    signaling.addEventListener('mute-request', (e) => this.onMuteRequest(e.detail), { signal });
    signaling.addEventListener('ended', () => this.onEnded(), { signal });
  }

  /** `joined`: who hosts and whether the room is locked; a guest leaves the lobby screen. */
  onJoined(msg, listed) {
    const hostEntry = listed.find((p) => p.host === true);
    this.isHost = msg.host === true;
    this.hostId = this.isHost ? msg.id : hostEntry ? hostEntry.id : null;
    this.locked = msg.locked === true;
    // A host gets a `knock` for everyone still waiting right after this.
    this.knocks.clear();
    if (document.body.dataset.screen === 'lobby') {
      showScreen('call');
      document.title = `${this.room.room} · signalbox`;
      toast('The host let you in');
    }
    this.refresh();
  }

  /** The meeting is over for us: no banner, no dialog left open. */
  reset() {
    this.knocks.clear();
    this.renderKnocks();
    const dialog = $('end-dialog');
    if (dialog.open) dialog.close('cancel');
  }

  /** The participants panel's "Waiting to join" list (host only). */
  renderWaiting() {
    const waiting = [...this.knocks].map(([id, name]) => ({ id, name, waiting: true }));
    $('waiting-section').hidden = !this.isHost || waiting.length === 0;
    renderPeopleList($('waiting-list'), waiting, (p) => this.personActions(p));
  }

  onWaiting() {
    showScreen('lobby');
    document.title = `Waiting · ${this.room.room} · signalbox`;
    $('lobby-text').textContent = `You asked to join “${this.room.room}”${this.room.name ? ` as ${this.room.name}` : ''}. The host sees your request and can let you in.`;
    $('lobby-cancel').focus();
  }

  wireControls(signal) {
    const on = (id, type, handler) => $(id).addEventListener(type, handler, { signal });
    on('lobby-cancel', 'click', () => {
      this.room.end({ title: 'You left the lobby', text: `You stopped waiting to join “${this.room.room}”.`, retry: 'Ask again' });
    });
    on('btn-lock', 'click', () => this.room.signaling.host(this.locked ? 'unlock' : 'lock'));
    on('btn-end-all', 'click', () => $('end-dialog').showModal());
    on('end-dialog', 'close', () => {
      if ($('end-dialog').returnValue === 'end') this.room.signaling.host('end');
      else $('btn-end-all').focus();
    });
    on('mute-all', 'click', () => {
      this.room.signaling.host('mute-request', { peer: 'all', kind: 'audio' });
      toast('Asked everyone to mute');
    });
    on('knock-admit', 'click', () => this.answerKnock(this.firstKnock(), true));
    on('knock-decline', 'click', () => this.answerKnock(this.firstKnock(), false));
    on('knock-more', 'click', () => {
      if (this.room.panel !== 'people') this.room.togglePanel('people');
    });
  }

  /** Shows or hides what only the host may use, and the lock toggle's state. */
  refresh() {
    for (const node of document.querySelectorAll('.host-only')) node.hidden = !this.hostControls();
    const lock = $('btn-lock');
    lock.setAttribute('aria-pressed', String(this.locked));
    lock.title = this.locked ? 'Room locked: new people wait until you let them in' : 'Lock room: new people wait until you let them in';
    setIcon(lock, this.locked ? 'lock' : 'unlock');
    this.renderKnocks();
    this.room.renderPeople();
  }

  onKnock(msg) {
    if (!this.isHost || typeof msg.peer !== 'string') return;
    const name = typeof msg.name === 'string' ? msg.name.slice(0, 64) : '';
    this.knocks.set(msg.peer, name);
    this.renderKnocks();
    this.room.renderPeople();
  }

  dropKnock(id) {
    if (!this.knocks.delete(id)) return;
    this.renderKnocks();
    this.room.renderPeople();
  }

  firstKnock() {
    const first = this.knocks.keys().next();
    return first.done ? null : first.value;
  }

  answerKnock(id, admit) {
    if (!id) return;
    const name = displayName(this.knocks.get(id));
    this.room.signaling.host(admit ? 'admit' : 'decline', { peer: id });
    this.dropKnock(id);
    if (!admit) toast(`Declined ${name}`);
  }

  /** The banner over the call: the first person knocking, with Admit and Decline. */
  renderKnocks() {
    const bar = $('knock-bar');
    const id = this.firstKnock();
    if (!this.isHost || !id) {
      bar.hidden = true;
      return;
    }
    const name = displayName(this.knocks.get(id));
    const others = this.knocks.size - 1;
    $('knock-text').textContent = others > 0 ? `${name} and ${others} more are waiting to join` : `${name} is waiting to join`;
    $('knock-admit').setAttribute('aria-label', `Admit ${name}`);
    $('knock-decline').setAttribute('aria-label', `Decline ${name}`);
    const more = $('knock-more');
    more.hidden = others === 0;
    more.textContent = `See all ${this.knocks.size}`;
    bar.hidden = false;
  }

  onHostChanged(msg) {
    if (typeof msg.peer !== 'string') return;
    const wasHost = this.isHost;
    this.hostId = msg.peer;
    this.isHost = msg.peer === this.room.myId;
    if (!this.isHost) this.knocks.clear();
    if (this.room.privateCall) {
      // A direct call has no meeting to run: nothing to announce.
    } else if (this.isHost && !wasHost) toast('You are now the host');
    else if (!this.isHost) {
      const entry = this.room.peers.get(msg.peer);
      toast(`${displayName(entry && entry.name)} is now the host`);
    }
    this.refresh();
  }

  onRoomLocked(msg) {
    this.locked = msg.locked === true;
    this.refresh();
    toast(this.locked ? 'Room locked: new people wait until the host lets them in' : 'Room unlocked');
  }

  async onMuteRequest(msg) {
    const entry = this.room.peers.get(msg.from);
    const who = entry && entry.name ? entry.name : 'The host';
    if (msg.kind === 'video') {
      if (this.room.media.cameraTrack) await this.room.media.setCameraOn(false);
      toast(`${who} asked you to turn your camera off. It is off now.`, { ms: 6000 });
    } else {
      if (this.room.media.audioTrack && !this.room.media.micMuted) this.room.media.setMicMuted(true);
      toast(`${who} asked you to mute. Your microphone is off; unmute when you want to speak.`, { ms: 6000 });
    }
    this.room.refreshLocalTile();
    this.room.broadcastState();
  }

  onEnded() {
    const text = this.isHost ? `You ended “${this.room.room}” for everyone.` : `The host ended “${this.room.room}” for everyone.`;
    this.room.end({ title: 'The meeting has ended', text, retry: 'Start it again' });
  }

  /** Whether to show the host's controls: to the host of a meeting, never in a direct call. */
  hostControls() {
    return this.isHost && !this.room.privateCall;
  }

  /** The host's buttons on one participant's row: Ask to mute, Remove; Admit, Decline for knocks. */
  personActions(p) {
    if (!this.hostControls() || p.local) return [];
    const name = displayName(p.name);
    const button = (text, label, onClick, kind = 'ghost') => {
      const b = el('button', { type: 'button', class: `btn ${kind} small`, 'aria-label': label }, text);
      b.addEventListener('click', onClick);
      return b;
    };
    if (p.waiting) {
      return [
        button('Admit', `Admit ${name}`, () => this.answerKnock(p.id, true), 'primary'),
        button('Decline', `Decline ${name}`, () => this.answerKnock(p.id, false)),
      ];
    }
    return [
      button('Ask to mute', `Ask ${name} to mute`, () => {
        this.room.signaling.host('mute-request', { peer: p.id, kind: 'audio' });
        toast(`Asked ${name} to mute`);
      }),
      button('Remove', `Remove ${name}`, () => this.room.signaling.host('remove', { peer: p.id })),
    ];
  }
}

function displayName(name) {
  return name ? name : 'Someone';
}
