// DOM helpers and the pieces of the call screen: tiles, grid, chat log, participants list,
// banner and toasts. No call logic lives here; app.js decides, ui.js draws.

export const $ = (id) => document.getElementById(id);

/** Creates an element: `el('button', {class: 'x', 'aria-label': 'y'}, child, 'text')`. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** An icon from the sprite in index.html. */
export function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const use = document.createElementNS(ns, 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  return svg;
}

export function setIcon(button, name) {
  const use = button.querySelector('use');
  if (use) use.setAttribute('href', `#i-${name}`);
}

const SCREENS = ['landing', 'prejoin', 'lobby', 'call', 'notice', 'people', 'incoming', 'outgoing'];

export function showScreen(name) {
  for (const s of SCREENS) $(s).hidden = s !== name;
  document.body.dataset.screen = name;
}

export function initials(name) {
  const parts = (name || '?').trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || '?').slice(0, 2);
  return letters.toUpperCase();
}

/** A stable, calm hue per participant for avatars. */
export function hueOf(text) {
  let h = 0;
  for (const ch of text || '') h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

let bannerTimer = null;

export function showBanner(text, { spinner = true } = {}) {
  clearTimeout(bannerTimer);
  $('banner-text').textContent = text;
  $('banner').classList.toggle('spin', spinner);
  $('banner').hidden = false;
}

export function hideBanner() {
  $('banner').hidden = true;
}

export function toast(text, { kind = 'info', ms = 3500 } = {}) {
  const node = el('div', { class: `toast ${kind}`, text });
  $('toasts').append(node);
  setTimeout(() => node.classList.add('leaving'), ms);
  setTimeout(() => node.remove(), ms + 400);
}

/** Copies text and says so; falls back to selecting it where the clipboard API is refused. */
export async function copyText(text, what = 'Link') {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied`);
  } catch {
    const input = el('input', { value: text, 'aria-hidden': 'true', class: 'offscreen' });
    document.body.append(input);
    input.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    input.remove();
    toast(ok ? `${what} copied` : `Copy this link: ${text}`, { ms: ok ? 3500 : 8000 });
  }
}

/** One participant's tile in the grid: video, name, state icons and the path badge. */
export class Tile {
  constructor({ id, name, local }) {
    this.id = id;
    this.local = local;
    this.video = el('video', { autoplay: true, playsinline: true, 'aria-hidden': 'true' });
    this.video.muted = local;
    if (local) this.video.classList.add('mirror');
    this.avatar = el('div', { class: 'avatar' }, el('span'));
    this.nameText = el('span', { class: 'name-text' });
    this.micIcon = icon('mic-off');
    this.micIcon.classList.add('muted-icon');
    this.mutedText = el('span', { class: 'visually-hidden' });
    this.nameTag = el('div', { class: 'name-tag' }, this.micIcon, this.nameText, this.mutedText);
    this.pathBadge = el('div', { class: 'path-badge', hidden: local });
    this.pathIcon = icon('direct');
    this.pathText = el('span', { text: 'connecting' });
    this.pathBadge.append(this.pathIcon, this.pathText);
    this.soundButton = el('button', { type: 'button', class: 'btn small sound-btn', hidden: true, text: 'Tap to hear' });
    this.soundButton.addEventListener('click', () => {
      this.video.muted = false;
      this.video.play().catch(() => {});
      this.soundButton.hidden = true;
    });
    this.node = el(
      'figure',
      { class: `tile cell${local ? ' local' : ''}`, 'data-peer': id },
      this.video,
      this.avatar,
      this.pathBadge,
      this.soundButton,
      el('figcaption', {}, this.nameTag),
    );
    this.setName(name);
    this.setMicMuted(false);
    this.setVideoVisible(false);
  }

  setName(name) {
    const shown = this.local ? `${name || 'You'} (you)` : name || 'Guest';
    this.nameText.textContent = shown;
    this.node.setAttribute('aria-label', shown);
    this.avatar.firstChild.textContent = initials(name || 'Guest');
    this.avatar.style.setProperty('--hue', String(hueOf(this.id + (name || ''))));
  }

  setMicMuted(muted) {
    this.micIcon.classList.toggle('on', muted);
    this.mutedText.textContent = muted ? ' (muted)' : '';
  }

  setVideoVisible(visible) {
    this.node.classList.toggle('no-video', !visible);
  }

  setSpeaking(speaking) {
    this.node.classList.toggle('speaking', speaking);
  }

  setMirror(mirror) {
    this.video.classList.toggle('mirror', mirror);
  }

  attach(stream) {
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    this.play();
  }

  /** Starts playback; when the browser refuses sound without a gesture, plays muted and offers a button. */
  play() {
    const p = this.video.play();
    if (!p) return;
    p.catch((err) => {
      if (err && err.name === 'NotAllowedError' && !this.video.muted) {
        this.video.muted = true;
        this.soundButton.hidden = false;
        this.video.play().catch(() => {});
      }
    });
  }

  setPath(summary, text) {
    this.pathBadge.classList.toggle('relay', summary.path === 'relay');
    this.pathBadge.classList.toggle('direct', summary.path === 'direct');
    this.pathBadge.dataset.path = summary.path;
    this.pathIcon.querySelector('use').setAttribute('href', summary.path === 'relay' ? '#i-relay' : '#i-direct');
    this.pathText.textContent = text;
    this.pathBadge.title = summary.protocol ? `${text} (${summary.protocol})` : text;
  }

  setConnecting(text) {
    this.pathBadge.dataset.path = 'unknown';
    this.pathBadge.classList.remove('relay', 'direct');
    this.pathText.textContent = text;
  }

  remove() {
    this.video.srcObject = null;
    this.node.remove();
  }
}

/** Keeps the grid's column layout in step with the number of tiles. */
export function layoutGrid(grid) {
  const count = grid.querySelectorAll('.cell').length;
  grid.dataset.count = String(Math.min(count, 9));
}

export function formatTime(ts) {
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function appendChat(log, { name, text, ts, mine }) {
  const item = el(
    'li',
    { class: `chat-msg${mine ? ' mine' : ''}` },
    el('div', { class: 'chat-meta' }, el('span', { class: 'chat-name', text: mine ? 'You' : name || 'Guest' }), el('time', { text: formatTime(ts) })),
    el('p', { class: 'chat-text', text }),
  );
  log.append(item);
  log.scrollTop = log.scrollHeight;
}

export function appendChatNote(log, text) {
  log.append(el('li', { class: 'chat-note', text }));
  log.scrollTop = log.scrollHeight;
}

/**
 * Redraws the participants list from `[{id, name, local, host, micMuted, cameraOff, path}]`.
 * With `actions(person)` returning buttons, each row ends with them (the host's Remove, Ask to
 * mute; Admit and Decline for people waiting).
 */
export function renderPeople(list, people, actions = null) {
  list.replaceChildren(
    ...people.map((p) => {
      const avatar = el('span', { class: 'mini-avatar', 'aria-hidden': 'true', text: initials(p.name) });
      avatar.style.setProperty('--hue', String(hueOf(p.id + (p.name || ''))));
      const state = [];
      if (p.host) state.push('host');
      if (p.waiting) state.push('waiting to join');
      if (p.micMuted) state.push('muted');
      if (p.cameraOff) state.push('camera off');
      if (p.path && p.path !== 'unknown') state.push(p.path === 'relay' ? 'via relay' : 'direct');
      const icons = el('span', { class: 'person-icons', 'aria-hidden': 'true' });
      if (p.micMuted) icons.append(icon('mic-off'));
      if (p.cameraOff) icons.append(icon('cam-off'));
      return el(
        'li',
        { class: 'person' },
        avatar,
        el(
          'span',
          { class: 'person-text' },
          el('span', { class: 'person-name', text: p.local ? `${p.name || 'You'} (you)` : p.name || 'Guest' }),
          el('span', { class: 'person-state', text: state.join(' · ') }),
        ),
        icons,
        actions ? el('span', { class: 'person-actions' }, ...actions(p)) : null,
      );
    }),
  );
}

/** Fills a device picker; `emptyText` says why there is nothing to pick. */
export function fillSelect(select, options, selectedId, emptyText = 'None found') {
  select.replaceChildren(
    ...options.map((o) => el('option', { value: o.id, text: o.label, selected: o.id === selectedId })),
  );
  select.disabled = options.length === 0;
  if (options.length === 0) select.append(el('option', { text: emptyText }));
}
