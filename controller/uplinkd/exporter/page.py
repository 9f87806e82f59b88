"""The LAN status page: one HTML page, one script, one JSON endpoint.

The script renders everything from `/status.json` with DOM calls (`textContent`, never
HTML strings, so an uplink's name or reason cannot inject markup) and fetches it again
every few seconds; the page itself never reloads. Drain buttons appear only when the
exporter was started with a token file, and send the token the user typed as a bearer
token; the page stores nothing.
"""

from __future__ import annotations

REFRESH_MS = 2000

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>uplinkd</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 0.8rem; color: #222; }
h1 { font-size: 1.2rem; margin: 0 0 0.3rem; }
#summary { color: #555; margin-bottom: 0.8rem; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 0.6rem 0.8rem; margin-bottom: 0.6rem; }
.head { display: flex; gap: 0.6rem; align-items: baseline; flex-wrap: wrap; }
.name { font-weight: 600; font-size: 1.05rem; }
.state { padding: 0 0.45rem; border-radius: 4px; color: #fff; background: #888; }
.state.up { background: #2a8a3a; } .state.degraded { background: #c48a00; }
.state.down { background: #c0392b; } .state.probing { background: #2c6fbb; }
.meta { color: #555; font-size: 0.9rem; }
.sparks { display: flex; gap: 1rem; flex-wrap: wrap; margin-top: 0.3rem; font-size: 0.85rem; color: #555; }
svg { background: #f6f6f6; border-radius: 3px; }
#events { font-size: 0.9rem; } #events li { margin: 0.15rem 0; }
#drain-auth { margin-bottom: 0.8rem; } button { margin-left: auto; }
.stale { color: #c0392b; }
</style>
</head>
<body>
<h1>uplinkd</h1>
<div id="summary">loading…</div>
<div id="drain-auth" hidden><label>token <input id="token" type="password" autocomplete="off"></label></div>
<div id="uplinks"></div>
<h2 style="font-size:1rem">Recent events</h2>
<ul id="events"></ul>
<script src="app.js"></script>
</body>
</html>
"""

SCRIPT = """'use strict';
const REFRESH_MS = @REFRESH@;
let updates = 0;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function bytes(n) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return n.toFixed(i ? 1 : 0) + ' ' + units[i];
}

function duration(s) {
  if (s < 90) return Math.round(s) + ' s';
  if (s < 5400) return Math.round(s / 60) + ' min';
  if (s < 172800) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
}

function spark(values, label, unit) {
  const w = 160, h = 28, ns = 'http://www.w3.org/2000/svg';
  const box = el('span');
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('width', w); svg.setAttribute('height', h);
  svg.setAttribute('role', 'img');
  const nums = values.filter(v => v !== null);
  const max = Math.max(1e-9, ...nums);
  const pts = [];
  values.forEach((v, i) => {
    if (v === null) return;
    const x = values.length > 1 ? (i * (w - 2)) / (values.length - 1) + 1 : w / 2;
    pts.push(x.toFixed(1) + ',' + (h - 2 - (v / max) * (h - 4)).toFixed(1));
  });
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', pts.join(' '));
  line.setAttribute('fill', 'none'); line.setAttribute('stroke', '#2c6fbb');
  line.setAttribute('stroke-width', '1.5');
  svg.appendChild(line);
  const last = nums.length ? nums[nums.length - 1] : null;
  svg.setAttribute('aria-label', label + ' ' + (last === null ? '-' : last + ' ' + unit));
  box.appendChild(el('span', null, label + ' '));
  box.appendChild(svg);
  box.appendChild(el('span', null, ' ' + (last === null ? '-' : last + ' ' + unit)));
  return box;
}

async function act(command, uplink) {
  const token = document.getElementById('token').value;
  const r = await fetch('api/' + command, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token},
    body: JSON.stringify({uplink: uplink}),
  });
  if (!r.ok) alert(command + ' ' + uplink + ': ' + (await r.text()));
  refresh();
}

function render(data) {
  const summary = document.getElementById('summary');
  summary.className = data.reachable ? '' : 'stale';
  summary.textContent = data.reachable ? data.summary : 'uplinkd is not answering';
  document.getElementById('drain-auth').hidden = !data.drain_enabled;
  const list = document.getElementById('uplinks');
  list.replaceChildren();
  for (const u of data.uplinks) {
    const card = el('div', 'card uplink');
    card.dataset.uplink = u.name;
    card.dataset.state = u.state;
    const head = el('div', 'head');
    head.appendChild(el('span', 'name', u.name));
    head.appendChild(el('span', 'state ' + u.state, u.state));
    head.appendChild(el('span', 'meta', 'for ' + duration(u.since_s || 0)));
    head.appendChild(el('span', 'meta', u.in_group ? 'in service, weight ' + u.weight : 'not in service'));
    if (u.drained) head.appendChild(el('span', 'meta', 'drained'));
    if (data.drain_enabled) {
      const cmd = u.drained ? 'undrain' : 'drain';
      const b = el('button', null, cmd);
      b.addEventListener('click', () => act(cmd, u.name));
      head.appendChild(b);
    }
    card.appendChild(head);
    card.appendChild(el('div', 'meta', (u.dev || 'no interface') + ' · ' + (u.reason || '')));
    const sparks = el('div', 'sparks');
    sparks.appendChild(spark(u.history.rtt_ms, 'RTT', 'ms'));
    sparks.appendChild(spark(u.history.loss_pct, 'loss', '%'));
    sparks.appendChild(el('span', 'today', 'today ↓ ' + bytes(u.rx_today) + ' ↑ ' + bytes(u.tx_today)));
    card.appendChild(sparks);
    list.appendChild(card);
  }
  const events = document.getElementById('events');
  events.replaceChildren();
  for (const e of data.events.slice(0, 15)) {
    const when = new Date(e.at * 1000).toLocaleTimeString();
    const what = e.uplink + ': ' + (e.from || '-') + ' → ' + e.to + ' (' + e.reason + ')';
    events.appendChild(el('li', 'event', when + ' ' + what));
  }
  updates++;
  document.body.dataset.updates = updates;
}

async function refresh() {
  try {
    const r = await fetch('status.json', {cache: 'no-store'});
    render(await r.json());
  } catch (err) {
    const summary = document.getElementById('summary');
    summary.className = 'stale';
    summary.textContent = 'status page unreachable: ' + err;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
""".replace("@REFRESH@", str(REFRESH_MS))
