// comfy-batch report: gallery and X/Y grid views of one run. Plain DOM, no
// framework. The page holds a few facts (run-data); the run's data is in
// data/<id>/: index.js (statuses and each indexed parameter as a column, one
// value per job) and NNNN.js (the rows of CHUNK jobs each), loaded through
// <script> elements as a view needs them. Filters, counts and the grid's
// cells read the columns; cards, cells and the viewer the rows of what is on
// screen; search reads every chunk, one after another, and says so. Memory
// stays flat however many jobs: a chunk's rows stay arrays as the file gives
// them, only a few chunks are kept (least recently used go), and a view that
// reads them all keeps positions (typed arrays) and the few rows it shows,
// never a chunk. Every value is set as text (textContent, attributes), never
// parsed as HTML. The view lives in the URL fragment, e.g.
// #view=grid&x=cfg&y=prompt&s.seed=*.
(function () {
  'use strict';
  var M = JSON.parse(document.getElementById('run-data').textContent);
  var MAX_LABEL = 80;
  var KEEP = 8; // chunks kept once read (8,000 rows), for a view that comes back to them
  var PARALLEL = 4; // chunk files loaded at once
  var MAX_GRID = 3000; // jobs a grid shows at most

  // ---- data ----------------------------------------------------------------
  var X = null; // index.js
  var dims = [], dimAt = {}, cols = [], statusCol = null, N = 0, CHUNK = 1000;
  // chunks: k → its rows as the file gives them (see jobOf), the KEEP most
  // recently used; lru: their numbers, least recently used first.
  var chunks = {}, lru = [], waiters = {}, pending = [], loading = 0, broken = null;
  var busy = 0; // loads and scans a view still waits for
  function script(src, ok, bad) {
    var s = document.createElement('script');
    s.src = M.data + src;
    s.onload = function () { s.remove(); ok(); };
    s.onerror = function () { s.remove(); bad(); };
    document.head.appendChild(s);
  }
  function decode(b64, width) {
    var bin = atob(b64), n = bin.length / width;
    var out = width === 2 ? new Uint16Array(n) : new Uint8Array(n);
    for (var i = 0; i < n; i++) {
      out[i] = width === 2 ? bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8) : bin.charCodeAt(i);
    }
    return out;
  }
  window.comfyBatchReport = {
    index: function (x) { X = x; },
    chunk: function (k, rows) { if (!chunks[k]) lru.push(k); chunks[k] = rows; }
  };
  // The job at position g from its row a (id, label, status, wide, queue_s,
  // run_s, files, error, text, attempts, finished, server, workflow, [batch
  // index, pack size, pack id]): made only for what is shown.
  function jobOf(g, a) {
    return {
      g: g, a: a, id: a[0], label: a[1], status: a[2], wide: a[3], queue_s: a[4], run_s: a[5],
      files: a[6].map(function (f) { return { rel: f[0], kind: f[1], thumb: f[2], present: !!f[3] }; }),
      error: a[7], text: a[8], attempts: a[9], finished: a[10], server: a[11], workflow: a[12],
      batch_index: a[13][0], pack_size: a[13][1], pack_id: a[13][2]
    };
  }
  // The data file name (index.js, NNNN.js) could not be read: named, as a
  // half-written or deleted file is not always a newer report.
  function gone(name) {
    broken = 'The data file ' + M.data + name + ' of this page could not be read (missing or damaged): the report was rewritten since, or its data folder damaged. Reload the page; if this stays, write the report again.';
    note();
  }
  function pump() {
    while (loading < PARALLEL && pending.length) {
      var k = pending.shift(), name = chunkFile(k);
      loading++;
      // Bound now: k and name are the next file's by the time one ends.
      script(name, done.bind(null, k), failed.bind(null, name));
    }
  }
  function failed(name) { loading--; gone(name); }
  function chunkFile(k) { return String(k).padStart(4, '0') + '.js'; }
  function done(k) {
    loading--;
    // A file that loads but holds no chunk k is cut short or not this report's.
    if (!chunks[k]) { gone(chunkFile(k)); return; }
    // k is the newest: its callers read it now, from what they are given.
    while (lru.length > KEEP) delete chunks[lru.shift()];
    var ws = waiters[k] || [];
    delete waiters[k];
    ws.forEach(function (w) { w(); });
    pump();
  }
  // Calls back once chunk k is loaded (at once when it is); what is urgent
  // (the screen) is loaded before what a scan of every chunk still waits on.
  function need(k, then, urgent) {
    if (chunks[k]) {
      lru.splice(lru.indexOf(k), 1);
      lru.push(k);
      then();
      return;
    }
    var ws = waiters[k];
    if (!ws) { ws = waiters[k] = []; pending.push(k); }
    ws.push(then);
    if (urgent) {
      var at = pending.indexOf(k);
      if (at > 0) { pending.splice(at, 1); pending.unshift(k); }
    }
    pump();
  }
  // Loads chunks ks (in order), calling each(k) as each arrives (chunks[k]
  // is there then, maybe not later) and end() after the last; a newer call
  // for the same purpose cancels the older.
  var runs = {};
  function cancel(purpose) {
    var before = runs[purpose];
    if (before && !before.over) { before.over = true; busy--; }
  }
  function scan(purpose, ks, each, end, urgent) {
    cancel(purpose);
    var run = { over: false };
    runs[purpose] = run;
    var left = ks.length;
    if (!left) { run.over = true; end(); ready(); return; }
    busy++;
    document.body.removeAttribute('data-ready');
    ks.forEach(function (k) {
      need(k, function () {
        if (run.over) return;
        each(k);
        if (run.over) return; // each ended it
        if (--left === 0) { run.over = true; busy--; end(); ready(); }
      }, urgent);
    });
  }
  // The rows of the jobs list[from..to), read from their chunks (urgently:
  // they are for the screen), then given to then as position → row. The
  // rows a purpose was last given are kept (a screen's worth): a scroll
  // over results spread across many chunks reads only the new ones.
  var lastRows = {};
  function rowsOf(purpose, list, from, to, then) {
    var ks = [], at = {}, got = {}, had = lastRows[purpose] || {};
    for (var i = from; i < to && i < list.length; i++) {
      var g = list[i], k = Math.floor(g / CHUNK);
      if (had[g]) { got[g] = had[g]; continue; }
      if (!at[k]) { at[k] = []; ks.push(k); }
      at[k].push(g);
    }
    scan(purpose, ks, function (k) {
      var c = chunks[k];
      at[k].forEach(function (g) { if (c[g - k * CHUNK]) got[g] = c[g - k * CHUNK]; });
    }, function () { lastRows[purpose] = got; then(got); }, true);
  }
  function statusOf(g) { return X.statuses[statusCol[g]] || ''; }
  // The value of parameter name for a job ('' when unset): from its
  // column, else from its row.
  function val(job, name) {
    var di = dimAt[name];
    if (di === undefined) return '';
    var c = cols[di];
    if (c) { var v = c[job.g]; return v ? dims[di].values[v - 1] : ''; }
    return job.wide[di] || '';
  }
  var progress = '';
  function note() {
    var n = document.getElementById('loading');
    n.textContent = broken || progress;
    n.hidden = !(broken || progress);
  }
  function ready() {
    // Not before the index is read: a resize while it loads paints nothing.
    if (X && !busy) document.body.setAttribute('data-ready', '1');
  }

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else e.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }
  function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + '…' : s; }
  function fileUrl(rel) { return '../' + rel.split('/').map(encodeURIComponent).join('/'); }
  function thumbUrl(t) { return 'thumbs/' + encodeURIComponent(t); }
  function shellQuote(s) { return /^[A-Za-z0-9_.\/:=@,+-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'"; }
  function isBad(status) { return status !== 'ok'; }

  // ---- state in the fragment -------------------------------------------
  function readState() {
    var st = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (part) {
      if (!part) return;
      var eq = part.indexOf('=');
      var k = eq < 0 ? part : part.slice(0, eq);
      var v = eq < 0 ? '' : part.slice(eq + 1);
      try { st[decodeURIComponent(k)] = decodeURIComponent(v.replace(/\+/g, ' ')); } catch (e) { /* a bad escape: ignore it */ }
    });
    return st;
  }
  function enc(s) { return encodeURIComponent(s).replace(/%2C/g, ',').replace(/%3A/g, ':'); }
  function writeState(st) {
    var parts = [];
    Object.keys(st).forEach(function (k) {
      if (st[k] === undefined || st[k] === null || st[k] === '') return;
      parts.push(enc(k) + '=' + enc(st[k]));
    });
    return '#' + parts.join('&');
  }
  var state = readState();
  function setState(patch, push) {
    var next = Object.assign({}, state, patch);
    Object.keys(patch).forEach(function (k) { if (patch[k] === undefined) delete next[k]; });
    state = next;
    var h = writeState(state);
    if (push) history.pushState(null, '', h); else history.replaceState(null, '', h);
    render();
    ready();
  }
  // A job named by the URL, not a step: see aim.
  window.addEventListener('hashchange', function () { aim = null; state = readState(); render(); });
  window.addEventListener('popstate', function () { aim = null; state = readState(); render(); });

  if (M.live) {
    var lt = document.getElementById('live-text');
    lt.textContent = 'Run in progress: ' + M.live.done + ' of ' + M.live.total + ' jobs ended' +
      (M.live.at ? ' (as of ' + M.live.at + ' UTC)' : '') + '.';
    var ar = document.getElementById('autoreload');
    ar.checked = state.reload === '1';
    ar.addEventListener('change', function () { setState({ reload: ar.checked ? '1' : undefined }); });
    setInterval(function () { if (state.reload === '1' && document.getElementById('viewer').hidden) location.reload(); }, 10000);
  }

  // ---- shared controls -----------------------------------------------------
  function select(label, options, current, onChange, attrs) {
    var s = el('select', attrs || {});
    options.forEach(function (o) {
      var opt = el('option', { value: o[0], text: o[1] });
      if (o[0] === current) opt.selected = true;
      s.appendChild(opt);
    });
    s.addEventListener('change', function () { onChange(s.value); });
    return el('label', null, label, s);
  }
  function valueOptions(name) {
    // Only indexed parameters are offered (see filterable).
    return dims[dimAt[name]].values.map(function (v) { return [v, clip(v, 60)]; });
  }
  function media(job, file, big) {
    if (file.kind === 'unsafe') return el('div', { class: 'ph bad', text: 'not shown: the path leaves the output folder or goes through a symbolic link' });
    if (!file.present) return el('div', { class: 'ph bad', text: 'missing file', title: file.rel });
    if (file.kind === 'image') {
      if (big) return el('img', { src: fileUrl(file.rel), alt: file.rel });
      if (file.thumb) return el('img', { src: thumbUrl(file.thumb), loading: 'lazy', decoding: 'async', alt: file.rel });
      return el('img', { src: fileUrl(file.rel), loading: 'lazy', alt: file.rel });
    }
    if (file.kind === 'video') {
      if (big) return el('video', { src: fileUrl(file.rel), controls: true, preload: 'metadata' });
      return el('div', { class: 'ph', text: '▶ video\n' + file.rel.split('/').pop() });
    }
    if (file.kind === 'audio') {
      if (big) return el('audio', { src: fileUrl(file.rel), controls: true, preload: 'metadata' });
      return el('div', { class: 'ph', text: '♪ audio\n' + file.rel.split('/').pop() });
    }
    if (file.kind === 'text') {
      if (big) return el('pre', { text: job.text || file.rel });
      return el('div', { class: 'ph text', text: clip(job.text || file.rel, 400) });
    }
    if (file.kind === 'unlinked') {
      // Saved by an older version under the server's extension (.html, .svg…): a link could open it as a page.
      return el('div', { class: 'ph', title: file.rel, text: 'not linked (could open as a page)\n' + file.rel.split('/').pop() });
    }
    if (big) return el('p', null, el('a', { href: fileUrl(file.rel), download: true, text: file.rel }));
    return el('div', { class: 'ph', text: 'file\n' + file.rel.split('/').pop() });
  }
  function preview(job) {
    // The media shown for a job in small places: its files, or its status.
    if (job.status !== 'ok') {
      return [el('div', { class: 'ph bad', title: job.error, text: job.status + (job.error ? ': ' + clip(job.error, 160) : '') })];
    }
    if (!job.files.length) {
      return [el('div', { class: job.text ? 'ph text' : 'ph', text: job.text ? clip(job.text, 400) : 'no outputs' })];
    }
    // Pictures first: a mixed workflow may log its audio or latents before its images.
    var rank = { image: 0, video: 1, text: 2, audio: 3, file: 4, unlinked: 5, unsafe: 5 };
    var files = job.files.map(function (f, i) { return [rank[f.kind] === undefined ? 4 : rank[f.kind], i, f]; });
    files.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    return files.slice(0, 4).map(function (r) { return media(job, r[2], false); });
  }

  // ---- gallery -------------------------------------------------------------
  // The jobs shown, as positions; cards are made only for the rows on screen.
  var galleryList = [];
  var CARD_W = 220, GAP = 12, LINE = 19;
  function columnTest() {
    // Filters the columns answer; the rest (search, unindexed
    // parameters) need the rows: they test a row a (see jobOf) of job g.
    var tests = [];
    if (state.status) {
      var si = X.statuses.indexOf(state.status);
      tests.push(function (g) { return statusCol[g] === si; });
    }
    var rowTests = [];
    Object.keys(state).forEach(function (k) {
      if (k.slice(0, 2) !== 'f.' || dimAt[k.slice(2)] === undefined) return;
      var di = dimAt[k.slice(2)], want = state[k];
      if (cols[di]) {
        var vi = dims[di].values.indexOf(want) + 1;
        tests.push(function (g) { return vi > 0 && cols[di][g] === vi; });
      } else {
        rowTests.push(function (a) { return (a[3][di] || '') === want; });
      }
    });
    var q = (state.q || '').toLowerCase();
    if (q) rowTests.push(searchTest(q));
    return { cols: tests, rows: rowTests };
  }
  // Search: q (lower case) in a job's prompts, label, id, error or text,
  // joined by spaces, or in one of its shown parameters.
  function searchTest(q) {
    function has(s) { return s.toLowerCase().indexOf(q) >= 0; }
    if (q.indexOf(' ') >= 0) {
      // Only a query with a space can span two of the joined fields.
      return function (a, g) {
        var j = { g: g, wide: a[3] };
        var hay = val(j, 'prompt') + ' ' + val(j, 'positive') + ' ' + val(j, 'negative') + ' ' + a[1] + ' ' + a[0] + ' ' + a[7] + ' ' + a[8];
        return has(hay) || shownDims.some(function (n) { return has(val(j, n)); });
      };
    }
    // Without one, each field alone: the joined prompts are parameters, so
    // shown; an indexed parameter's values are tested once, not per job.
    var hits = [], wide = [];
    shownDims.forEach(function (n) {
      var di = dimAt[n];
      if (!cols[di]) { wide.push(di); return; }
      var hit = new Uint8Array(dims[di].values.length + 1);
      var any = false;
      dims[di].values.forEach(function (v, i) { if (has(v)) { hit[i + 1] = 1; any = true; } });
      if (any) hits.push([cols[di], hit]);
    });
    return function (a, g) {
      for (var i = 0; i < hits.length; i++) if (hits[i][1][hits[i][0][g]]) return true;
      var w = a[3];
      for (i = 0; i < wide.length; i++) if (w[wide[i]] && has(w[wide[i]])) return true;
      return has(a[1]) || has(a[0]) || has(a[7]) || has(a[8]);
    };
  }
  function sortKey(key) {
    var num = function (s) { var f = parseFloat(s); return isNaN(f) ? null : f; };
    if (key === 'status') return { col: function (g) { return statusOf(g); } };
    if (dimAt[key] !== undefined && cols[dimAt[key]]) {
      var c = cols[dimAt[key]];
      return { col: function (g) { return c[g] ? c[g] : null; } }; // values are in display order
    }
    // Of a row a (see jobOf).
    var get = {
      run_s: function (a) { return num(a[5]); }, queue_s: function (a) { return num(a[4]); },
      job: function (a) { return a[1]; }, finished: function (a) { return a[10]; }
    }[key] || (dimAt[key] !== undefined ? function (a) { return a[3][dimAt[key]] || null; } : null);
    return get ? { row: get } : null;
  }
  // Positions list in the order of their keys (keys[i] is list[i]'s).
  function ordered(list, keys) {
    var idx = [];
    for (var i = 0; i < list.length; i++) idx.push(i);
    idx.sort(function (a, b) {
      var x = keys[a], y = keys[b];
      if (x === y) return list[a] - list[b];
      if (x === null || x === '') return 1;
      if (y === null || y === '') return -1;
      return x < y ? -1 : 1;
    });
    var out = new Int32Array(idx.length);
    idx.forEach(function (i, at) { out[at] = list[i]; });
    if (state.desc === '1') out.reverse();
    return out;
  }
  function galleryJobs(show) {
    var t = columnTest();
    var all = new Int32Array(N), n = 0;
    for (var g = 0; g < N; g++) {
      var ok = true;
      for (var i = 0; i < t.cols.length && ok; i++) ok = t.cols[i](g);
      if (ok) all[n++] = g;
    }
    var list = n === N ? all : all.slice(0, n);
    all = null;
    var sort = state.sort ? sortKey(state.sort) : null;
    if (!t.rows.length && !(sort && sort.row)) {
      if (sort) {
        var ks0 = [];
        for (i = 0; i < list.length; i++) ks0.push(sort.col(list[i]));
        list = ordered(list, ks0);
      }
      show(list, true);
      return;
    }
    // Read every chunk that holds a candidate, a few at a time, keeping the
    // positions that pass (and their sort keys), never the rows. The
    // candidates are in order: chunk k's are list[from[k]..to[k]).
    var ks = [], from = {}, to = {}, per = {}, keys = {}, seen = 0;
    for (i = 0; i < list.length; i++) {
      var k = Math.floor(list[i] / CHUNK);
      if (from[k] === undefined) { from[k] = i; ks.push(k); }
      to[k] = i + 1;
    }
    function collect() {
      var total = 0;
      ks.forEach(function (k) { if (per[k]) total += per[k].length; });
      var out = new Int32Array(total), ko = sort ? [] : null, at = 0;
      ks.forEach(function (k) {
        if (!per[k]) return;
        out.set(per[k], at);
        at += per[k].length;
        if (ko) keys[k].forEach(function (v) { ko.push(v); });
      });
      return sort ? ordered(out, ko) : out;
    }
    var last = 0;
    scan('gallery', ks, function (k) {
      var c = chunks[k], hit = [], kk = sort ? [] : null;
      for (var i = from[k]; i < to[k]; i++) {
        var g = list[i], a = c[g - k * CHUNK], ok = !!a;
        for (var f = 0; f < t.rows.length && ok; f++) ok = t.rows[f](a, g);
        if (!ok) continue;
        hit.push(g);
        if (kk) kk.push(sort.row ? sort.row(a) : sort.col(g));
      }
      per[k] = Int32Array.from(hit);
      if (kk) keys[k] = kk;
      seen++;
      progress = (state.q ? 'Searching' : 'Reading') + ' all jobs: ' + seen + ' of ' + ks.length + ' data files read…';
      note();
      var now = Date.now();
      if (now - last > 300) { last = now; show(collect(), false); }
    }, function () {
      progress = ''; note();
      show(collect(), true);
    });
  }
  // Images of one pack share its seed: the tooltip says which one this is.
  function packNote(job) {
    return job.pack_size ? ' · image ' + job.batch_index + ' of ' + job.pack_size + ' in pack ' + job.pack_id : '';
  }
  function card(job) {
    var files = preview(job);
    var m = el('div', { class: 'media n' + files.length });
    files.forEach(function (f) { m.appendChild(f); });
    var meta = el('div', { class: 'meta' },
      el('div', { class: 'line1' }, el('span', { class: 'label', title: job.id + packNote(job), text: job.label || job.id }),
        el('span', { class: 'badge ' + job.status, text: job.status })));
    varying.forEach(function (n) {
      var v = val(job, n);
      if (v === '') return;
      meta.appendChild(el('div', { class: 'kv', title: n + ' = ' + v }, n + ' ', el('b', { text: clip(v, 120) })));
    });
    if (varying.indexOf('seed') < 0 && val(job, 'seed') !== '') {
      meta.appendChild(el('div', { class: 'kv' }, 'seed ', el('b', { text: val(job, 'seed') })));
    }
    var t = [];
    if (job.queue_s) t.push('queued ' + job.queue_s + ' s');
    if (job.run_s) t.push('ran ' + job.run_s + ' s');
    if (t.length) meta.appendChild(el('div', { class: 'kv', text: t.join(' · ') }));
    var c = el('div', { class: 'card', tabindex: '0', 'data-job': job.id, 'data-status': job.status }, m, meta);
    c.addEventListener('click', function () { openViewer(job, galleryList); });
    c.addEventListener('keydown', function (e) { if (e.key === 'Enter') openViewer(job, galleryList); });
    return c;
  }
  // The rows of cards on screen, and two screens' worth around them.
  var painted = '';
  function paint(force) {
    var box = document.getElementById('gallery');
    var cards = document.getElementById('cards');
    if (!X || document.getElementById('gallery-view').hidden) return;
    var width = Math.max(CARD_W, box.clientWidth - 2 * 16);
    var per = Math.max(1, Math.floor((width + GAP) / (CARD_W + GAP)));
    var cardW = (width - (per - 1) * GAP) / per;
    var lines = 1 + varying.length + (varying.indexOf('seed') < 0 ? 1 : 0) + 1;
    var cardH = Math.ceil(cardW + lines * LINE + 18);
    var rows = Math.ceil(galleryList.length / per);
    box.style.height = (rows * (cardH + GAP) + 2 * 16) + 'px';
    var top = -box.getBoundingClientRect().top, h = window.innerHeight || 800;
    var first = Math.max(0, Math.floor((top - 2 * h) / (cardH + GAP)));
    var last = Math.min(rows, Math.ceil((top + 3 * h) / (cardH + GAP)));
    var from = first * per, to = Math.min(galleryList.length, last * per);
    var key = from + ':' + to + ':' + per + ':' + cardH;
    if (!force && key === painted) return;
    painted = key;
    cards.style.top = (16 + first * (cardH + GAP)) + 'px';
    cards.style.gridTemplateColumns = 'repeat(' + per + ', 1fr)';
    cards.style.gridAutoRows = cardH + 'px';
    var list = galleryList;
    rowsOf('paint', list, from, to, function (got) {
      if (list !== galleryList) return;
      var frag = document.createDocumentFragment();
      for (var i = from; i < to; i++) { var a = got[list[i]]; if (a) frag.appendChild(card(jobOf(list[i], a))); }
      cards.textContent = '';
      cards.appendChild(frag);
    });
  }
  var paintQueued = false;
  function paintSoon() {
    if (paintQueued) return;
    paintQueued = true;
    requestAnimationFrame(function () { paintQueued = false; paint(false); });
  }
  window.addEventListener('scroll', paintSoon, { passive: true });
  window.addEventListener('resize', paintSoon);
  function renderGallery() {
    var ctl = document.getElementById('gallery-controls');
    ctl.textContent = '';
    ctl.appendChild(select('status', [['', 'all']].concat(X.statuses.map(function (s) { return [s, s]; })), state.status || '',
      function (v) { setState({ status: v || undefined }); }, { id: 'f-status' }));
    filterable.forEach(function (n) {
      ctl.appendChild(select(n, [['', 'all']].concat(valueOptions(n)), state['f.' + n] || '', function (v) {
        var p = {}; p['f.' + n] = v || undefined; setState(p);
      }, { 'data-filter': n }));
    });
    var search = el('input', { type: 'search', id: 'q', placeholder: 'search prompts, ids, errors', value: state.q || '' });
    var timer = null;
    search.addEventListener('input', function () {
      clearTimeout(timer);
      timer = setTimeout(function () { setState({ q: search.value || undefined }); document.getElementById('q').focus(); }, 300);
    });
    ctl.appendChild(el('label', null, 'search', search));
    var sorts = [['', 'log order'], ['status', 'status'], ['job', 'job']].concat(
      shownDims.map(function (n) { return [n, n]; }), [['queue_s', 'queue time'], ['run_s', 'run time'], ['finished', 'finished at']]);
    ctl.appendChild(select('sort', sorts, state.sort || '', function (v) { setState({ sort: v || undefined }); }, { id: 'sort' }));
    var dir = el('button', { id: 'sort-dir', title: 'reverse the order', text: state.desc === '1' ? '↓ descending' : '↑ ascending' });
    dir.addEventListener('click', function () { setState({ desc: state.desc === '1' ? undefined : '1' }); });
    ctl.appendChild(dir);
    var shown = el('span', { class: 'shown', id: 'shown', text: '' });
    ctl.appendChild(shown);
    var empty = document.getElementById('gallery-empty');
    galleryJobs(function (list, final) {
      galleryList = list;
      shown.textContent = list.length + ' of ' + N + ' shown' + (final ? '' : ' so far');
      empty.hidden = !final || list.length > 0;
      empty.textContent = N ? 'No job matches these filters.' : 'No job has ended yet: runs.csv has no rows.';
      paint(true);
    });
  }

  // ---- grid ----------------------------------------------------------------
  function gridDefaults() {
    var g = (M.grids || [])[0];
    var out = {};
    if (g && filterable.indexOf(g.x) >= 0) {
      out.x = g.x; out.y = g.y || ''; out.page = g.page || '';
      Object.keys(g.where || {}).forEach(function (k) { out['s.' + k] = g.where[k]; });
      if (g.group) out['s.group'] = g.group;
      return out;
    }
    var ranked = filterable.slice().sort(function (a, b) {
      return dims[dimAt[b]].values.length - dims[dimAt[a]].values.length || dimAt[a] - dimAt[b];
    });
    out.x = ranked[0] || ''; out.y = ranked[1] || ''; out.page = '';
    return out;
  }
  function gridState() {
    var def = gridDefaults();
    var st = {
      x: state.x !== undefined ? state.x : def.x,
      y: state.y !== undefined ? state.y : def.y,
      page: state.page !== undefined ? state.page : def.page,
      size: Math.max(48, Math.min(640, parseInt(state.size, 10) || 160)),
      sel: {}
    };
    ['x', 'y', 'page'].forEach(function (k) { if (st[k] && filterable.indexOf(st[k]) < 0) st[k] = ''; });
    var selectable = filterable.filter(function (n) { return n !== st.x && n !== st.y && n !== st.page; });
    selectable.forEach(function (n) {
      var v = state['s.' + n];
      if (v === undefined && state.x === undefined) v = def['s.' + n];
      var values = dims[dimAt[n]].values;
      if (v === undefined || (v !== '*' && values.indexOf(v) < 0)) v = n === 'group' ? '*' : values[0];
      st.sel[n] = v;
    });
    st.selectable = selectable;
    return st;
  }
  function axisValues(name, list) {
    // The values the selected jobs have, in the dimension's order.
    if (!name) return [null];
    var di = dimAt[name], c = cols[di], have = {};
    list.forEach(function (g) { have[c[g]] = true; });
    var vs = dims[di].values.filter(function (v, i) { return have[i + 1]; });
    if (have[0]) vs.push('');
    return vs.length ? vs : [null];
  }
  function axisLabel(v) {
    if (v === '') return el('span', { class: 'clip', text: '(none)' });
    return el('span', { class: 'clip', title: v, text: clip(v, MAX_LABEL) });
  }
  var gridOrder = [];
  function renderGrid() {
    var st = gridState();
    var ctl = document.getElementById('grid-controls');
    ctl.textContent = '';
    var axisOpts = [['', '(none)']].concat(filterable.map(function (n) { return [n, n]; }));
    ctl.appendChild(select('X', axisOpts, st.x, function (v) { setState(fixAxes({ x: v })); }, { id: 'axis-x' }));
    ctl.appendChild(select('Y', axisOpts, st.y, function (v) { setState(fixAxes({ y: v })); }, { id: 'axis-y' }));
    ctl.appendChild(select('page', axisOpts, st.page, function (v) { setState(fixAxes({ page: v })); }, { id: 'axis-page' }));
    st.selectable.forEach(function (n) {
      ctl.appendChild(select(n, [['*', 'all']].concat(valueOptions(n)), st.sel[n], function (v) {
        var p = fixAxes({}); p['s.' + n] = v; setState(p);
      }, { 'data-selector': n }));
    });
    var size = el('input', { type: 'range', id: 'cell-size', min: '48', max: '640', step: '8', value: String(st.size) });
    size.addEventListener('change', function () { var p = fixAxes({}); p.size = size.value; setState(p); });
    size.addEventListener('input', function () { document.documentElement.style.setProperty('--cell', size.value + 'px'); });
    ctl.appendChild(el('label', null, 'cell size', size));
    document.documentElement.style.setProperty('--cell', st.size + 'px');

    function fixAxes(p) {
      // Pin the current axes and selectors into the fragment, so a change
      // to one keeps the others.
      var out = { x: st.x, y: st.y, page: st.page };
      Object.keys(st.sel).forEach(function (n) { out['s.' + n] = st.sel[n]; });
      return Object.assign(out, p);
    }

    // The selectors read the columns: a job without the parameter
    // (another group's) is not constrained by it.
    var tests = st.selectable.filter(function (n) { return st.sel[n] !== '*'; }).map(function (n) {
      var c = cols[dimAt[n]], vi = dims[dimAt[n]].values.indexOf(st.sel[n]) + 1;
      return function (g) { return c[g] === vi || c[g] === 0; };
    });
    var list = [];
    for (var g = 0; g < N; g++) {
      if (tests.every(function (t) { return t(g); })) list.push(g);
    }
    var box = document.getElementById('grid');
    box.textContent = '';
    gridOrder = [];
    var empty = document.getElementById('grid-empty');
    empty.hidden = N > 0 && list.length <= MAX_GRID;
    empty.textContent = N ? 'This grid holds ' + list.length + ' jobs: the first ' + MAX_GRID + ' are shown; pick values above to see the others.'
      : 'No job has ended yet: runs.csv has no rows.';
    if (!N) return;
    var all = list;
    if (list.length > MAX_GRID) list = list.slice(0, MAX_GRID);
    rowsOf('grid', list, 0, list.length, function (got) { table(st, all, list, box, got); });
  }
  // got: the rows of the jobs shown, by position (see rowsOf).
  function table(st, all, list, box, got) {
    var cells = {}, counts = {};
    var cx = st.x && cols[dimAt[st.x]], cy = st.y && cols[dimAt[st.y]], cp = st.page && cols[dimAt[st.page]];
    function keyOf(g) { return (cp ? cp[g] : '') + '|' + (cy ? cy[g] : '') + '|' + (cx ? cx[g] : ''); }
    list.forEach(function (g) { var key = keyOf(g); (cells[key] = cells[key] || []).push(g); });
    // A cell past the first MAX_GRID jobs was run all the same.
    if (all.length > list.length) all.forEach(function (g) { var key = keyOf(g); counts[key] = (counts[key] || 0) + 1; });
    function at(name, v) { return v === null ? '' : v === '' ? 0 : dims[dimAt[name]].values.indexOf(v) + 1; }
    var xs = axisValues(st.x, all), ys = axisValues(st.y, all), ps = axisValues(st.page, all);
    ps.forEach(function (pv) {
      var sec = el('section', { class: 'grid-page', 'data-page': pv === null ? null : pv });
      if (pv !== null) sec.appendChild(el('h2', { title: pv, text: st.page + ' = ' + clip(pv, 200) }));
      var tbl = el('table', { class: 'grid' });
      var head = el('tr', null, el('th', { class: 'corner', text: (st.y || '') + (st.y && st.x ? ' \\ ' : '') + (st.x || '') }));
      xs.forEach(function (xv) { head.appendChild(el('th', { scope: 'col' }, xv === null ? el('span', { text: '' }) : axisLabel(xv))); });
      tbl.appendChild(el('thead', null, head));
      var body = el('tbody');
      ys.forEach(function (yv) {
        var tr = el('tr', null, el('th', { class: 'ylab', scope: 'row' }, yv === null ? el('span', { text: '' }) : axisLabel(yv)));
        xs.forEach(function (xv) {
          var key = at(st.page, pv) + '|' + at(st.y, yv) + '|' + at(st.x, xv);
          var here = (cells[key] || []).filter(function (g) { return got[g]; }).map(function (g) { return jobOf(g, got[g]); });
          var hidden = here.length ? 0 : counts[key] || 0;
          var td = el('td', {
            class: 'cell' + (here.length ? '' : hidden ? ' notshown' : ' notrun') + (here.length > 1 ? ' multi' : ''),
            'data-x': xv === null ? '' : xv, 'data-y': yv === null ? '' : yv,
            'data-page': pv === null ? null : pv,
            'data-job': here.map(function (j) { return j.id; }).join(' ')
          });
          if (!here.length) td.textContent = hidden ? hidden + (hidden === 1 ? ' job' : ' jobs') + ' not shown' : 'not run';
          var stack = el('div', { class: 'stack' });
          here.forEach(function (j) {
            gridOrder.push(j.g);
            var item;
            if (isBad(j.status)) {
              item = el('div', { class: 'item failed', title: j.error, 'data-item': j.id },
                el('b', { text: j.status }), el('span', { text: clip(j.error || '', 140) }));
            } else {
              item = el('div', { class: 'item', title: j.label, 'data-item': j.id });
              preview(j).slice(0, 1).forEach(function (m) { item.appendChild(m); });
            }
            item.addEventListener('click', function () { openViewer(j, gridOrder); });
            stack.appendChild(item);
          });
          if (here.length) td.appendChild(stack);
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      tbl.appendChild(body);
      sec.appendChild(tbl);
      box.appendChild(sec);
    });
  }

  // ---- viewer --------------------------------------------------------------
  // The job the viewer shows: its position and row (its chunk may be gone).
  // aim: the position a step is moving to while its chunk loads, or null:
  // a second press steps on from there, and a later step or closing the
  // viewer makes the load move nothing.
  var viewerList = [], viewing = null, aim = null;
  function openViewer(job, list) {
    viewerList = list.slice();
    viewing = { g: job.g, a: job.a };
    aim = null;
    setState({ job: job.id }, true);
  }
  function closeViewer() { aim = null; setState({ job: undefined }); }
  function step(d) {
    var list = viewerList.length ? viewerList : (state.view === 'grid' ? gridOrder : galleryList);
    var from = aim !== null ? aim : viewing && viewing.a[0] === state.job ? viewing.g : -1;
    var i = from < 0 ? -1 : list.indexOf(from);
    if (i < 0 || !list.length) return;
    var g = list[(i + d + list.length) % list.length], k = Math.floor(g / CHUNK);
    aim = g;
    need(k, function () {
      if (aim !== g) return;
      aim = null;
      var a = chunks[k][g - k * CHUNK];
      if (!a) return;
      viewing = { g: g, a: a };
      setState({ job: a[0] });
    }, true);
  }
  // Job id's position and row in the chunks kept, or null.
  function kept(id) {
    for (var i = 0; i < lru.length; i++) {
      var k = lru[i], c = chunks[k];
      for (var r = 0; r < c.length; r++) if (c[r][0] === id) return { g: k * CHUNK + r, a: c[r] };
    }
    return null;
  }
  function copyText(text, button) {
    function done() { button.textContent = 'copied'; setTimeout(function () { button.textContent = 'copy'; }, 1500); }
    function fallback() {
      var ta = el('textarea', { style: 'position:fixed;left:-9999px' });
      ta.value = text;
      document.body.appendChild(ta);
      ta.select();
      try { document.execCommand('copy'); done(); } catch (e) { /* the line stays selectable */ }
      document.body.removeChild(ta);
    }
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
    else fallback();
  }
  function renderViewer() {
    var v = document.getElementById('viewer');
    if (!state.job) { cancel('viewer'); v.hidden = true; return; }
    if (!viewing || viewing.a[0] !== state.job) viewing = kept(state.job);
    if (!viewing) {
      // A job opened from the URL: read the other chunks until it is found.
      var want = state.job, ks = [];
      for (var k = 0; k * CHUNK < N; k++) if (!chunks[k]) ks.push(k);
      scan('viewer', ks, function (k) {
        var c = chunks[k];
        for (var r = 0; r < c.length; r++) {
          if (c[r][0] !== want) continue;
          viewing = { g: k * CHUNK + r, a: c[r] };
          cancel('viewer'); renderViewer(); ready();
          return;
        }
      }, function () { v.hidden = true; });
      return;
    }
    var job = jobOf(viewing.g, viewing.a);
    v.hidden = false;
    document.getElementById('viewer-title').textContent = (job.label || job.id) + ' · ' + job.status;
    var body = document.getElementById('viewer-body');
    body.textContent = '';
    var left = el('div', { class: 'viewer-media' });
    job.files.forEach(function (f) { left.appendChild(media(job, f, true)); });
    if (job.text && !job.files.some(function (f) { return f.kind === 'text'; })) left.appendChild(el('pre', { text: job.text }));
    if (!job.files.length && !job.text) left.appendChild(el('p', { class: 'note', text: job.status === 'ok' ? 'No outputs.' : 'No outputs: the job ended ' + job.status + '.' }));
    var info = el('div', { class: 'viewer-info' });
    var table = el('table');
    function line(k, vv) { if (vv !== '' && vv !== undefined && vv !== null) table.appendChild(el('tr', null, el('td', { text: k }), el('td', { text: String(vv) }))); }
    line('job id', job.id);
    line('job', job.label);
    line('status', job.status);
    shownDims.forEach(function (n) { line(n, val(job, n)); });
    line('batch index', job.batch_index);
    line('pack size', job.pack_size);
    line('pack id', job.pack_id);
    line('workflow', job.workflow);
    line('server', job.server);
    line('finished at', job.finished);
    line('queue s', job.queue_s);
    line('run s', job.run_s);
    if (job.attempts > 1) line('attempts', job.attempts);
    info.appendChild(table);
    if (job.error) info.appendChild(el('pre', { class: 'error', text: job.error }));
    var links = el('p', { class: 'links' }, el('a', { href: '../prompts/' + encodeURIComponent(job.pack_id || job.id) + '.json', text: 'prompt JSON' }));
    job.files.forEach(function (f) { if (f.kind !== 'unsafe' && f.kind !== 'unlinked') links.appendChild(el('a', { href: fileUrl(f.rel), download: f.kind === 'file', text: f.rel.split('/').pop() })); });
    info.appendChild(links);
    var cmd = M.rerun + ' --job ' + shellQuote(job.id);
    var btn = el('button', { id: 'copy-rerun', text: 'copy' });
    btn.addEventListener('click', function () { copyText(cmd, btn); });
    info.appendChild(el('div', { class: 'rerun' }, el('code', { id: 'rerun-line', text: cmd }), btn));
    body.appendChild(left);
    body.appendChild(info);
  }
  document.getElementById('viewer-close').addEventListener('click', closeViewer);
  document.getElementById('viewer-prev').addEventListener('click', function () { step(-1); });
  document.getElementById('viewer-next').addEventListener('click', function () { step(1); });
  document.getElementById('viewer').addEventListener('click', function (e) { if (e.target.id === 'viewer') closeViewer(); });
  document.addEventListener('keydown', function (e) {
    if (document.getElementById('viewer').hidden) return;
    if (e.key === 'Escape') { closeViewer(); e.preventDefault(); }
    else if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { step(1); e.preventDefault(); }
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { step(-1); e.preventDefault(); }
  });


  // ---- render --------------------------------------------------------------
  var lastView = null, lastKey = null;
  function render() {
    var view = state.view === 'grid' ? 'grid' : 'gallery';
    document.getElementById('gallery-view').hidden = view !== 'gallery';
    document.getElementById('grid-view').hidden = view !== 'grid';
    document.getElementById('tab-gallery').className = view === 'gallery' ? 'active' : '';
    document.getElementById('tab-grid').className = view === 'grid' ? 'active' : '';
    if (!X) return;
    // Opening or moving the viewer must not rebuild the page under it.
    var key = writeState(Object.assign({}, state, { job: undefined, reload: undefined }));
    if (view !== lastView || key !== lastKey) {
      if (view === 'grid') renderGrid(); else renderGallery();
      lastView = view; lastKey = key;
    }
    renderViewer();
  }
  // The parameters: all shown on cards and in the viewer; those that vary
  // and are indexed are filters and grid axes.
  var varying = [], shownDims = [], filterable = [];
  function start() {
    N = X.jobs; CHUNK = X.chunk; dims = X.dims;
    dims.forEach(function (d, i) {
      dimAt[d.name] = i;
      cols[i] = d.values ? decode(d.col, d.width) : null;
      var count = d.values ? d.values.length : d.count;
      if (count > 1) varying.push(d.name);
      if (count > 0) shownDims.push(d.name);
      if (d.values && count > 1) filterable.push(d.name);
    });
    statusCol = decode(X.status, X.width);
    var c = {};
    for (var g = 0; g < N; g++) c[statusCol[g]] = (c[statusCol[g]] || 0) + 1;
    var box = document.getElementById('counts');
    box.textContent = N + (N === 1 ? ' job' : ' jobs');
    X.statuses.map(function (s, i) { return [s, c[i] || 0]; }).sort().forEach(function (sc) {
      box.appendChild(document.createTextNode(' · '));
      box.appendChild(el('span', { class: 'n-' + sc[0], text: sc[1] + ' ' + sc[0] }));
    });
    render();
    ready();
  }
  render();
  script('index.js', function () {
    if (X) start(); else gone('index.js');
  }, function () { gone('index.js'); });
})();
