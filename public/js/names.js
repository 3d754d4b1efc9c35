// Room names: readable, random and valid under the protocol rule (1–64 of letters, digits,
// `-`, `_`, `.`). Anyone who knows a room's name can knock on it, so a generated name must not be
// guessable: three words (60 each, about 17.7 bits) and a tail of ten characters of Crockford's
// base 32 (50 bits, no i, l, o or u to misread) give about 67.7 bits, as in
// `calm-otter-lantern-7k3mq-9xd4f`, still readable over the phone.

const ADJECTIVES = [
  'amber', 'bold', 'brave', 'bright', 'calm', 'clear', 'clever', 'cosy', 'crisp', 'eager',
  'early', 'fair', 'fancy', 'gentle', 'glad', 'golden', 'grand', 'green', 'happy', 'humble',
  'jolly', 'keen', 'kind', 'lively', 'lucky', 'mellow', 'merry', 'mild', 'misty', 'modest',
  'noble', 'polite', 'proud', 'quick', 'quiet', 'rapid', 'ready', 'rosy', 'royal', 'rustic',
  'silent', 'silver', 'simple', 'sleek', 'smart', 'snowy', 'solid', 'sunny', 'swift', 'tidy',
  'tender', 'velvet', 'vivid', 'warm', 'wild', 'wise', 'witty', 'young', 'zesty', 'lunar',
];

const NOUNS = [
  'acorn', 'anchor', 'badger', 'beacon', 'birch', 'bison', 'brook', 'canyon', 'cedar', 'comet',
  'coral', 'crane', 'delta', 'dune', 'eagle', 'ember', 'falcon', 'fern', 'fjord', 'forest',
  'garden', 'glacier', 'harbor', 'heron', 'island', 'jasper', 'lagoon', 'lantern', 'lark', 'maple',
  'meadow', 'meteor', 'orchid', 'otter', 'owl', 'panda', 'pebble', 'pine', 'planet', 'prairie',
  'quartz', 'raven', 'reef', 'river', 'robin', 'saddle', 'sparrow', 'spruce', 'summit', 'thistle',
  'tiger', 'tundra', 'valley', 'violet', 'walrus', 'willow', 'wren', 'yak', 'zephyr', 'harvest',
];

/** Crockford's base 32, lower case: 32 symbols, so each random byte's low 5 bits pick one evenly. */
const TAIL_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
const TAIL_CHARS = 10;

/** Bits of randomness in a name from `randomRoomName` (the word lists and the tail). */
export const ROOM_NAME_BITS = Math.log2(ADJECTIVES.length) + 2 * Math.log2(NOUNS.length) + TAIL_CHARS * Math.log2(TAIL_ALPHABET.length);

/** A uniform index below `n` from 32-bit random numbers, by rejection (no modulo bias). */
function pick(list) {
  const n = list.length;
  const limit = Math.floor(2 ** 32 / n) * n;
  const r = new Uint32Array(1);
  do crypto.getRandomValues(r); while (r[0] >= limit);
  return list[r[0] % n];
}

/** A fresh random room name such as `calm-otter-lantern-7k3mq-9xd4f`. */
export function randomRoomName() {
  const bytes = new Uint8Array(TAIL_CHARS);
  crypto.getRandomValues(bytes);
  const tail = Array.from(bytes, (b) => TAIL_ALPHABET[b & 31]).join('');
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${pick(NOUNS)}-${tail.slice(0, 5)}-${tail.slice(5)}`;
}

const ROOM_RE = /^[A-Za-z0-9._-]{1,64}$/;

export function isValidRoom(name) {
  return typeof name === 'string' && ROOM_RE.test(name);
}

/**
 * What a person typed into "join a room": a bare name or a whole link such as
 * `https://host/r/name#token=…`. Returns `{room, hash}` or null when it is neither.
 */
export function parseRoomInput(text, base = globalThis.location ? globalThis.location.origin : 'https://localhost') {
  const value = (text || '').trim();
  if (!value) return null;
  if (isValidRoom(value)) return { room: value, hash: '' };
  try {
    const url = new URL(value, base);
    const room = roomFromPath(url.pathname);
    if (room) return { room, hash: url.hash };
  } catch {
    // not a URL either
  }
  return null;
}

/** The room named by a path `/r/{room}`, or null. */
export function roomFromPath(pathname) {
  return nameFromPath(/^\/r\/([^/]+)\/?$/, pathname);
}

/** The space named by a path `/s/{space}` (a People view), or null. Same rule as rooms. */
export function spaceFromPath(pathname) {
  return nameFromPath(/^\/s\/([^/]+)\/?$/, pathname);
}

function nameFromPath(pattern, pathname) {
  const m = pattern.exec(pathname);
  if (!m) return null;
  let room;
  try {
    room = decodeURIComponent(m[1]);
  } catch {
    return null;
  }
  return isValidRoom(room) ? room : null;
}

/** The access token from a `#token=…` fragment, or null. */
export function tokenFromHash(hash) {
  const params = new URLSearchParams((hash || '').replace(/^#/, ''));
  const token = params.get('token');
  return token ? token : null;
}
