// The People view of a space, at `/s/{space}`: who is online, and direct calls.
//
// After "Go online" the page says `hello` to the space through the client module's `Space`
// and lists everyone else there, live, with a busy badge for whoever rings or talks. Each
// person has a video call and an audio call button. A call rings on the other side with a
// ringtone made with WebAudio (no media file) until it is accepted (video or audio only),
// declined, cancelled or missed; the caller sees a ringing screen with Cancel, and either side
// gets a clear message when it does not happen. An accepted call opens the normal call screen
// (call.js) in the call's private room; hanging up, or the other side hanging up, comes back
// here. Every tab is its own connection, so two tabs of one person are two entries.

import { Space } from '../sdk/signalbox.js';
import { LocalMedia } from './media.js';
import { CallScreen, NAME_KEY } from './call.js';
import { tokenFromHash } from './names.js';
import { $, el, showScreen, showBanner, hideBanner, copyText, initials, hueOf } from './ui.js';

/** The link to a space's People view, with this page's access token. */
export function spaceLink(space) {
  const token = tokenFromHash(location.hash);
  const hash = token ? `#token=${encodeURIComponent(token)}` : '';
  return `${location.origin}/s/${encodeURIComponent(space)}${hash}`;
}

export class PeopleView {
  /** @param {string} space */
  constructor(space) {
    this.spaceName = space;
    this.token = tokenFromHash(location.hash);
    /** The client module's `Space`, once online. */
    this.space = null;
    this.name = '';
    /** Local media of the call being set up or held. */
    this.media = null;
    /** The call screen of the call in progress. */
    this.callScreen = null;
    this.tone = new Ringtone();
  }

