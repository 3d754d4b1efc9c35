// Live server status for the operator: rooms, peers and relay allocations from GET /api/stats
// (Authorization: Bearer <[admin] token>), and in a cluster every node alive. The token stays in
// this tab's sessionStorage.

const REFRESH_MS = 2000;
let timer = null;

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function render(stats) {
  const allocations = Object.values(stats.allocations).reduce((a, b) => a + b, 0);
  document.getElementById('totals').textContent =
    `${stats.rooms.length} rooms · ${stats.peers} peers · ${stats.ws_connections} WebSocket connections · ${allocations} relay allocations · up ${stats.uptime_s} s`;
  const rooms = document.querySelector('#rooms tbody');
  rooms.replaceChildren(...stats.rooms.map((r) => {
    const tr = document.createElement('tr');
    const names = r.peers.map((p) => `${p.name || p.id}${p.connected ? '' : ' (reconnecting)'}`);
    tr.append(cell(r.room), cell(names.join(', ')));
    return tr;
  }));
  const allocs = document.querySelector('#allocations tbody');
  allocs.replaceChildren(...Object.entries(stats.allocations).map(([transport, n]) => {
    const tr = document.createElement('tr');
    tr.append(cell(transport.toUpperCase()), cell(String(n)));
    return tr;
  }));
  document.getElementById('relay-totals').textContent =
    `${stats.permissions} permissions · ${stats.channels} channel bindings`;
  renderCluster(stats.cluster);
}

function renderCluster(cluster) {
  document.getElementById('cluster').hidden = !cluster;
  if (!cluster) return;
  const redis = cluster.redis;
  document.getElementById('cluster-redis').textContent = redis.up
    ? `This node: ${cluster.node} · Redis ${redis.url} up for ${redis.since_s} s, ${redis.latency_ms.toFixed(1)} ms`
    : `This node: ${cluster.node} · Redis ${redis.url} UNREACHABLE for ${redis.since_s} s: ${redis.error || 'no answer'}`;
  const nodes = document.querySelector('#nodes tbody');
  nodes.replaceChildren(...cluster.nodes.map((n) => {
    const tr = document.createElement('tr');
    const relay = n.relays.map((r) => r.advertised).join(', ');
    tr.append(cell(n.name), cell(n.public), cell(relay ? `${relay} ${n.relay_ports}` : 'off'),
      cell(String(n.load.peers)), cell(String(n.load.ws_connections)), cell(String(n.load.allocations)));
    return tr;
  }));
}

async function refresh() {
  const token = sessionStorage.getItem('signalbox-admin-token') || '';
  const error = document.getElementById('error');
  try {
    const resp = await fetch('/api/stats', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
    if (resp.status === 401 || resp.status === 404) {
      const body = await resp.json().catch(() => ({}));
      throw new Error(body.message || `the server answered ${resp.status}`);
    }
    if (!resp.ok) throw new Error(`the server answered ${resp.status}`);
    render(await resp.json());
    error.textContent = '';
    document.getElementById('stats').hidden = false;
    timer = setTimeout(refresh, REFRESH_MS);
  } catch (e) {
    error.textContent = `Cannot load the status: ${e.message}.`;
    document.getElementById('stats').hidden = true;
  }
}

document.getElementById('login').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem('signalbox-admin-token', document.getElementById('token').value);
  clearTimeout(timer);
  refresh();
});

if (sessionStorage.getItem('signalbox-admin-token')) refresh();
