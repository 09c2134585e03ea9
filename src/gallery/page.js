// comfy-batch report: gallery and X/Y grid views of one run. Plain DOM, no
// framework. Data comes from the JSON element; every value from it is set as
// text (textContent, attributes), never parsed as HTML. The view lives in
// the URL fragment, e.g. #view=grid&x=cfg&y=prompt&page=sampler&s.seed=*.
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('run-data').textContent);
  var dims = D.dims;
  var dimAt = {};
  dims.forEach(function (d, i) { dimAt[d.name] = i; });
  var jobs = D.jobs.map(function (a, i) {
    return {
      i: i, id: a[0], label: a[1], status: a[2], vals: a[3], queue_s: a[4], run_s: a[5],
      files: a[6].map(function (f) { return { rel: f[0], kind: f[1], thumb: f[2], present: !!f[3] }; }),
      error: a[7], text: a[8], attempts: a[9], finished: a[10], server: a[11], workflow: a[12]
    };
  });
  var byId = {};
  jobs.forEach(function (j) { byId[j.id] = j; });
  var varying = dims.filter(function (d) { return d.values.length > 1; }).map(function (d) { return d.name; });
  var shownDims = dims.filter(function (d) { return d.values.length > 0; }).map(function (d) { return d.name; });
  var CHUNK = 240;
  var MAX_LABEL = 80;

  function val(job, name) {
    var di = dimAt[name];
    if (di === undefined) return '';
    var k = job.vals[di];
    return k < 0 ? '' : dims[di].values[k];
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
  }
  window.addEventListener('hashchange', function () { state = readState(); render(); });
  window.addEventListener('popstate', function () { state = readState(); render(); });

  // ---- header ------------------------------------------------------------
  (function counts() {
    var c = {};
    jobs.forEach(function (j) { c[j.status] = (c[j.status] || 0) + 1; });
    var box = document.getElementById('counts');
    box.textContent = jobs.length + (jobs.length === 1 ? ' job' : ' jobs');
    Object.keys(c).sort().forEach(function (s) {
      box.appendChild(document.createTextNode(' · '));
      box.appendChild(el('span', { class: 'n-' + s, text: c[s] + ' ' + s }));
    });
  })();
  if (D.live) {
    var lt = document.getElementById('live-text');
    lt.textContent = 'Run in progress: ' + D.live.done + ' of ' + D.live.total + ' jobs ended' +
      (D.live.at ? ' (as of ' + D.live.at + ' UTC)' : '') + '.';
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
  var galleryList = [];
  var galleryShown = 0;
  function galleryJobs() {
    var q = (state.q || '').toLowerCase();
    var list = jobs.filter(function (j) {
      if (state.status && j.status !== state.status) return false;
      for (var k in state) {
        if (k.slice(0, 2) === 'f.' && dimAt[k.slice(2)] !== undefined && val(j, k.slice(2)) !== state[k]) return false;
      }
      if (q) {
        var hay = (val(j, 'prompt') + ' ' + val(j, 'positive') + ' ' + val(j, 'negative') + ' ' + j.label + ' ' + j.id + ' ' + j.error + ' ' + j.text).toLowerCase();
        if (hay.indexOf(q) < 0) {
          var any = shownDims.some(function (n) { return val(j, n).toLowerCase().indexOf(q) >= 0; });
          if (!any) return false;
        }
      }
      return true;
    });
    var key = state.sort || '';
    if (key) {
      var num = function (s) { var f = parseFloat(s); return isNaN(f) ? null : f; };
      var get = {
        status: function (j) { return j.status; }, run_s: function (j) { return num(j.run_s); },
        queue_s: function (j) { return num(j.queue_s); }, job: function (j) { return j.label; },
        finished: function (j) { return j.finished; }
      }[key] || (dimAt[key] !== undefined ? function (j) {
        var k = j.vals[dimAt[key]]; return k < 0 ? null : k; // dimension values are in display order
      } : null);
      if (get) {
        list = list.slice().sort(function (a, b) {
          var x = get(a), y = get(b);
          if (x === y) return a.i - b.i;
          if (x === null || x === '') return 1;
          if (y === null || y === '') return -1;
          return x < y ? -1 : 1;
        });
        if (state.desc === '1') list.reverse();
      }
    }
    return list;
  }
  function card(job) {
    var files = preview(job);
    var m = el('div', { class: 'media n' + files.length });
    files.forEach(function (f) { m.appendChild(f); });
    var meta = el('div', { class: 'meta' },
      el('div', { class: 'line1' }, el('span', { class: 'label', title: job.id, text: job.label || job.id }),
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
    c.addEventListener('click', function () { openViewer(job.id, galleryList); });
    c.addEventListener('keydown', function (e) { if (e.key === 'Enter') openViewer(job.id, galleryList); });
    return c;
  }
  function moreCards() {
    var box = document.getElementById('gallery');
    var end = Math.min(galleryShown + CHUNK, galleryList.length);
    var frag = document.createDocumentFragment();
    for (var i = galleryShown; i < end; i++) frag.appendChild(card(galleryList[i]));
    box.appendChild(frag);
    galleryShown = end;
  }
  var moreObserver = 'IntersectionObserver' in window ? new IntersectionObserver(function (entries) {
    if (entries.some(function (e) { return e.isIntersecting; }) && galleryShown < galleryList.length) moreCards();
  }, { rootMargin: '800px' }) : null;
  function renderGallery() {
    var ctl = document.getElementById('gallery-controls');
    ctl.textContent = '';
    var statuses = [];
    jobs.forEach(function (j) { if (statuses.indexOf(j.status) < 0) statuses.push(j.status); });
    ctl.appendChild(select('status', [['', 'all']].concat(statuses.map(function (s) { return [s, s]; })), state.status || '',
      function (v) { setState({ status: v || undefined }); }, { id: 'f-status' }));
    varying.forEach(function (n) {
      ctl.appendChild(select(n, [['', 'all']].concat(valueOptions(n)), state['f.' + n] || '', function (v) {
        var p = {}; p['f.' + n] = v || undefined; setState(p);
      }, { 'data-filter': n }));
    });
    var search = el('input', { type: 'search', id: 'q', placeholder: 'search prompts, ids, errors', value: state.q || '' });
    var timer = null;
    search.addEventListener('input', function () {
      clearTimeout(timer);
      timer = setTimeout(function () { setState({ q: search.value || undefined }); document.getElementById('q').focus(); }, 200);
    });
    ctl.appendChild(el('label', null, 'search', search));
    var sorts = [['', 'log order'], ['status', 'status'], ['job', 'job']].concat(
      shownDims.map(function (n) { return [n, n]; }), [['queue_s', 'queue time'], ['run_s', 'run time'], ['finished', 'finished at']]);
    ctl.appendChild(select('sort', sorts, state.sort || '', function (v) { setState({ sort: v || undefined }); }, { id: 'sort' }));
    var dir = el('button', { id: 'sort-dir', title: 'reverse the order', text: state.desc === '1' ? '↓ descending' : '↑ ascending' });
    dir.addEventListener('click', function () { setState({ desc: state.desc === '1' ? undefined : '1' }); });
    ctl.appendChild(dir);
    galleryList = galleryJobs();
    ctl.appendChild(el('span', { class: 'shown', id: 'shown', text: galleryList.length + ' of ' + jobs.length + ' shown' }));
    var box = document.getElementById('gallery');
    box.textContent = '';
    galleryShown = 0;
    var empty = document.getElementById('gallery-empty');
    empty.hidden = galleryList.length > 0;
    empty.textContent = jobs.length ? 'No job matches these filters.' : 'No job has ended yet: runs.csv has no rows.';
    moreCards();
    if (moreObserver) { moreObserver.disconnect(); moreObserver.observe(document.getElementById('more')); }
  }

  // ---- grid ----------------------------------------------------------------
  function gridDefaults() {
    var g = (D.grids || [])[0];
    var out = {};
    if (g && dimAt[g.x] !== undefined) {
      out.x = g.x; out.y = g.y || ''; out.page = g.page || '';
      Object.keys(g.where || {}).forEach(function (k) { out['s.' + k] = g.where[k]; });
      if (g.group) out['s.group'] = g.group;
      return out;
    }
    var ranked = varying.slice().sort(function (a, b) {
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
    ['x', 'y', 'page'].forEach(function (k) { if (st[k] && dimAt[st[k]] === undefined) st[k] = ''; });
    var selectable = varying.filter(function (n) { return n !== st.x && n !== st.y && n !== st.page; });
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
    var have = {};
    list.forEach(function (j) { have[val(j, name)] = true; });
    var vs = dims[dimAt[name]].values.filter(function (v) { return have[v]; });
    if (have['']) vs.push('');
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
    var axisOpts = [['', '(none)']].concat(varying.map(function (n) { return [n, n]; }));
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

    var list = jobs.filter(function (j) {
      // A job without the parameter (another group's) is not constrained by it.
      return st.selectable.every(function (n) { var v = val(j, n); return st.sel[n] === '*' || v === st.sel[n] || v === ''; });
    });
    var box = document.getElementById('grid');
    box.textContent = '';
    gridOrder = [];
    var empty = document.getElementById('grid-empty');
    empty.hidden = jobs.length > 0;
    empty.textContent = 'No job has ended yet: runs.csv has no rows.';
    if (!jobs.length) return;
    var cells = {};
    list.forEach(function (j) {
      var key = JSON.stringify([st.page ? val(j, st.page) : null, st.y ? val(j, st.y) : null, st.x ? val(j, st.x) : null]);
      (cells[key] = cells[key] || []).push(j);
    });
    var xs = axisValues(st.x, list), ys = axisValues(st.y, list), ps = axisValues(st.page, list);
    ps.forEach(function (pv) {
      var sec = el('section', { class: 'grid-page', 'data-page': pv === null ? null : pv });
      if (pv !== null) sec.appendChild(el('h2', { title: pv, text: st.page + ' = ' + clip(pv, 200) }));
      var table = el('table', { class: 'grid' });
      var head = el('tr', null, el('th', { class: 'corner', text: (st.y || '') + (st.y && st.x ? ' \\ ' : '') + (st.x || '') }));
      xs.forEach(function (xv) { head.appendChild(el('th', { scope: 'col' }, xv === null ? el('span', { text: '' }) : axisLabel(xv))); });
      table.appendChild(el('thead', null, head));
      var body = el('tbody');
      ys.forEach(function (yv) {
        var tr = el('tr', null, el('th', { class: 'ylab', scope: 'row' }, yv === null ? el('span', { text: '' }) : axisLabel(yv)));
        xs.forEach(function (xv) {
          var here = cells[JSON.stringify([pv, yv, xv])] || [];
          var td = el('td', {
            class: 'cell' + (here.length ? '' : ' notrun') + (here.length > 1 ? ' multi' : ''),
            'data-x': xv === null ? '' : xv, 'data-y': yv === null ? '' : yv,
            'data-page': pv === null ? null : pv,
            'data-job': here.map(function (j) { return j.id; }).join(' ')
          });
          if (!here.length) td.textContent = 'not run';
          var stack = el('div', { class: 'stack' });
          here.forEach(function (j) {
            gridOrder.push(j);
            var item;
            if (isBad(j.status)) {
              item = el('div', { class: 'item failed', title: j.error, 'data-item': j.id },
                el('b', { text: j.status }), el('span', { text: clip(j.error || '', 140) }));
            } else {
              item = el('div', { class: 'item', title: j.label, 'data-item': j.id });
              preview(j).slice(0, 1).forEach(function (m) { item.appendChild(m); });
            }
            item.addEventListener('click', function () { openViewer(j.id, gridOrder); });
            stack.appendChild(item);
          });
          if (here.length) td.appendChild(stack);
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      table.appendChild(body);
      sec.appendChild(table);
      box.appendChild(sec);
    });
  }

  // ---- viewer --------------------------------------------------------------
  var viewerList = [];
  function openViewer(id, list) {
    viewerList = list.slice();
    setState({ job: id }, true);
  }
  function closeViewer() { setState({ job: undefined }); }
  function step(d) {
    var list = viewerList.length ? viewerList : (state.view === 'grid' ? gridOrder : galleryList);
    var i = list.findIndex(function (j) { return j.id === state.job; });
    if (i < 0 || !list.length) return;
    var next = list[(i + d + list.length) % list.length];
    setState({ job: next.id });
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
    var job = state.job && byId[state.job];
    if (!job) { v.hidden = true; return; }
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
    function row(k, vv) { if (vv !== '' && vv !== undefined && vv !== null) table.appendChild(el('tr', null, el('td', { text: k }), el('td', { text: String(vv) }))); }
    row('job id', job.id);
    row('job', job.label);
    row('status', job.status);
    shownDims.forEach(function (n) { row(n, val(job, n)); });
    row('workflow', job.workflow);
    row('server', job.server);
    row('finished at', job.finished);
    row('queue s', job.queue_s);
    row('run s', job.run_s);
    if (job.attempts > 1) row('attempts', job.attempts);
    info.appendChild(table);
    if (job.error) info.appendChild(el('pre', { class: 'error', text: job.error }));
    var links = el('p', { class: 'links' }, el('a', { href: '../prompts/' + encodeURIComponent(job.id) + '.json', text: 'prompt JSON' }));
    job.files.forEach(function (f) { if (f.kind !== 'unsafe' && f.kind !== 'unlinked') links.appendChild(el('a', { href: fileUrl(f.rel), download: f.kind === 'file', text: f.rel.split('/').pop() })); });
    info.appendChild(links);
    var cmd = D.rerun + ' --job ' + shellQuote(job.id);
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
    // Opening or moving the viewer must not rebuild the page under it.
    var key = writeState(Object.assign({}, state, { job: undefined, reload: undefined }));
    if (view !== lastView || key !== lastKey) {
      if (view === 'grid') renderGrid(); else renderGallery();
      lastView = view; lastKey = key;
    }
    renderViewer();
  }
  render();
  document.body.setAttribute('data-ready', '1');
})();
