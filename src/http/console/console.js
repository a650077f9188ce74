// Vigil console: plain JavaScript over the public admin API. The admin token lives in this
// tab's sessionStorage only and travels as an Authorization header; it is never put in a URL.
// Client ids, topics and payloads are attacker-controlled: every value reaches the page through
// textContent / attributes set one by one, never as markup.
'use strict';

(() => {
  const TOKEN_KEY = 'vigil.adminToken';
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);

  // ---------- DOM helpers (text only) ----------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = String(v);
        else if (k === 'title') node.title = String(v);
        else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
        else if (k.startsWith('data-')) node.setAttribute(k, String(v));
        else node.setAttribute(k, String(v));
      }
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const td = (value, cls) => el('td', { class: cls }, value === null || value === undefined || value === '' ? el('span', { class: 'muted', text: '—' }) : value);
  function badge(text, kind) {
    return el('span', { class: `badge ${kind || text}`, text });
  }
  function ago(iso) {
    if (!iso) return null;
    const ms = Date.now() - Date.parse(iso);
    const abs = Math.abs(ms);
    const s = Math.round(abs / 1000);
    const txt = s < 60 ? `${s}s` : s < 3600 ? `${Math.round(s / 60)}m` : s < 86400 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86400)}d`;
    return ms >= 0 ? `${txt} ago` : `in ${txt}`;
  }
  function timeCell(iso) {
    if (!iso) return td(null);
    return el('td', { title: iso }, ago(iso));
  }
  function emptyRow(tbody, cols, text) {
    tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: cols, text })));
  }
  function toast(text, kind) {
    const t = $('toast');
    t.textContent = text;
    t.className = `toast ${kind || ''}`;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.hidden = true), 4000);
  }

  // ---------- API ----------
  class Unauthorized extends Error {}
  async function api(path, options = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new Unauthorized('not signed in');
    const headers = { authorization: `Bearer ${token}` };
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(path, {
      method: options.method || 'GET',
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    if (res.status === 401) {
      signOut('The admin token was refused.');
      throw new Unauthorized('unauthorized');
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
    return body;
  }
  const q = (params) => {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
    const s = u.toString();
    return s ? `?${s}` : '';
  };
  const enc = encodeURIComponent;

  // ---------- sign in / out ----------
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopRefresh();
    $('tabs').hidden = true;
    $('session').hidden = true;
    $('drawer').hidden = true;
    for (const v of document.querySelectorAll('.view')) v.hidden = true;
    $('login').hidden = false;
    const err = $('login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('token').focus();
  }

  async function signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      const cluster = await api('/admin/cluster');
      $('node-name').textContent = `node ${cluster.node} · ${cluster.mode}`;
    } catch (err) {
      if (!(err instanceof Unauthorized)) signOut(`Could not reach the admin API: ${err.message}`);
      return;
    }
    $('login').hidden = true;
    $('tabs').hidden = false;
    $('session').hidden = false;
    show(location.hash.slice(1) || 'fleet');
  }

  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('token');
    const token = input.value.trim();
    input.value = '';
    if (token) void signIn(token);
  });
  $('logout').addEventListener('click', () => signOut(''));

  // ---------- views ----------
  const views = { fleet: loadFleet, wills: loadWills, retained: loadRetained, identity: loadIdentity, cluster: loadCluster };
  let current = '';
  let timer = 0;
  function stopRefresh() {
    clearInterval(timer);
    timer = 0;
  }
  function show(name) {
    if (!views[name]) name = 'fleet';
    current = name;
    for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.view === name);
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `view-${name}`;
    stopRefresh();
    void refresh();
    // fleet, wills and cluster are live; the others change only when someone acts
    if (name === 'fleet' || name === 'wills' || name === 'cluster') timer = setInterval(refresh, REFRESH_MS);
  }
  async function refresh() {
    const name = current;
    try {
      await views[name]();
    } catch (err) {
      if (!(err instanceof Unauthorized)) toast(err.message, 'bad');
    }
  }
  window.addEventListener('hashchange', () => {
    if (sessionStorage.getItem(TOKEN_KEY)) show(location.hash.slice(1));
  });

  // ---------- cursor paging (the API hands out the cursor of the next page; earlier ones are kept) ----------
  function pager(name, state) {
    $(`${name}-next`).addEventListener('click', () => {
      if (!state.next) return;
      state.cursors[state.page + 1] = state.next;
      state.page++;
      void refresh();
    });
    $(`${name}-prev`).addEventListener('click', () => {
      if (state.page === 0) return;
      state.page--;
      void refresh();
    });
  }

  // ---------- fleet ----------
  const fleet = { prefix: '', state: '', cursors: [undefined], page: 0, next: null };
  $('fleet-filter').addEventListener('submit', (e) => {
    e.preventDefault();
    fleet.prefix = $('fleet-prefix').value;
    fleet.state = $('fleet-state').value;
    fleet.cursors = [undefined];
    fleet.page = 0;
    void refresh();
  });
  $('fleet-state').addEventListener('change', () => $('fleet-filter').requestSubmit());
  pager('fleet', fleet);

  function willCell(will) {
    if (!will) return td(null);
    const parts = [badge(`will ${will.state}`, `will-${will.state}`)];
    if (will.node && will.state !== 'attached') parts.push(el('span', { class: 'muted small', text: ` ${will.state === 'pending' ? 'held by' : 'by'} ${will.node}` }));
    if (will.state === 'pending' && will.dueAt) parts.push(el('span', { class: 'muted small', text: ` · due ${ago(will.dueAt)}` }));
    if (will.state === 'denied' && will.rule) parts.push(el('div', { class: 'rule small', text: will.rule }));
    return el('td', { class: 'will' }, ...parts);
  }

  async function loadFleet() {
    const started = performance.now();
    const page = await api(`/admin/fleet${q({ prefix: fleet.prefix, state: fleet.state, after: fleet.cursors[fleet.page], limit: 50 })}`);
    const ms = Math.round(performance.now() - started);
    const tbody = $('fleet-table').tBodies[0];
    if (page.clients.length === 0) emptyRow(tbody, 9, 'No clients match.');
    else {
      tbody.replaceChildren(
        ...page.clients.map((c) => {
          const since = c.state === 'connected' ? c.connectedSince : c.disconnectedSince;
          return el(
            'tr',
            { 'data-client-id': c.clientId, 'data-state': c.state, 'data-will': c.will ? c.will.state : '', class: 'clickable', onclick: () => openWill(c.clientId) },
            el('td', { class: 'mono' }, c.clientId),
            el('td', null, badge(c.state)),
            td(c.node),
            el('td', null, c.username || el('span', { class: 'muted', text: '—' }), c.owner ? el('div', { class: 'muted small mono', title: 'owner of the session and its will', text: c.owner }) : null),
            td(c.roles.length ? c.roles.join(', ') : null),
            since ? el('td', { title: since }, `${c.state === 'connected' ? 'up' : 'down'} ${ago(since)}`) : td(null),
            td(c.subscriptions, 'num'),
            td(c.queued, 'num'),
            willCell(c.will),
          );
        }),
      );
    }
    fleet.next = page.next;
    $('fleet-prev').disabled = fleet.page === 0;
    $('fleet-next').disabled = !page.next;
    $('fleet-status').textContent = `page ${fleet.page + 1} · ${page.clients.length} shown · ${page.scanned} scanned · ${ms} ms`;
  }

  // ---------- will explain drawer ----------
  function kv(dl, rows) {
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', null, v === null || v === undefined || v === '' ? el('span', { class: 'muted', text: '—' }) : v instanceof Node ? v : String(v))]));
    return dl;
  }
  async function openWill(clientId) {
    const drawer = $('drawer');
    $('drawer-title').textContent = clientId;
    const body = $('drawer-body');
    body.replaceChildren(el('p', { class: 'muted', text: 'Loading…' }));
    drawer.hidden = false;
    let detail;
    try {
      detail = await api(`/admin/wills/${enc(clientId)}`);
    } catch (err) {
      body.replaceChildren(el('p', { class: 'muted', text: err.message === 'no will stored or decided for this client' ? 'No will stored or decided for this client.' : err.message }));
      return;
    }
    const parts = [];
    const x = detail.explain;
    if (x) {
      parts.push(el('h3', null, 'Stored will ', badge(x.state === 'pending' ? 'will pending' : 'will attached', x.state === 'pending' ? 'will-pending' : 'will-attached')));
      parts.push(kv(el('dl', { class: 'kv' }), [
        ['Topic', el('span', { class: 'mono', text: x.will.topic })],
        ['QoS / retain', `${x.will.qos} / ${x.will.retain ? 'yes' : 'no'}`],
        ['Delay', `${x.will.delayS} s`],
        ['Payload', `${x.will.payloadBytes} bytes`],
        ['Due', x.pending ? `${x.pending.dueAt} (${ago(x.pending.dueAt)})` : null],
        ['Owner / lease', `${x.owner.node} · ${x.owner.lease}`],
        ['If it fired now', el('span', null, badge(x.decisionIfFiredNow.allowed ? 'allowed' : 'denied', x.decisionIfFiredNow.allowed ? 'will-fired' : 'will-denied'), ' ', x.decisionIfFiredNow.explanation)],
      ]));
      parts.push(el('h3', { text: 'Identity snapshot' }));
      parts.push(identityKv(x.authorization));
    }
    const d = detail.lastDecision;
    if (d) {
      parts.push(el('h3', null, 'Last decision ', badge(`will ${d.outcome}`, `will-${d.outcome}`)));
      parts.push(kv(el('dl', { class: 'kv', 'data-decision': d.outcome }), [
        ['When', `${d.at} (${ago(d.at)})`],
        ['Decided by', `${d.node} · lease ${d.lease}`],
        ['Rule', el('span', { class: 'rule', text: d.rule })],
        ['Reason', d.reason],
        ['Why', d.explanation],
        ['Policy generation', d.policyGeneration],
        ['VIGIL_WILL_AUTHZ', d.willAuthz],
        ['Topic', el('span', { class: 'mono', text: d.will.topic })],
        ['QoS / retain / delay', `${d.will.qos} / ${d.will.retain ? 'yes' : 'no'} / ${d.will.delayS} s`],
        ['Epoch', d.epoch],
      ]));
      parts.push(el('h3', { text: 'Identity snapshot at the decision' }));
      parts.push(identityKv(d.identity));
    }
    body.replaceChildren(...parts);
  }
  function identityKv(a) {
    return kv(el('dl', { class: 'kv' }), [
      ['Username', a.username],
      ['Roles', a.roles && a.roles.length ? a.roles.join(', ') : null],
      ['Token id (jti)', a.jti],
      ['Key id (kid)', a.kid],
      ['Authenticated', a.authenticatedAt],
      ['Token expires', a.tokenExpiresAt ? `${a.tokenExpiresAt}${a.tokenExpired ? ' (expired — does not stop a will)' : ''}` : null],
    ]);
  }
  $('drawer-close').addEventListener('click', () => ($('drawer').hidden = true));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') $('drawer').hidden = true;
  });

  // ---------- wills ----------
  async function loadWills() {
    const { pending, decisions } = await api('/admin/wills?limit=100');
    const pt = $('pending-table').tBodies[0];
    if (pending.length === 0) emptyRow(pt, 3, 'No will is waiting for its delay.');
    else pt.replaceChildren(...pending.map((p) => el('tr', { class: 'clickable', 'data-client-id': p.clientId, onclick: () => openWill(p.clientId) }, el('td', { class: 'mono' }, p.clientId), timeCell(p.dueAt), td(p.node))));
    const dt = $('decisions-table').tBodies[0];
    if (decisions.length === 0) emptyRow(dt, 5, 'No will decided yet.');
    else {
      dt.replaceChildren(
        ...decisions.map((d) =>
          el('tr', { class: 'clickable', 'data-client-id': d.clientId, 'data-outcome': d.outcome, onclick: () => openWill(d.clientId) },
            timeCell(d.at),
            el('td', { class: 'mono' }, d.clientId),
            el('td', null, badge(`will ${d.outcome}`, `will-${d.outcome}`)),
            td(d.node),
            el('td', { class: `rule small ${d.outcome}` }, d.rule),
          ),
        ),
      );
    }
  }

  // ---------- retained ----------
  const retained = { prefix: '', cursors: [undefined], page: 0, next: null };
  $('retained-filter').addEventListener('submit', (e) => {
    e.preventDefault();
    retained.prefix = $('retained-prefix').value;
    retained.cursors = [undefined];
    retained.page = 0;
    void refresh();
  });
  pager('retained', retained);
  async function deleteRetained(topic) {
    if (!confirm(`Delete the retained message on "${topic}"?`)) return;
    try {
      await api(`/admin/retained/${enc(topic)}`, { method: 'DELETE' });
      toast(`Deleted the retained message on ${topic}`, 'ok');
    } catch (err) {
      if (!(err instanceof Unauthorized)) toast(err.message, 'bad');
    }
    void refresh();
  }
  async function loadRetained() {
    const page = await api(`/admin/retained${q({ prefix: retained.prefix, after: retained.cursors[retained.page], limit: 50 })}`);
    const tbody = $('retained-table').tBodies[0];
    if (page.messages.length === 0) emptyRow(tbody, 7, 'Nothing retained under this prefix.');
    else {
      tbody.replaceChildren(
        ...page.messages.map((m) =>
          el('tr', { 'data-topic': m.topic },
            el('td', { class: 'mono' }, m.topic),
            td(m.payloadBytes, 'num'),
            el('td', { class: 'payload' }, badge(m.preview.kind, 'kind'), ' ', el('span', { class: 'mono', text: m.preview.value + (m.preview.truncated ? ' …' : '') })),
            td(m.publisher ? el('span', { class: 'mono', text: m.publisher }) : null),
            td(m.publisherUsername),
            td(m.epoch, 'num'),
            el('td', null, el('button', { type: 'button', class: 'danger small', onclick: () => deleteRetained(m.topic) }, 'Delete')),
          ),
        ),
      );
    }
    retained.next = page.next;
    $('retained-prev').disabled = retained.page === 0;
    $('retained-next').disabled = !page.next;
    $('retained-status').textContent = `page ${retained.page + 1} · ${page.messages.length} shown`;
  }

  // ---------- identity ----------
  $('revoke-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const kind = $('revoke-kind').value;
    const value = $('revoke-value').value.trim();
    const ttl = $('revoke-ttl').value;
    if (!value) return;
    try {
      await api('/admin/revoke', { method: 'POST', body: { [kind]: value, ...(ttl ? { ttlS: Number(ttl) } : {}) } });
      $('revoke-value').value = '';
      $('revoke-ttl').value = '';
      toast(`Revoked ${kind} ${value}`, 'ok');
    } catch (err) {
      if (!(err instanceof Unauthorized)) toast(err.message, 'bad');
    }
    void refresh();
  });
  async function lift(kind, value) {
    try {
      await api(`/admin/revocations/${enc(kind)}/${enc(value)}`, { method: 'DELETE' });
      toast(`Lifted the revocation of ${kind} ${value}`, 'ok');
    } catch (err) {
      if (!(err instanceof Unauthorized)) toast(err.message, 'bad');
    }
    void refresh();
  }
  function errorNode(e) {
    return e ? el('span', { class: 'error', text: `${e.message} (${ago(e.at)})` }) : el('span', { class: 'ok-text', text: 'none' });
  }
  async function loadIdentity() {
    const [id, rev] = await Promise.all([api('/admin/identity'), api('/admin/revocations')]);
    kv($('acl-info'), [
      ['File', id.acl.file],
      ['Generation', id.acl.generation],
      ['Loaded', id.acl.loadedAt ? `${id.acl.loadedAt} (${ago(id.acl.loadedAt)})` : null],
      ['Roles', id.acl.roles.length ? id.acl.roles.join(', ') : null],
      ['Allow all', id.acl.allowAll ? 'yes (no policy: VIGIL_AUTH=none)' : 'no'],
      ['Last reload error', errorNode(id.acl.lastError)],
    ]);
    kv($('auth-info'), [
      ['Mode', id.mode],
      ['Algorithms', id.algorithms.length ? id.algorithms.join(', ') : null],
      ['JWKS', id.jwks.source ? `${id.keys.length} key(s)` : 'not configured'],
      ['Last JWKS error', errorNode(id.jwks.lastError)],
      ['Will authorization', id.willAuthz],
    ]);
    const kt = $('keys-table').tBodies[0];
    if (id.keys.length === 0) emptyRow(kt, 6, 'No JWKS keys loaded.');
    else kt.replaceChildren(...id.keys.map((k) => el('tr', null, td(k.kid, 'mono'), td(k.alg || k.kty), el('td', { class: 'mono small', title: k.thumbprint }, k.thumbprint.slice(0, 16) + '…'), el('td', null, badge(k.state, `key-${k.state}`)), timeCell(k.since), timeCell(k.verifiesUntil))));
    const rt = $('revocations-table').tBodies[0];
    if (rev.revocations.length === 0) emptyRow(rt, 6, 'Nothing is revoked.');
    else {
      rt.replaceChildren(
        ...rev.revocations.map((r) =>
          el('tr', { 'data-revocation': `${r.kind}:${r.value}` },
            td(r.kind),
            el('td', { class: 'mono' }, r.value),
            timeCell(new Date(r.revokedAtMs).toISOString()),
            r.untilMs ? timeCell(new Date(r.untilMs).toISOString()) : td('never'),
            td(r.note),
            el('td', null, el('button', { type: 'button', class: 'ghost small', onclick: () => lift(r.kind, r.value) }, 'Lift')),
          ),
        ),
      );
    }
  }

  // ---------- cluster ----------
  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    return n;
  }
  function chart(title, samples, series) {
    const W = 320;
    const H = 90;
    const pad = 4;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart', role: 'img' });
    const label = svg('title', {});
    label.textContent = title;
    root.append(label);
    root.append(svg('rect', { x: 0, y: 0, width: W, height: H, class: 'chart-bg' }));
    const max = Math.max(1, ...samples.flatMap((s) => series.map((x) => s[x.key])));
    const n = Math.max(2, samples.length);
    for (const s of series) {
      const pts = samples.map((p, i) => `${(pad + (i * (W - 2 * pad)) / (n - 1)).toFixed(1)},${(H - pad - ((H - 2 * pad) * p[s.key]) / max).toFixed(1)}`);
      if (pts.length > 0) root.append(svg('polyline', { points: pts.join(' '), class: `line ${s.cls}` }));
    }
    const last = samples[samples.length - 1] || {};
    return el('figure', { class: 'chart-box' },
      el('figcaption', null, el('strong', { text: title }), ' ', ...series.map((s) => el('span', { class: `legend ${s.cls}`, text: `${s.label} ${last[s.key] ?? 0}` })), el('span', { class: 'muted small', text: ` · max ${max}` })),
      root,
    );
  }
  async function loadCluster() {
    const c = await api('/admin/cluster');
    const mt = $('members-table').tBodies[0];
    mt.replaceChildren(
      ...c.members.map((m) =>
        el('tr', { 'data-member': m.member },
          el('td', null, m.node, m.self ? el('span', { class: 'muted small', text: ' (this node)' }) : null),
          el('td', { class: 'mono small' }, m.member),
          el('td', null, badge(m.live ? 'live' : 'lapsed', m.live ? 'connected' : 'down')),
          m.leaseExpiresAt ? timeCell(m.leaseExpiresAt) : td(c.mode === 'single' ? 'single node' : null),
        ),
      ),
    );
    const r = c.redis;
    kv($('redis-info'), r
      ? [
          ['Status', badge(r.status, r.status === 'ready' ? 'connected' : 'down')],
          ['PING', r.pingMs === null ? null : `${r.pingMs} ms`],
          ['Version', r.version],
          ['Memory used', r.usedMemory],
          ['Keys', r.keys],
          ['Error', r.error],
        ]
      : [['Mode', 'single node: in-memory state, no Redis']]);
    $('charts').replaceChildren(
      ...c.members.map((m) => {
        const samples = m.rates || [];
        return el('div', { class: 'chart-node' },
          el('h3', { text: m.node }),
          samples.length === 0 ? el('p', { class: 'muted', text: 'no samples (node gone, or just started)' }) : chart('Connections', samples, [{ key: 'connections', label: 'now', cls: 'c1' }]),
          samples.length === 0 ? null : chart('Messages / s', samples, [{ key: 'messagesInPerS', label: 'in', cls: 'c2' }, { key: 'messagesOutPerS', label: 'out', cls: 'c3' }]),
        );
      }),
    );
    const rt = $('reaps-table').tBodies[0];
    if (c.reaps.length === 0) emptyRow(rt, 7, c.mode === 'single' ? 'Single node: nothing to reap.' : 'No node has been reaped.');
    else rt.replaceChildren(...c.reaps.map((x) => el('tr', null, timeCell(x.at), el('td', { class: 'mono small' }, x.reaper), el('td', { class: 'mono small' }, x.member), td(x.clients, 'num'), td(x.fired, 'num'), td(x.scheduled, 'num'), td(x.adopted, 'num'))));
  }

  // ---------- start ----------
  if (sessionStorage.getItem(TOKEN_KEY)) void signIn(sessionStorage.getItem(TOKEN_KEY));
  else signOut('');
})();
