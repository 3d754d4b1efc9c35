// The signalbox web app: the landing page at `/`, a room's call at `/r/{room}` (call.js), and
// a space's People view at `/s/{space}` (people.js), all served as the same index.html.

import { randomRoomName, isValidRoom, parseRoomInput, roomFromPath, spaceFromPath } from './names.js';
import { CallScreen, roomLink } from './call.js';
import { PeopleView, spaceLink } from './people.js';
import { $, el, showScreen, toast, copyText } from './ui.js';

// ---------------------------------------------------------------------------------------
// Landing page

function landing() {
  showScreen('landing');
  document.title = 'signalbox — private video calls';
  const input = $('create-room');
  const link = $('create-link');
  const update = () => {
    const ok = isValidRoom(input.value.trim());
    link.textContent = ok ? roomLink(input.value.trim()) : 'Choose a room name';
    input.setAttribute('aria-invalid', ok ? 'false' : 'true');
  };
  input.value = randomRoomName();
  update();
  input.addEventListener('input', update);
  $('shuffle-room').addEventListener('click', () => {
    input.value = randomRoomName();
    update();
    input.focus();
  });
  $('copy-create-link').addEventListener('click', () => {
    if (isValidRoom(input.value.trim())) copyText(roomLink(input.value.trim()));
    else toast('Letters, digits, dashes, dots and underscores only (up to 64).', { kind: 'error' });
  });
  $('create-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const room = input.value.trim();
    if (!isValidRoom(room)) {
      toast('Letters, digits, dashes, dots and underscores only (up to 64).', { kind: 'error' });
      input.focus();
      return;
    }
    location.assign(`/r/${encodeURIComponent(room)}`);
  });
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const parsed = parseRoomInput($('join-room').value);
    if (!parsed) {
      $('join-error').textContent = 'That is not a room name or a room link.';
      $('join-room').setAttribute('aria-invalid', 'true');
      $('join-room').focus();
      return;
    }
    location.assign(`/r/${encodeURIComponent(parsed.room)}${parsed.hash}`);
  });
  // A new space: a random name, as for rooms, so its link cannot be guessed.
  const space = randomRoomName();
  $('space-link').textContent = spaceLink(space);
  $('copy-space-link').addEventListener('click', () => copyText(spaceLink(space), 'Space link'));
  $('space-form').addEventListener('submit', (e) => {
    e.preventDefault();
    location.assign(`/s/${encodeURIComponent(space)}`);
  });
  $('join-room').addEventListener('input', () => {
    $('join-error').textContent = '';
    $('join-room').removeAttribute('aria-invalid');
  });
}

function boot() {
  const path = location.pathname;
  if (path.startsWith('/s/')) {
    const space = spaceFromPath(path);
    if (space) new PeopleView(space).start();
    else notFound('Not a space', 'A space name is 1 to 64 letters, digits, dashes, dots and underscores.');
    return;
  }
  if (path === '/' || path === '/index.html') {
    landing();
    return;
  }
  const room = roomFromPath(path);
  if (!room) {
    notFound('Not a room', 'This address does not name a room.');
    return;
  }
  new CallScreen(room).prejoin().catch((err) => {
    console.warn('could not start the room', err);
    toast('Something went wrong starting the call. Reload to try again.', { kind: 'error', ms: 10000 });
  });
}

function notFound(title, text) {
  showScreen('notice');
  $('notice-title').textContent = title;
  $('notice-text').textContent = text;
  const home = el('a', { class: 'btn primary', href: '/' }, 'Start a new call');
  $('notice-actions').replaceChildren(home);
}

boot();
