// Connection check: gathers ICE candidates separately for each way of reaching this server and
// explains the outcome. The server hands out one ICE server entry per path, with short-lived
// credentials (GET /api/diag).

const TIMEOUT_MS = 8000;

/** Gathers candidates for one ICE server; resolves with what was seen. */
async function gather(iceServer, expect) {
  const started = performance.now();
  const pc = new RTCPeerConnection({
    iceServers: [iceServer],
    iceTransportPolicy: expect === 'relay' ? 'relay' : 'all',
  });
  const seen = [];
  const hosts = [];
  const errors = [];
  let complete = false;
  try {
    pc.createDataChannel('diag');
    const done = new Promise((resolve) => {
      const timer = setTimeout(resolve, TIMEOUT_MS);
      pc.onicecandidate = (e) => {
        if (!e.candidate) { complete = true; clearTimeout(timer); resolve(); return; }
        const c = e.candidate;
        if (c.type === 'host' && c.protocol === 'udp') hosts.push(`${c.address || '?'}:${c.port}`);
        if (c.type === expect) {
          seen.push(`${c.address || '?'}:${c.port}`);
          clearTimeout(timer);
          resolve();
        }
      };
      pc.onicecandidateerror = (e) => {
        errors.push(`${e.errorCode || ''} ${e.errorText || ''}`.trim());
      };
    });
    await pc.setLocalDescription(await pc.createOffer());
    await done;
  } finally {
    pc.close();
  }
  const ms = Math.round(performance.now() - started);
  if (seen.length > 0) return { ok: true, seen: [...new Set(seen)], errors, ms };
  // A browser drops a server-reflexive candidate equal to one of its host candidates, which
  // is what a STUN answer looks like when there is no NAT in between. An unanswered STUN
  // server shows up as an icecandidateerror instead, so a clean, complete gathering means the
  // server answered.
  if (expect === 'srflx' && complete && errors.length === 0 && hosts.length > 0) {
    return { ok: true, seen: [...new Set(hosts)].map((h) => `${h} (no NAT)`), errors, ms };
  }
  return { ok: false, seen: [], errors, ms };
}

function row(check) {
  const tr = document.createElement('tr');
  tr.dataset.check = check.id;
  const name = document.createElement('th');
  name.scope = 'row';
  name.textContent = check.label;
  const detail = document.createElement('span');
  detail.className = 'detail';
  detail.textContent = check.url;
  name.append(detail);
  const status = document.createElement('td');
  status.className = 'status wait';
  status.textContent = 'checking…';
  const addr = document.createElement('td');
  addr.className = 'addr';
  const time = document.createElement('td');
  tr.append(name, status, addr, time);
  return { tr, status, addr, time };
}

/** Plain words for a set of results keyed by check id. */
export function explain(results) {
  const ok = (id) => results[id] === true;
  const any = Object.values(results).some((v) => v === true);
  if (!any) {
    return 'No path to this server worked. Calls with people on other networks will fail. '
      + 'A firewall may block this server\'s ports, or the server\'s public address is set wrong.';
  }
  if (ok('turn-udp') && ok('stun')) {
    return 'Everything needed works over UDP: calls connect directly where possible and '
      + 'through this server\'s relay otherwise, with the lowest delay.';
  }
  if (ok('turn-udp')) {
    return 'The relay works over UDP, so calls will connect. STUN gave no public address, so '
      + 'direct connections are unlikely and calls will go through the relay.';
  }
  if (ok('turn-tcp') || ok('turn-tcp-443')) {
    return 'Your network blocks UDP to this server; calls will go through TURN over TCP '
      + '(a little more delay than UDP).';
  }
  if (ok('turns-443') || ok('turns')) {
    const port = ok('turns-443') ? '443' : 'the TURNS port';
    return `Your network blocks UDP and plain TCP; calls will go through TURN over TLS on ${port}.`;
  }
  return 'Only some checks worked; see the table for which paths are open.';
}

async function run() {
  const button = document.getElementById('run');
  const tbody = document.querySelector('#results tbody');
  const summary = document.getElementById('summary');
  button.disabled = true;
  tbody.replaceChildren();
  summary.textContent = 'Checking…';
  let checks;
  try {
    const resp = await fetch('/api/diag', { cache: 'no-store' });
    if (!resp.ok) throw new Error(`the server answered ${resp.status}`);
    ({ checks } = await resp.json());
  } catch (e) {
    summary.textContent = `Cannot get the list of paths to check: ${e.message}.`;
    button.disabled = false;
    return;
  }
  const results = {};
  const rows = checks.map((check) => {
    const r = row(check);
    tbody.append(r.tr);
    return [check, r];
  });
  await Promise.all(rows.map(async ([check, r]) => {
    const res = await gather(check.iceServer, check.expect);
    results[check.id] = res.ok;
    r.status.className = `status ${res.ok ? 'ok' : 'fail'}`;
    r.status.textContent = res.ok ? 'working' : 'failed';
    if (!res.ok && res.errors.length) {
      const why = document.createElement('span');
      why.className = 'detail';
      why.textContent = res.errors[0];
      r.status.append(why);
    }
    r.addr.textContent = res.seen.join(', ') || '—';
    r.time.textContent = `${res.ms} ms`;
    r.tr.dataset.result = res.ok ? 'working' : 'failed';
  }));
  summary.textContent = explain(results);
  document.body.dataset.done = 'true';
  button.disabled = false;
}

document.getElementById('run').addEventListener('click', run);
run();
