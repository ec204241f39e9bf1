// libdebugger's web UI: processes → loaded files → source with clickable lines → probes, and
// the live hit stream. Talks only to the agent that served it (see agent/src/ui/api.rs).

const TOKEN_KEY = 'libdebugger-token';
const params = new URLSearchParams(location.search);
if (params.has('token')) {
  sessionStorage.setItem(TOKEN_KEY, params.get('token'));
  // Keep the token out of the address bar and the history.
  history.replaceState(null, '', location.pathname);
}
const token = sessionStorage.getItem(TOKEN_KEY) || '';

/** Hits kept while paused; older ones are dropped (and counted). */
const PAUSE_BUFFER = 500;
/** Hits shown at most; older ones leave the list. */
const SHOWN_HITS = 200;

const state = {
  agent: null,        // last /api/state
  pid: null,          // chosen process
  files: [],          // its loaded files
  path: null,         // file shown
  source: null,       // {lines, code_lines}
  paused: false,
  buffer: [],
  dropped: 0,         // dropped while paused
  lagged: 0,          // missed by the stream (agent side)
  hidden: new Set(),  // breakpoint ids whose hits are not shown
  sourceCache: new Map(),
  seq: 0,             // hits received, numbering them
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function alertUser(message) {
  const a = $('alert');
  a.textContent = message || '';
  a.hidden = !message;
}

async function api(path, options = {}) {
  const headers = { 'X-Libdebugger-Token': token, ...(options.headers || {}) };
  if (options.body) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) {
    const err = new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

// ---- processes ---------------------------------------------------------------------------

function processLabel(p) {
  return `pid ${p.pid} · ${p.cmdline || p.exe}`;
}

function processMeta(p) {
  const py = p.python_version ? `Python ${p.python_version}${p.build ? `, ${p.build}` : ''}` : '';
  return [py, p.container ? 'in a container' : null, `helper: ${p.attach_state}`]
    .filter(Boolean).join(' · ');
}

function renderProcesses() {
  const list = $('processes');
  const refused = (p) => ['unsupported', 'ignored'].includes(p.attach_state);
  // The debuggable ones first, then those refused (with the reason).
  const procs = ((state.agent && state.agent.status.processes) || [])
    .slice().sort((a, b) => refused(a) - refused(b) || a.pid - b.pid);
  list.replaceChildren(...procs.map((p) => {
    if (refused(p)) {
      return el('li', { class: 'refused' }, processLabel(p),
        el('div', { class: 'meta' }, `${processMeta(p)} · ${p.reason || 'not debuggable'}`));
    }
    return el('li', {},
      el('button', {
        type: 'button', class: 'entry', 'aria-pressed': String(p.pid === state.pid),
        onclick: () => chooseProcess(p.pid),
      }, processLabel(p), el('div', { class: 'meta' },
        processMeta(p) + (p.reason ? ` · ${p.reason}` : ''))));
  }));
  if (!procs.length) list.append(el('li', { class: 'refused' }, 'No Python process found.'));
}

async function chooseProcess(pid) {
  state.pid = pid;
  state.files = [];
  state.path = null;
  renderProcesses();
  renderFiles();
  $('source').replaceChildren();
  $('files-note').textContent = 'Loading the files this process has loaded…';
  try {
    const r = await api(`/api/processes/${pid}/files`);
    if (state.pid !== pid) return;
    state.files = r.files || [];
    $('files-note').textContent = `${state.files.length} files with code loaded.`;
    $('file-search').disabled = false;
    renderFiles();
  } catch (e) {
    $('files-note').textContent = `Cannot list files: ${e.message}`;
  }
}

// ---- files -----------------------------------------------------------------------------------

function renderFiles() {
  const q = $('file-search').value.trim().toLowerCase();
  const shown = state.files.filter((f) => !q || f.toLowerCase().includes(q)).slice(0, 300);
  $('files').replaceChildren(...shown.map((f) => el('li', {},
    el('button', {
      type: 'button', class: 'entry', 'aria-pressed': String(f === state.path),
      onclick: () => openFile(f),
    }, f))));
}

async function openFile(path) {
  state.path = path;
  renderFiles();
  const pid = state.pid;
  try {
    const r = await api(`/api/processes/${pid}/source?path=${encodeURIComponent(path)}`);
    if (state.pid !== pid || state.path !== path) return;
    state.source = r;
    state.sourceCache.set(`${pid}:${path}`, r);
    renderSource();
  } catch (e) {
    $('source').replaceChildren(el('p', {}, `Cannot show ${path}: ${e.message}`));
  }
}

// ---- source ----------------------------------------------------------------------------------

/** Whether a breakpoint's file names `path` (equal, or a suffix at a path boundary). */
function fileMatches(bpFile, path) {
  const want = bpFile.replace(/^\.\//, '');
  return path === want || (path.endsWith(want) && (want.startsWith('/') || path.endsWith('/' + want)));
}

function breakpointsOnLine(line) {
  const bps = (state.agent && state.agent.status.breakpoints) || [];
  return bps.filter((b) => b.line === line && state.path && fileMatches(b.file, state.path));
}

function renderSource() {
  const { lines, code_lines: codeLines } = state.source;
  const code = new Set(codeLines || []);
  const rows = lines.map((html, i) => {
    const n = i + 1;
    const text = el('code', {});
    text.innerHTML = html; // escaped and highlighted by the agent (syntect)
    const gutter = code.has(n)
      ? el('button', { type: 'button', class: 'ln', 'aria-label': `Line ${n}`, onclick: () => openEditor(n) }, n)
      : el('span', { class: 'ln', 'aria-hidden': 'true' }, n);
    const row = el('div', { class: 'line', 'data-line': n }, gutter, text);
    markLine(row);
    return row;
  });
  $('source').replaceChildren(el('p', { class: 'meta' }, `${state.path} (pid ${state.pid}); lines with code are clickable`), ...rows);
}

/** Marks a source row with the probes on its line: ● a breakpoint, ◆ a logpoint. */
function markLine(row) {
  const probes = breakpointsOnLine(Number(row.dataset.line));
  row.classList.toggle('has-bp', probes.some((b) => b.kind !== 'logpoint'));
  row.classList.toggle('has-log', probes.some((b) => b.kind === 'logpoint'));
}

function markBreakpointLines() {
  for (const row of document.querySelectorAll('#source .line')) markLine(row);
}

let conditionTimer = null;

function openEditor(line) {
  document.querySelector('#source .editor')?.remove();
  const row = document.querySelector(`#source .line[data-line="${line}"]`);
  // Function probes (issue 14, not in the helper yet) will be offered here on a `def` line:
  // the agent lists them in /api/state's `kinds` with `on: "def"`, and this filter keeps them
  // to lines matching /^\s*(async\s+)?def\s/ (`row.querySelector('code').textContent`).
  const kinds = ((state.agent && state.agent.kinds) || []).filter((k) => k.on === 'code');
  const readOnly = state.agent && state.agent.read_only;
  const msg = el('span', { class: 'cond-msg', id: 'condition-message', role: 'status' });
  const cond = el('input', { type: 'text', name: 'condition', 'aria-label': 'Condition', 'aria-describedby': 'condition-message', placeholder: 'e.g. subtotal > 50 (optional)', autocomplete: 'off' });
  const message = el('input', { type: 'text', name: 'message', 'aria-label': 'Message', placeholder: 'e.g. subtotal={subtotal} items={len(cart.items)}', autocomplete: 'off' });
  const messageField = el('label', { class: 'field', hidden: true }, 'Message ', message,
    el('span', { class: 'why' }, ' {expr} parts are expressions of the condition language; {{ and }} are braces'));
  const add = el('button', { type: 'submit', disabled: readOnly }, 'Add breakpoint');
  const radios = kinds.map((k) => el('label', {},
    el('input', { type: 'radio', name: 'kind', value: k.kind, checked: k.kind === 'snapshot' }), ` ${k.label}`));
  const form = el('form', { class: 'editor', 'aria-label': `New probe on line ${line}` },
    el('fieldset', {}, el('legend', { class: 'meta' }, `Line ${line}: `), ...radios),
    messageField,
    el('label', { class: 'field' }, 'Condition ', cond), msg,
    add, ' ', el('button', { type: 'button', onclick: () => form.remove() }, 'Cancel'),
    readOnly ? el('span', { class: 'why' }, ' This UI is read-only.') : null);
  const kindChosen = () => form.querySelector('input[name=kind]:checked')?.value || 'snapshot';
  // The kind decides the fields and the button: a logpoint has a message.
  form.addEventListener('change', (ev) => {
    if (ev.target.name !== 'kind') return;
    const kind = kinds.find((k) => k.kind === ev.target.value);
    messageField.hidden = ev.target.value !== 'logpoint';
    add.textContent = `Add ${(kind ? kind.label : 'breakpoint').toLowerCase()}`;
    if (!messageField.hidden) message.focus();
  });
  cond.addEventListener('input', () => {
    clearTimeout(conditionTimer);
    conditionTimer = setTimeout(() => checkCondition(cond, msg, add), 120);
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (add.disabled) return;
    const kind = kindChosen();
    try {
      await api('/api/breakpoints', {
        method: 'POST',
        body: JSON.stringify({
          file: state.path, line, condition: cond.value.trim() || null, kind,
          message: kind === 'logpoint' ? message.value : undefined,
        }),
      });
      form.remove();
      alertUser('');
      await refresh();
    } catch (e) {
      msg.textContent = e.message;
      msg.className = 'cond-msg bad';
    }
  });
  row.after(form);
  cond.focus();
}

async function checkCondition(input, msg, add) {
  const expr = input.value;
  try {
    const r = await api(`/api/condition?expr=${encodeURIComponent(expr)}`);
    if (input.value !== expr) return; // a newer check is on its way
    const readOnly = state.agent && state.agent.read_only;
    if (r.ok) {
      msg.textContent = expr.trim() ? 'Condition OK' : '';
      msg.className = 'cond-msg good';
      input.setAttribute('aria-invalid', 'false');
      add.disabled = !!readOnly;
    } else {
      msg.textContent = r.error;
      msg.className = 'cond-msg bad';
      input.setAttribute('aria-invalid', 'true');
      add.disabled = true;
    }
  } catch (e) {
    msg.textContent = e.message;
  }
}

// ---- breakpoints and status ------------------------------------------------------------------

function statusText(b) {
  const s = b.status === 'throttled' ? 'rate-limited' : b.status;
  return b.error ? `${s}: ${b.error}` : s;
}

function renderBreakpoints() {
  const bps = (state.agent && state.agent.status.breakpoints) || [];
  const editable = new Set((state.agent && state.agent.editable) || []);
  const readOnly = state.agent && state.agent.read_only;
  if (!bps.length) {
    $('breakpoints').replaceChildren(el('p', { class: 'meta' }, 'No breakpoints. Pick a file and click a line.'));
    return;
  }
  const head = el('tr', {}, ...['', 'Breakpoint', 'Status', 'Hits', 'Captured', 'Rate-limited', 'Dropped', 'Entries', '']
    .map((h) => el('th', { scope: 'col' }, h)));
  const rows = bps.flatMap((b) => {
    const c = b.counters || {};
    const show = el('input', {
      type: 'checkbox', 'aria-label': `Show hits of ${b.id}`, checked: !state.hidden.has(b.id),
      onchange: (ev) => { if (ev.target.checked) state.hidden.delete(b.id); else state.hidden.add(b.id); },
    });
    const action = editable.has(b.id) && !readOnly
      ? el('button', { type: 'button', 'aria-label': `Remove ${b.kind === 'logpoint' ? 'logpoint' : 'breakpoint'} ${b.id}`, onclick: () => removeBreakpoint(b.id) }, 'Remove')
      : el('span', { class: 'why', title: 'set in the breakpoints file, a URL or PostHog: change it there' },
        readOnly ? '' : 'not editable here');
    const main = el('tr', { 'data-breakpoint': b.id },
      el('td', {}, show),
      el('td', {}, el('div', {}, b.id, b.kind === 'logpoint' ? el('span', { class: 'kind' }, ' logpoint') : null),
        el('div', { class: 'meta' }, `${b.file}:${b.line}${b.condition ? ` if ${b.condition}` : ''}`),
        b.message ? el('div', { class: 'meta template' }, `log: ${b.message}`) : null),
      el('td', { class: `st-${b.status}` }, statusText(b)),
      ...['hits', 'captured', 'rate_limited', 'dropped', 'entries'].map((k) => el('td', { class: 'num' }, c[k] ?? 0)),
      el('td', {}, action));
    const per = (b.processes || []).map((p) => el('tr', { class: 'meta' },
      el('td', {}), el('td', {}, `pid ${p.pid}`),
      el('td', { class: `st-${p.status}` }, p.reason ? `${p.status}: ${p.reason}` : p.status),
      ...['hits', 'captured', 'rate_limited', 'dropped'].map((k) => el('td', { class: 'num' }, (p.counters || {})[k] ?? 0)),
      el('td', {}), el('td', {})));
    return [main, ...per];
  });
  $('breakpoints').replaceChildren(el('table', { 'aria-label': 'Breakpoints' }, el('thead', {}, head), el('tbody', {}, rows)));
}

async function removeBreakpoint(id) {
  try {
    await api(`/api/breakpoints/${encodeURIComponent(id)}`, { method: 'DELETE' });
    await refresh();
  } catch (e) {
    alertUser(`Cannot remove ${id}: ${e.message}`);
  }
}

async function refresh() {
  try {
    state.agent = await api('/api/state');
    $('agent-mode').textContent = `${state.agent.status.mode} mode · eBPF ${state.agent.status.ebpf}`;
    $('read-only').hidden = !state.agent.read_only;
    renderProcesses();
    renderBreakpoints();
    markBreakpointLines();
  } catch (e) {
    alertUser(`Cannot reach the agent: ${e.message}`);
  }
}

// ---- hits --------------------------------------------------------------------------------------

function typeOf(v) {
  if (v === null) return 'None';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'string') return 'str';
  if (Array.isArray(v)) return 'list';
  return v['py/object'] || 'dict';
}

/** One tree node for `name = v`: leaves inline, containers as expandable <details>. */
function valueNode(name, v) {
  const label = [el('span', { class: 'name' }, name), ' ', el('span', { class: 'type' }, typeOf(v))];
  if (v === '[redacted]') {
    return el('li', {}, ...label, ' ', el('span', { class: 'redacted' }, '[redacted]'));
  }
  if (v === null || typeof v !== 'object') {
    const text = typeof v === 'string' ? JSON.stringify(v) : String(v);
    const cut = typeof v === 'string' && /…\[\d+ more chars\]$/.test(v);
    return el('li', {}, ...label, ' = ', el('span', { class: cut ? 'cut' : 'val' }, text),
      cut ? el('span', { class: 'cut' }, ' (cut)') : null);
  }
  if (v['py/cut'] && !('more' in v)) {
    return el('li', {}, ...label, ' ', el('span', { class: 'cut' }, `(not captured: ${v['py/cut']} limit)`));
  }
  if (v['py/cycle']) {
    return el('li', {}, ...label, ' ', el('span', { class: 'cut' }, '(cycle: shown above)'));
  }
  const entries = Array.isArray(v)
    ? v.map((x, i) => [String(i), x])
    : Object.entries(v).filter(([k]) => k !== 'py/object');
  const children = entries.map(([k, x]) => (x && typeof x === 'object' && x['py/cut'] && 'more' in x)
    ? el('li', {}, el('span', { class: 'cut' }, `… ${x.more} more (cut: ${x['py/cut']} limit)`))
    : valueNode(k, x));
  return el('li', {}, el('details', {}, el('summary', {}, ...label, el('span', { class: 'meta' }, ` (${entries.length})`)),
    el('ul', {}, children)));
}

async function sourceLine(pid, path, line) {
  const key = `${pid}:${path}`;
  if (!state.sourceCache.has(key)) {
    state.sourceCache.set(key, api(`/api/processes/${pid}/source?path=${encodeURIComponent(path)}`).catch(() => null));
  }
  const src = await state.sourceCache.get(key);
  if (!src) return null;
  const div = document.createElement('div');
  div.innerHTML = src.lines[line - 1] || '';
  return div.textContent.trim();
}

function hitTime(ev) {
  return ((ev.properties || {}).$timestamp || ev.timestamp || '').replace('T', ' ').replace(/\.\d+|Z$/g, '');
}

/** A logpoint's line: its rendered message (no locals, no stack). */
function logNode(ev) {
  const p = ev.properties || {};
  state.seq += 1;
  return el('li', { class: 'hit log', 'data-breakpoint': p.$breakpoint_id, 'data-seq': state.seq },
    el('div', { class: 'meta' }, `${hitTime(ev)} · ${p.$breakpoint_id} · thread ${p.$thread_name} (${p.$thread_id}) · pid ${p.$pid}`),
    el('div', { class: 'message' }, p.$message));
}

function hitNode(ev) {
  if (ev.event === '$data_logpoint_hit') return logNode(ev);
  const p = ev.properties || {};
  const time = hitTime(ev);
  // Each local is a JSON string of its jsonpickle encoding; each frame PostHog's
  // {file, function, line, "0", "1", "2"} (helper/src/posthog.rs).
  const decode = (v) => { if (typeof v !== 'string') return v; try { return JSON.parse(v); } catch { return v; } };
  const locals = p.$locals_variables || {};
  const tree = el('ul', { class: 'tree', 'aria-label': 'Locals' },
    Object.entries(locals).filter(([k]) => k !== 'py/cut').map(([k, v]) => valueNode(k, decode(v))));
  const frames = (p.$stack_trace || []).map((f) => (Array.isArray(f) ? f : [f.file, f.function, f.line]));
  const stack = el('ol', { class: 'stack' });
  const stackBox = el('details', {}, el('summary', {}, `Stack (${frames.length} frames)`), stack);
  stackBox.addEventListener('toggle', () => {
    if (!stackBox.open || stack.childElementCount) return;
    for (const [file, func, line] of frames) {
      const pre = el('pre', {});
      stack.append(el('li', {}, `${file}:${line} in ${func}`, pre));
      sourceLine(p.$pid, file, line).then((t) => { pre.textContent = t || ''; });
    }
  });
  const cuts = p.$truncated ? el('div', { class: 'cut' }, `cut: ${Object.entries(p.$truncated).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(', ')}`) : null;
  const redacted = (p.$redacted || []).length ? el('div', { class: 'redacted' }, `redacted: ${p.$redacted.join(', ')}`) : null;
  state.seq += 1;
  return el('li', { class: 'hit', 'data-breakpoint': p.$breakpoint_id, 'data-seq': state.seq },
    el('details', { open: true },
      el('summary', {}, `${time} · ${p.$breakpoint_id} · thread ${p.$thread_name} (${p.$thread_id}) · pid ${p.$pid}`),
      el('div', { class: 'meta' }, `${p.$file_path}:${p.$line_number}${p.$condition ? ` if ${p.$condition}` : ''} · hit #${p.$hit_count}`),
      tree, cuts, redacted, stackBox));
}

function showHit(ev) {
  const list = $('hits');
  list.prepend(hitNode(ev));
  while (list.childElementCount > SHOWN_HITS) list.lastElementChild.remove();
}

function renderCounts() {
  const parts = [];
  if (state.paused) parts.push(`paused: ${state.buffer.length} waiting`);
  if (state.dropped) parts.push(`${state.dropped} dropped while paused`);
  if (state.lagged) parts.push(`${state.lagged} missed (stream too slow)`);
  $('hit-counts').textContent = parts.join(' · ');
}

const HIT_EVENTS = ['$data_breakpoint_hit', '$data_logpoint_hit'];

function onEvent(ev) {
  if (!HIT_EVENTS.includes(ev.event)) return;
  const id = ev.properties && ev.properties.$breakpoint_id;
  if (state.hidden.has(id)) return;
  if (state.paused) {
    state.buffer.push(ev);
    if (state.buffer.length > PAUSE_BUFFER) {
      state.buffer.shift();
      state.dropped += 1;
    }
    renderCounts();
    return;
  }
  showHit(ev);
}

function togglePause() {
  state.paused = !state.paused;
  $('pause').textContent = state.paused ? 'Resume' : 'Pause';
  if (!state.paused) {
    for (const ev of state.buffer.splice(0)) showHit(ev);
  }
  renderCounts();
}

function connect() {
  const stream = new EventSource('/api/events');
  stream.addEventListener('event', (m) => { try { onEvent(JSON.parse(m.data)); } catch { /* ignore */ } });
  stream.addEventListener('lagged', (m) => { state.lagged += Number(m.data) || 0; renderCounts(); });
  stream.onerror = () => alertUser(stream.readyState === EventSource.CLOSED ? 'The hit stream closed; reload the page.' : '');
  stream.onopen = () => alertUser('');
}

$('pause').addEventListener('click', togglePause);
$('clear').addEventListener('click', () => { $('hits').replaceChildren(); state.dropped = 0; state.lagged = 0; renderCounts(); });
$('file-search').addEventListener('input', renderFiles);
connect();
refresh();
setInterval(refresh, 1000);