  start() {
    this.showList();
    $('people-space').textContent = this.spaceName;
    $('people-link').textContent = spaceLink(this.spaceName);
    $('copy-people-space-link').addEventListener('click', () => copyText(spaceLink(this.spaceName), 'Space link'));
    const input = $('people-name');
    input.value = localStorage.getItem(NAME_KEY) || '';
    input.addEventListener('input', () => {
      $('people-name-error').textContent = '';
      input.removeAttribute('aria-invalid');
    });
    $('online-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const name = input.value.trim().slice(0, 64);
      if (!name) {
        $('people-name-error').textContent = 'Type the name others will see.';
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        return;
      }
      this.goOnline(name);
    });
    $('accept-call').addEventListener('click', () => this.accept(false));
    $('accept-audio').addEventListener('click', () => this.accept(true));
    $('decline-call').addEventListener('click', () => this.decline());
    $('block-caller').addEventListener('click', () => this.blockCaller());
    $('cancel-call').addEventListener('click', () => this.space && this.space.cancel());
    input.focus();
  }

  goOnline(name) {
    this.name = name;
    localStorage.setItem(NAME_KEY, name);
    // A click is a user gesture: the ringtone may start later without one.
    this.tone.unlock();
    $('online-form').hidden = true;
    $('online').hidden = false;
    $('me-name').textContent = name;
    const space = new Space({ space: this.spaceName, name, token: this.token });
    this.space = space;
    const on = (type, handler) => space.addEventListener(type, (e) => handler.call(this, e.detail));
    on('state', this.onState);
    on('people', () => this.renderPeople());
    on('person-joined', () => this.renderPeople());
    on('person-left', () => this.renderPeople());
    on('person-busy', () => this.renderPeople());
    on('ring', this.onRing);
    on('ringing', this.onRinging);
    on('call-accepted', this.onAccepted);
    on('call-declined', (d) => this.onNoCall(d, `${nameOf(d)} declined the call.`));
    on('call-busy', (d) => this.onNoCall(d, `${nameOf(d)} is busy in another call.`));
    on('call-missed', (d) => this.onNoCall(d, d.outgoing ? `${nameOf(d)} did not answer.` : `You missed a call from ${nameOf(d)}.`));
    on('call-cancelled', (d) => this.onNoCall(d, d.outgoing ? 'Call cancelled.' : `You missed a call from ${nameOf(d)}.`));
    on('call-ended', this.onEnded);
    on('error', this.onError);
    space.connect();
    this.renderPeople();
    // Leave at once when the tab goes (a reload comes back as a new entry), not after the grace.
    window.addEventListener('pagehide', () => space.leave());
  }

  // --- the list ---

  showList() {
    showScreen('people');
    document.title = `People · ${this.spaceName} · signalbox`;
  }

  renderPeople() {
    const people = this.space ? [...this.space.people.values()] : [];
    const calling = Boolean(this.space && this.space.current);
    $('space-people').replaceChildren(...people.map((p) => this.personRow(p, calling)));
    $('nobody').hidden = people.length > 0 || !this.space;
  }

  personRow(p, calling) {
    const name = p.name || 'Guest';
    const avatar = el('span', { class: 'mini-avatar', 'aria-hidden': 'true', text: initials(name) });
    avatar.style.setProperty('--hue', String(hueOf(p.id + name)));
    const button = (text, label, audioOnly) => {
      const b = el('button', { type: 'button', class: `btn ${audioOnly ? 'ghost' : 'primary'} small`, 'aria-label': label, disabled: calling }, text);
      b.addEventListener('click', () => this.callPerson(p, audioOnly));
      return b;
    };
    return el(
      'li',
      { class: 'person', 'data-person': p.id },
      avatar,
      el(
        'span',
        { class: 'person-text' },
        el('span', { class: 'person-name' }, name, p.busy ? el('span', { class: 'busy-badge', text: 'busy' }) : null),
        el('span', { class: 'person-state', text: p.busy ? 'in a call or ringing' : 'available' }),
      ),
      el('span', { class: 'call-buttons' }, button('Video call', `Video call ${name}`, false), button('Audio call', `Audio call ${name}`, true)),
    );
  }

  say(text) {
    $('call-status').textContent = text;
  }

  // --- calling someone ---

  async callPerson(person, audioOnly) {
    if (!this.space || this.space.current || this.media) return;
    this.say('');
    const media = new LocalMedia();
    this.media = media;
    await media.start({ audioOnly });
    if (this.media !== media) return;
    if (!this.space.call(person.id, { audioOnly, localStream: media.stream })) {
      this.dropMedia();
      this.say('Not connected to the server right now: try again in a moment.');
      return;
    }
    showScreen('outgoing');
    document.title = `Calling ${person.name || 'Guest'} · signalbox`;
    setAvatar($('outgoing-avatar'), person.id, person.name);
    $('outgoing-title').textContent = `Calling ${person.name || 'Guest'}…`;
    $('outgoing-text').textContent = audioOnly ? 'Audio call' : 'Video call';
    $('cancel-call').setAttribute('aria-label', `Cancel the call to ${person.name || 'Guest'}`);
    $('cancel-call').focus();
    this.renderPeople();
  }

  onRinging() {
    const c = this.space.current;
    $('outgoing-text').textContent = `${c.audioOnly ? 'Audio call' : 'Video call'} · ringing`;
    this.tone.start('ringback');
  }

  // --- being called ---

  onRing({ from, name, audioOnly }) {
    const who = name || 'Someone';
    showScreen('incoming');
    document.title = `${who} is calling · signalbox`;
    setAvatar($('incoming-avatar'), from, who);
    $('incoming-title').textContent = `${who} is calling`;
    $('incoming-text').textContent = audioOnly ? 'Audio call' : 'Video call';
    const accept = $('accept-call');
    accept.textContent = 'Accept';
    accept.setAttribute('aria-label', audioOnly ? `Accept the audio call from ${who}` : `Accept the video call from ${who}`);
    const acceptAudio = $('accept-audio');
    acceptAudio.hidden = audioOnly;
    acceptAudio.textContent = 'Accept audio only';
    acceptAudio.setAttribute('aria-label', `Accept the call from ${who} with audio only`);
    const decline = $('decline-call');
    decline.textContent = 'Decline';
    decline.setAttribute('aria-label', `Decline the call from ${who}`);
    $('block-caller').textContent = `Block ${who}`;
    for (const b of [accept, acceptAudio, decline]) b.disabled = false;
    this.tone.start('ring');
    accept.focus();
    this.renderPeople();
  }

  async accept(audioOnly) {
    const c = this.space && this.space.current;
    if (!c || c.outgoing || c.state !== 'ringing' || this.media) return;
    this.tone.stop();
    for (const id of ['accept-call', 'accept-audio', 'decline-call']) $(id).disabled = true;
    $('incoming-text').textContent = 'Connecting…';
    const media = new LocalMedia();
    this.media = media;
    await media.start({ audioOnly: audioOnly || c.audioOnly });
    if (this.media !== media) return;
    if (this.space.current !== c || c.state !== 'ringing') {
      // Cancelled or missed while the camera was starting.
      this.dropMedia();
      return;
    }
    this.space.accept({ localStream: media.stream });
  }

  decline() {
    const c = this.space && this.space.current;
    if (!c || c.outgoing) return;
    this.space.decline();
    this.backToList(`You declined the call from ${c.name || 'Someone'}.`);
  }

  blockCaller() {
    const c = this.space && this.space.current;
    if (!c || c.outgoing) return;
    this.space.block(c.peer);
    this.backToList(`You blocked ${c.name || 'Someone'}: their calls will not ring here while you are online.`);
  }

  // --- outcomes ---

  onAccepted({ room, peer, name }) {
    this.tone.stop();
    const media = this.media || new LocalMedia();
    this.media = null;
    this.callScreen = new CallScreen(room.signaling.room || 'call', {
      media,
      privateCall: { peerName: name || this.space.people.get(peer)?.name || '', hangUp: () => this.space.hangUp() },
    });
    this.callScreen.startPrivate({ signaling: this.space.signaling, peerRoom: room, name: this.name });
  }

  onNoCall(detail, text) {
    this.backToList(text);
  }

  onEnded({ name, byUs }) {
    this.backToList(byUs ? `You hung up the call with ${name || 'Someone'}.` : `${name || 'Someone'} hung up.`);
  }

  onError(msg) {
    const c = this.space.current;
    if (msg.code === 'forbidden' || msg.code === 'unauthorized' || msg.code === 'room-full' || msg.code === 'bad-request') {
      if (this.space.signaling.state === 'closed') {
        this.notice(msg.code === 'room-full' ? 'This space is full' : 'You cannot enter this space', msg.message || '');
        return;
      }
    }
    if (msg.code === 'unknown-person' && !c) {
      this.backToList('That person is no longer online.');
      return;
    }
    if (msg.code === 'rate-limited' && !c) {
      this.backToList('Too many calls in a short time: wait a moment and try again.');
      return;
    }
    console.warn(`space error ${msg.code}: ${msg.message || ''}`);
  }

  onState({ state }) {
    const dot = $('space-dot');
    dot.dataset.state = state;
    dot.setAttribute('aria-label', state === 'connected' ? 'Online' : state);
    if (this.callScreen) return;
    if (state === 'reconnecting') showBanner('Connection lost — reconnecting…');
    else if (state === 'connected') hideBanner();
  }

  /** Back to the list after a call or an attempt, with `text` as the status line. */
  backToList(text) {
    this.tone.stop();
    this.dropMedia();
    if (this.callScreen) {
      this.callScreen.close();
      this.callScreen = null;
    }
    this.showList();
    this.say(text);
    this.renderPeople();
    $('people-title').focus();
  }

  dropMedia() {
    if (this.media) this.media.stopAll();
    this.media = null;
  }

  notice(title, text) {
    this.tone.stop();
    this.dropMedia();
    showScreen('notice');
    $('notice-title').textContent = title;
    $('notice-text').textContent = text;
    $('notice-actions').replaceChildren(el('a', { class: 'btn primary', href: '/' }, 'Back to the start page'));
  }
}

