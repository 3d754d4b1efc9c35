// Room names: readable, random and valid under the protocol rule (1–64 of letters, digits,
// `-`, `_`, `.`). Three words and three digits give about 10^9 names, which makes a link hard
// to guess while staying easy to read out over the phone.

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

function pick(list, random) {
  return list[random % list.length];
}

/** A fresh random room name such as `calm-otter-lantern-042`. */
export function randomRoomName() {
  const r = new Uint32Array(4);
  crypto.getRandomValues(r);
  const digits = String(r[3] % 1000).padStart(3, '0');
  return `${pick(ADJECTIVES, r[0])}-${pick(NOUNS, r[1])}-${pick(NOUNS, r[2])}-${digits}`;
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
  const m = /^\/r\/([^/]+)\/?$/.exec(pathname);
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