// ---------------------------------------------------------------------------------------
// helpers

/**
 * Ring and ring-back tones synthesised with WebAudio: two sine waves (440 and 480 Hz), the
 * callee's as a double ring every 3 s, the caller's softer, 2 s on and 4 s off. The audio
 * context is created on a click ({@link Ringtone#unlock}), since browsers only let a page make
 * sound after a gesture. `document.body.dataset.tone` names the tone while it sounds.
 */
class Ringtone {
  constructor() {
    this.ctx = null;
    this.timer = null;
  }

  unlock() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx || this.ctx) return;
    try {
      this.ctx = new Ctx();
    } catch {
      this.ctx = null;
    }
  }

  start(kind) {
    this.stop();
    this.unlock();
    const ctx = this.ctx;
    if (!ctx) return;
    ctx.resume().catch(() => {});
    const ring = kind === 'ring';
    const burst = ring ? [[0, 0.4], [0.6, 0.4]] : [[0, 2]];
    const every = ring ? 3000 : 6000;
    const level = ring ? 0.18 : 0.06;
    const play = () => {
      const t0 = ctx.currentTime + 0.05;
      for (const [at, length] of burst) beep(ctx, t0 + at, length, level);
    };
    play();
    this.timer = setInterval(play, every);
    document.body.dataset.tone = kind;
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    delete document.body.dataset.tone;
  }
}

/** One tone of `length` seconds at `at`, with short ramps so it does not click. */
function beep(ctx, at, length, level) {
  const gain = ctx.createGain();
  gain.gain.setValueAtTime(0, at);
  gain.gain.linearRampToValueAtTime(level, at + 0.02);
  gain.gain.setValueAtTime(level, at + length - 0.03);
  gain.gain.linearRampToValueAtTime(0, at + length);
  gain.connect(ctx.destination);
  for (const hz of [440, 480]) {
    const osc = ctx.createOscillator();
    osc.frequency.value = hz;
    osc.connect(gain);
    osc.start(at);
    osc.stop(at + length);
  }
}

function setAvatar(node, id, name) {
  node.textContent = initials(name || '?');
  node.style.setProperty('--hue', String(hueOf(id + (name || ''))));
}

function nameOf(detail) {
  return detail.name || 'Someone';
}
