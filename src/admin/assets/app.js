/*
 * app.js - the coda dashboard: one page, hash routes, the admin API of
 * /coda/api/ (docs/admin-api.md) polled while a view is open.
 *
 * Rules this file keeps:
 *  - data reaches the page as text only (textContent, createElement through
 *    el() below), never as markup: a task's arguments and errors are written
 *    by whoever added the task;
 *  - no inline script or style attribute and nothing from another origin, so
 *    the page runs under Content-Security-Policy: default-src 'self';
 *  - ids stay strings (Redis ids pass 2^53, beyond a JavaScript number);
 *  - every action is a POST with the CSRF token of GET api/session and the
 *    cookie (credentials: 'same-origin'), after a confirmation in the page's
 *    own dialog.
 */
(function () {
  'use strict';

  var API = 'api/';
  /* The filters of the task list: the states, and "scheduled" (queued or
   * failed with a run time to come). */
  var STATES = ['queued', 'scheduled', 'running', 'succeeded', 'failed', 'dead', 'cancelled'];
  var COUNT_NAMES = ['queued', 'scheduled', 'running', 'succeeded', 'failed', 'dead', 'cancelled'];
  var GRAPH_SECONDS = 120;

  var view = document.getElementById('view');
  var notice = document.getElementById('notice');
  var meta = document.getElementById('meta');
  var csrf = null;
  var route = null;         /* the open view: {name, params, update, period} */
  var routeSerial = 0;      /* answers for a view that was left are dropped */
  var updateTimer = null;
  var samples = [];         /* {t, processed, failed} per second, for the graph */
  var lastOverview = null;
  var overviewFailed = false;

  /* ---- elements, text only ------------------------------------------------ */

  /* el('a', {href: '#/', className: 'x', onclick: fn}, child, ...): children
   * are nodes or strings (made text nodes); null and undefined are skipped. */
  function el(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === null || v === undefined) return;
        if (k.slice(0, 2) === 'on') node.addEventListener(k.slice(2), v);
        else if (k === 'className' || k === 'href' || k === 'value' || k === 'disabled' ||
                 k === 'type' || k === 'title' || k === 'id' || k === 'max' || k === 'name' ||
                 k === 'placeholder' || k === 'selected') node[k] = v;
        else node.setAttribute(k, String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(node, c); });
    else node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }

  function replace(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    for (var i = 1; i < arguments.length; i++) append(node, arguments[i]);
  }

  /* ---- formatting ---------------------------------------------------------- */

  function pad(n) { return n < 10 ? '0' + n : String(n); }

  function when(ms) {
    if (!ms) return '—';
    var d = new Date(ms);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return '—';
    var s = Math.abs(ms) / 1000;
    if (s < 1) return Math.round(Math.abs(ms)) + ' ms';
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.round((s % 86400) / 3600) + ' h';
  }

  /* The server's clock, from the last overview and the time since. */
  function serverNow() {
    return lastOverview ? lastOverview.now + (Date.now() - lastOverview.seenAt) : Date.now();
  }

  /* "3 s ago" / "in 2 min". */
  function relative(ms) {
    if (!ms) return '';
    var d = ms - serverNow();
    return d >= 0 ? 'in ' + duration(d) : duration(-d) + ' ago';
  }

  function whenWithRelative(ms) {
    if (!ms) return '—';
    return el('span', {title: relative(ms)}, when(ms), ' ', el('span', {className: 'muted'}, '(' + relative(ms) + ')'));
  }

  function num(n) { return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'); }

  function badge(state) { return el('span', {className: 'badge ' + state, 'data-state': state}, state); }

  function query(params) {
    var parts = [];
    Object.keys(params).forEach(function (k) {
      if (params[k] !== undefined && params[k] !== null && params[k] !== '')
        parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(params[k]));
    });
    return parts.length ? '?' + parts.join('&') : '';
  }

  /* ---- the API ------------------------------------------------------------- */

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function answer(res) {
    return res.text().then(function (text) {
      var body = null;
      try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
      if (!res.ok) {
        var msg = body && typeof body.error === 'string' ? body.error : res.status + ' ' + res.statusText;
        throw new ApiError(res.status, msg);
      }
      return body;
    });
  }

  function get(path) {
    return fetch(API + path, {credentials: 'same-origin', headers: {Accept: 'application/json'},
      cache: 'no-store'}).then(answer);
  }

  function session() {
    if (csrf) return Promise.resolve(csrf);
    return get('session').then(function (s) {
      csrf = s.csrf;
      showMeta(s);
      return csrf;
    });
  }

  /* A POST with the CSRF token; a 403 may mean the server restarted with a
   * new one, so the token is fetched again once. */
  function post(path, retried) {
    return session().then(function (token) {
      return fetch(API + path, {method: 'POST', credentials: 'same-origin',
        headers: {Accept: 'application/json', 'X-Coda-CSRF': token}}).then(answer);
    }).catch(function (e) {
      if (e instanceof ApiError && e.status === 403 && !retried) {
        csrf = null;
        return post(path, true);
      }
      throw e;
    });
  }

  /* ---- notices and the confirmation --------------------------------------- */

  var noticeTimer = null;
  function say(text, kind) {
    notice.hidden = false;
    notice.className = 'notice ' + (kind || '');
    notice.textContent = text;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { notice.hidden = true; }, kind === 'error' ? 10000 : 5000);
  }

  function failure(e) {
    if (e instanceof ApiError && e.status === 401)
      say('Not signed in: open the dashboard link printed at start (…/coda/?token=…), ' +
          'or send Authorization: Bearer.', 'error');
    else say(e && e.message ? e.message : String(e), 'error');
  }

  var dialog = document.getElementById('confirm');
  var dialogText = document.getElementById('confirm-text');
  var dialogYes = document.getElementById('confirm-yes');
  var dialogNo = document.getElementById('confirm-no');
  var dialogDone = null;

  function closeDialog(ok) {
    if (dialog.open) dialog.close();
    var done = dialogDone;
    dialogDone = null;
    if (done) done(ok);
  }
  dialogYes.addEventListener('click', function () { closeDialog(true); });
  dialogNo.addEventListener('click', function () { closeDialog(false); });
  dialog.addEventListener('cancel', function (ev) { ev.preventDefault(); closeDialog(false); });

  /* Resolves true when the operator confirms. A destructive action's
   * button is red, the others blue. */
  function confirmAction(text, label) {
    if (dialogDone) closeDialog(false);
    dialogText.textContent = text;
    dialogYes.textContent = label || 'Confirm';
    dialogYes.className = /^(Delete|Cancel)/.test(dialogYes.textContent) ? 'danger' : 'primary';
    return new Promise(function (resolve) {
      dialogDone = resolve;
      dialog.showModal();
      dialogNo.focus();
    });
  }

  /* Asks, then POSTs, then says what happened and refreshes the view. */
  function act(text, label, path, done) {
    return confirmAction(text, label).then(function (ok) {
      if (!ok) return null;
      return post(path).then(function (body) {
        say(done(body), 'ok');
        refresh();
        return body;
      });
    }).catch(failure);
  }

  /* ---- header: version, store, liveness ----------------------------------- */

  function showMeta(s) {
    var parts = [];
    if (s.version) parts.push('coda ' + s.version);
    if (s.store) parts.push(s.store);
    replace(meta, parts.join(' · '), ' ',
      el('span', {className: overviewFailed ? 'down' : 'live', id: 'live'}, overviewFailed ? '● offline' : '● live'));
  }

  /* ---- the overview poll (every second, whatever the view) ---------------- */

  function pollOverview() {
    get('overview').then(function (o) {
      overviewFailed = false;
      o.seenAt = Date.now();
      var prev = lastOverview;
      lastOverview = o;
      if (prev && o.now > prev.now) {
        var dt = (o.now - prev.now) / 1000;
        samples.push({t: o.now,
          processed: Math.max(0, (o.processed - prev.processed) / dt),
          failed: Math.max(0, (o.failed_total - prev.failed_total) / dt)});
        while (samples.length && samples[0].t < o.now - GRAPH_SECONDS * 1000) samples.shift();
      }
      showMeta(o);
      if (route && route.name === 'overview') route.update();
    }).catch(function (e) {
      overviewFailed = true;
      showMeta(lastOverview || {});
      if (e instanceof ApiError && e.status === 401) failure(e);
    });
  }

  /* ---- overview ----------------------------------------------------------- */

  function overviewView() {
    var cards = el('div', {className: 'cards', id: 'counts'});
    var canvas = el('canvas', {className: 'graph', id: 'graph', role: 'img',
      'aria-label': 'tasks processed and failed per second, last two minutes'});
    var legend = el('div', {className: 'legend'});
    var totals = el('div', {className: 'cards', id: 'totals'});
    replace(view, el('h1', null, 'Overview'), cards,
      el('h2', null, 'Processed and failed per second'),
      el('div', {className: 'panel'}, legend, canvas),
      el('h2', null, 'Totals'), totals);

    function card(label, value, href, cls) {
      var inner = [el('div', {className: 'label'}, label), el('div', {className: 'value', 'data-count': cls}, num(value))];
      return href ? el('a', {className: 'card ' + cls, href: href}, inner) : el('div', {className: 'card ' + cls}, inner);
    }

    return function update() {
      var o = lastOverview;
      if (!o) return;
      var c = o.counts || {};
      replace(cards, COUNT_NAMES.map(function (s) {
        return card(s, c[s], '#/tasks?state=' + s, s);
      }));
      replace(totals,
        card('processed', o.processed, null, 'processed'),
        card('failed attempts', o.failed_total, null, 'failed-total'),
        card('queues', o.queues, '#/queues', 'queues'),
        card('nodes', o.nodes, '#/nodes', 'nodes'),
        card('http requests', o.http ? o.http.requests : null, null, 'http'));
      var last = samples.length ? samples[samples.length - 1] : {processed: 0, failed: 0};
      replace(legend,
        el('span', null, el('span', {className: 'swatch processed'}), 'processed ' + last.processed.toFixed(1) + '/s'),
        el('span', null, el('span', {className: 'swatch failed'}), 'failed ' + last.failed.toFixed(1) + '/s'));
      drawGraph(canvas, o.now);
    };
  }

  /* A round upper bound for the y axis: 1, 2, 5, 10, 20, 50, ... */
  function niceMax(v) {
    var m = 1;
    while (m < v) m *= (String(m)[0] === '2' ? 2.5 : 2);
    return m;
  }

  function drawGraph(canvas, now) {
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    var css = getComputedStyle(document.documentElement);
    var colour = function (name) { return css.getPropertyValue(name).trim(); };
    canvas.setAttribute('data-samples', String(samples.length));
    var g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    var left = 44, right = 8, top = 8, bottom = 22;
    var pw = w - left - right, ph = h - top - bottom;
    var max = niceMax(samples.reduce(function (m, s) { return Math.max(m, s.processed, s.failed); }, 0));
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = colour('--muted');
    g.strokeStyle = colour('--line');
    g.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var y = top + ph - (ph * i) / 4;
      g.beginPath(); g.moveTo(left, Math.round(y) + 0.5); g.lineTo(left + pw, Math.round(y) + 0.5); g.stroke();
      var label = (max * i) / 4;
      g.textAlign = 'right'; g.textBaseline = 'middle';
      g.fillText(label % 1 ? label.toFixed(1) : String(label), left - 6, y);
    }
    g.textBaseline = 'top';
    for (var sec = GRAPH_SECONDS; sec >= 0; sec -= 30) {
      var x = left + pw - (pw * sec) / GRAPH_SECONDS;
      g.textAlign = sec === 0 ? 'right' : 'center';
      g.fillText(sec === 0 ? 'now' : '-' + sec + ' s', x, top + ph + 6);
    }
    function line(key, stroke) {
      g.strokeStyle = stroke; g.lineWidth = 2; g.lineJoin = 'round';
      g.beginPath();
      samples.forEach(function (s, j) {
        var px = left + pw - (pw * (now - s.t)) / (GRAPH_SECONDS * 1000);
        var py = top + ph - (ph * s[key]) / max;
        if (j === 0) g.moveTo(px, py); else g.lineTo(px, py);
      });
      g.stroke();
    }
    if (samples.length > 1) {
      line('processed', colour('--info'));
      line('failed', colour('--bad'));
    } else {
      g.textAlign = 'center'; g.textBaseline = 'middle';
      g.fillText('collecting…', left + pw / 2, top + ph / 2);
    }
  }

  /* ---- queues ------------------------------------------------------------- */

  function queuesView() {
    var body = el('div', {id: 'queues'});
    replace(view, el('h1', null, 'Queues'), body);
    return function update(serial) {
      return get('queues').then(function (r) {
        if (serial !== routeSerial) return;
        var qs = r.queues || [];
        if (!qs.length) return replace(body, el('p', {className: 'empty'}, 'No queues yet.'));
        replace(body, el('table', null,
          el('thead', null, el('tr', null, el('th', null, 'Queue'), el('th', null, 'State'),
            COUNT_NAMES.map(function (s) { return el('th', {className: 'num'}, s); }),
            el('th', {className: 'num', title: 'age of the oldest due task'}, 'latency'),
            el('th', {className: 'num'}, 'processed'), el('th', {className: 'num'}, 'failed attempts'),
            el('th', null, 'Actions'))),
          el('tbody', null, qs.map(queueRow))));
      });
    };
  }

  function queueRow(q) {
    var c = q.counts || {};
    var pause = q.paused
      ? el('button', {type: 'button', 'data-action': 'resume', onclick: function () {
        act('Resume queue "' + q.name + '"? Its tasks start running again.', 'Resume',
          'queues/' + encodeURIComponent(q.name) + '/resume', function () { return 'Queue ' + q.name + ' resumed.'; });
      }}, 'Resume')
      : el('button', {type: 'button', 'data-action': 'pause', onclick: function () {
        act('Pause queue "' + q.name + '"? No new task of it starts until it is resumed; running ones finish.',
          'Pause', 'queues/' + encodeURIComponent(q.name) + '/pause', function () { return 'Queue ' + q.name + ' paused.'; });
      }}, 'Pause');
    return el('tr', {'data-queue': q.name},
      el('td', null, el('a', {href: '#/tasks' + query({queue: q.name})}, q.name)),
      el('td', null, q.paused ? badge('paused') : el('span', {className: 'muted'}, 'active')),
      COUNT_NAMES.map(function (s) {
        return el('td', {className: 'num'}, c[s] ? el('a', {href: '#/tasks' + query({state: s, queue: q.name})}, num(c[s])) : '0');
      }),
      el('td', {className: 'num'}, q.latency_ms ? duration(q.latency_ms) : '—'),
      el('td', {className: 'num'}, num(q.processed)),
      el('td', {className: 'num'}, num(q.failed)),
      el('td', {className: 'toolbar'}, pause, bulkButtons('dead', q.name, c.dead)));
  }

  /* Retry all and delete all of a state (dead), in one queue or all. */
  function bulkButtons(state, queue, count) {
    var where = queue ? ' of queue "' + queue + '"' : '';
    var path = query({state: state, queue: queue});
    return [
      el('button', {type: 'button', 'data-action': 'retry-all', disabled: !count, onclick: function () {
        act('Retry all ' + state + ' tasks' + where + ' now?', 'Retry all', 'tasks/retry' + path,
          function (r) { return num(r.count) + ' tasks queued again.'; });
      }}, 'Retry all ' + state),
      el('button', {type: 'button', className: 'danger', 'data-action': 'delete-all', disabled: !count,
        onclick: function () {
          act('Delete all ' + state + ' tasks' + where + '? This cannot be undone.', 'Delete all',
            'tasks/delete' + path, function (r) { return num(r.count) + ' tasks deleted.'; });
        }}, 'Delete all ' + state)];
  }

  /* ---- tasks -------------------------------------------------------------- */

  function tasksView(params) {
    var state = params.state || '';
    var tabs = el('div', {className: 'tabs'},
      [''].concat(STATES).map(function (s) {
        var p = {state: s, queue: params.queue, name: params.name};
        return el('a', {href: '#/tasks' + query(p), className: s === state ? 'active' : '', 'data-tab': s || 'all'},
          s || 'all');
      }));
    var queueIn = el('input', {name: 'queue', value: params.queue || '', placeholder: 'any'});
    var nameIn = el('input', {name: 'name', value: params.name || '', placeholder: 'any'});
    var filters = el('form', {className: 'filters', onsubmit: function (ev) {
      ev.preventDefault();
      location.hash = '#/tasks' + query({state: state, queue: queueIn.value.trim(), name: nameIn.value.trim()});
    }}, el('label', null, 'Queue', queueIn), el('label', null, 'Task name', nameIn),
    el('button', {type: 'submit'}, 'Filter'),
    (params.queue || params.name) ? el('a', {href: '#/tasks' + query({state: state})}, 'clear') : null);
    var bulk = el('div', {className: 'toolbar'});
    var table = el('div', {id: 'tasks'});
    var pager = el('div', {className: 'toolbar'});
    replace(view, el('h1', null, 'Tasks'), tabs, filters, bulk, table, pager);

    return function update(serial) {
      var q = {state: state, queue: params.queue, name: params.name, after: params.after, limit: 50};
      return get('tasks' + query(q)).then(function (r) {
        if (serial !== routeSerial) return;
        var tasks = r.tasks || [];
        replace(bulk, ['dead', 'failed', 'cancelled'].indexOf(state) >= 0 && tasks.length
          ? [el('span', {className: 'spacer'}), bulkButtons(state, params.queue, tasks.length)] : null);
        replace(table, tasks.length ? el('table', null,
          el('thead', null, el('tr', null, ['id', 'name', 'queue', 'state', 'attempts', 'created',
            'run at', 'finished', 'error'].map(function (h) { return el('th', null, h); }))),
          el('tbody', null, tasks.map(taskRow))) : el('p', {className: 'empty'}, 'No tasks here.'));
        var back = params.after ? el('a', {href: '#/tasks' + query({state: state, queue: params.queue,
          name: params.name})}, '« first page') : null;
        var next = r.next_after ? el('a', {href: '#/tasks' + query({state: state, queue: params.queue,
          name: params.name, after: r.next_after}), 'data-page': 'next'}, 'next page »') : null;
        replace(pager, back, el('span', {className: 'spacer'}), next);
      });
    };
  }

  function taskRow(t) {
    return el('tr', {'data-id': t.id},
      el('td', {className: 'mono'}, el('a', {href: '#/tasks/' + t.id}, t.id)),
      el('td', null, t.name),
      el('td', null, t.queue),
      el('td', null, badge(t.state)),
      el('td', {className: 'num'}, t.attempts + ' / ' + t.max_attempts),
      el('td', null, when(t.created_at)),
      el('td', null, when(t.run_at)),
      el('td', null, when(t.finished_at)),
      el('td', {className: 'error', title: t.error || ''}, t.error || ''));
  }

  /* ---- one task ----------------------------------------------------------- */

  function taskView(params) {
    var id = params.id;
    var title = el('h1', null, 'Task ', el('span', {className: 'mono'}, id));
    var actions = el('div', {className: 'toolbar', id: 'task-actions'});
    var body = el('div', {id: 'task'});
    replace(view, el('p', null, el('a', {href: '#/tasks'}, '« tasks')), title, actions, body);

    return function update(serial) {
      return get('tasks/' + encodeURIComponent(id)).then(function (t) {
        if (serial !== routeSerial) return;
        replace(title, 'Task ', el('span', {className: 'mono'}, t.id), ' ', el('span', null, t.name),
          el('span', {id: 'task-state'}, badge(t.state)),
          t.cancel_requested ? el('span', {className: 'badge cancelled'}, 'cancel requested') : null);
        replace(actions, taskActions(t));
        replace(body, taskDetail(t));
      }, function (e) {
        if (serial !== routeSerial) return;
        if (e instanceof ApiError && e.status === 404) {
          replace(actions);
          replace(body, el('p', {className: 'empty'}, 'No task ' + id + ' (deleted, or never added).'));
          return;
        }
        throw e;
      });
    };
  }

  function taskActions(t) {
    var label = '"' + t.name + '" (task ' + t.id + ')';
    /* A queued task can be made due now only while it waits for its time. */
    var retryable = ['dead', 'failed', 'cancelled'].indexOf(t.state) >= 0 ||
      (t.state === 'queued' && t.run_at > serverNow());
    var cancellable = ['queued', 'failed', 'running'].indexOf(t.state) >= 0 && !t.cancel_requested;
    return [
      el('button', {type: 'button', className: 'primary', 'data-action': 'retry', disabled: !retryable,
        onclick: function () {
          act('Retry ' + label + ' now?', 'Retry', 'tasks/' + t.id + '/retry',
            function () { return 'Task ' + t.id + ' queued to run now.'; });
        }}, 'Retry now'),
      el('button', {type: 'button', 'data-action': 'cancel', disabled: !cancellable, onclick: function () {
        act('Cancel ' + label + '?' + (t.state === 'running'
          ? ' It is running: it is asked to stop, and a process task is killed after the grace period.'
          : ' It will never run.'), 'Cancel task', 'tasks/' + t.id + '/cancel',
        function () { return 'Task ' + t.id + ' cancelled.'; });
      }}, 'Cancel'),
      el('button', {type: 'button', className: 'danger', 'data-action': 'delete', disabled: t.state === 'running',
        onclick: function () {
          act('Delete ' + label + '? This cannot be undone.', 'Delete', 'tasks/' + t.id + '/delete',
            function () { return 'Task ' + t.id + ' deleted.'; }).then(function (r) {
            if (r) location.hash = '#/tasks' + query({state: t.state});
          });
        }}, 'Delete')];
  }

  function field(name, value) { return [el('dt', null, name), el('dd', null, value)]; }

  /* A result is often JSON: shown indented when it parses, as sent if not. */
  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }

  function taskDetail(t) {
    var progress = typeof t.progress === 'number'
      ? el('span', null, el('progress', {max: 1, value: t.progress}), ' ' + Math.round(t.progress * 100) + ' %')
      : '—';
    var summary = el('dl', {className: 'fields'},
      field('state', t.state), field('queue', el('a', {href: '#/tasks' + query({queue: t.queue})}, t.queue)),
      field('attempts', t.attempts + ' of ' + t.max_attempts),
      field('key', t.key || '—'),
      field('created', whenWithRelative(t.created_at)), field('run at', whenWithRelative(t.run_at)),
      field('started', whenWithRelative(t.started_at)), field('finished', whenWithRelative(t.finished_at)),
      field('progress', progress));
    var origin = el('dl', {className: 'fields', id: 'task-request'},
      field('request', t.request ? [el('span', {className: 'mono'}, t.request.id), ' ',
        t.request.origin || ''] : '—'),
      field('traceparent', t.traceparent ? el('span', {className: 'mono'}, t.traceparent) : '—'));
    var errors = t.errors && t.errors.length ? el('table', {id: 'task-errors'},
      el('thead', null, el('tr', null, el('th', {className: 'num'}, 'attempt'), el('th', null, 'at'),
        el('th', null, 'error'))),
      el('tbody', null, t.errors.map(function (e) {
        return el('tr', null, el('td', {className: 'num'}, e.attempt), el('td', null, when(e.at)),
          el('td', null, el('pre', {className: 'error-text'}, e.error)));
      }))) : el('p', {className: 'muted'}, 'No failed attempt.');
    return [
      el('div', {className: 'grid2'},
        el('div', null, el('h2', null, 'Summary'), el('div', {className: 'panel'}, summary)),
        el('div', null, el('h2', null, 'Added by'), el('div', {className: 'panel'}, origin))),
      t.error ? [el('h2', null, 'Last error'), el('pre', {id: 'task-error'}, t.error)] : null,
      el('h2', null, 'Arguments'),
      el('pre', {id: 'task-args'}, t.args === undefined ? '—' : JSON.stringify(t.args, null, 2)),
      el('h2', null, 'Result'),
      el('pre', {id: 'task-result'}, t.result === null || t.result === undefined ? '—' : pretty(t.result)),
      el('h2', null, 'Failed attempts'), errors];
  }

  /* ---- nodes and schedules ------------------------------------------------ */

  function nodesView() {
    var body = el('div', {id: 'nodes'});
    replace(view, el('h1', null, 'Nodes'), body);
    return function update(serial) {
      return get('nodes').then(function (r) {
        if (serial !== routeSerial) return;
        var ns = r.nodes || [];
        if (!ns.length) return replace(body, el('p', {className: 'empty'}, 'No node has reported.'));
        replace(body, el('table', null,
          el('thead', null, el('tr', null, ['node', 'role', 'queues', 'listen', 'running', 'processed',
            'started', 'last seen', 'version'].map(function (h) {
            return el('th', {className: h === 'running' || h === 'processed' ? 'num' : null}, h);
          }))),
          el('tbody', null, ns.map(function (n) {
            var queues = Array.isArray(n.queues) ? n.queues : String(n.queues || '').split(',').filter(Boolean);
            return el('tr', {'data-node': n.id},
              el('td', null, el('div', null, n.host + ' pid ' + n.pid), el('div', {className: 'muted mono'}, n.id)),
              el('td', null, n.role), el('td', null, queues.length ? queues.join(', ') : 'all'),
              el('td', {className: 'mono'}, n.listen || '—'), el('td', {className: 'num'}, num(n.running)),
              el('td', {className: 'num'}, num(n.processed)), el('td', null, whenWithRelative(n.started_at)),
              el('td', null, relative(n.last_seen) || '—'), el('td', null, n.version || '—'));
          }))));
      });
    };
  }

  function schedulesView() {
    var body = el('div', {id: 'schedules'});
    replace(view, el('h1', null, 'Schedules'), body);
    return function update(serial) {
      return get('schedules').then(function (r) {
        if (serial !== routeSerial) return;
        var ss = r.schedules || [];
        if (!ss.length) return replace(body, el('p', {className: 'empty'}, 'No periodic task.'));
        replace(body, el('table', null,
          el('thead', null, el('tr', null, ['task', 'every', 'next run', 'last run'].map(function (h) {
            return el('th', null, h);
          }))),
          el('tbody', null, ss.map(function (s) {
            return el('tr', {'data-schedule': s.task},
              el('td', null, el('a', {href: '#/tasks' + query({name: s.task})}, s.task)),
              el('td', {className: s.cron ? 'mono' : null}, s.cron ? 'cron ' + s.cron : duration(s.every_ms)),
              el('td', null, whenWithRelative(s.next_run)), el('td', null, whenWithRelative(s.last_run)));
          }))));
      });
    };
  }

  /* ---- routing ------------------------------------------------------------ */

  var VIEWS = {
    overview: {make: overviewView, period: 0},   /* drawn by the overview poll */
    queues: {make: queuesView, period: 2000},
    tasks: {make: tasksView, period: 3000},
    task: {make: taskView, period: 1000},
    nodes: {make: nodesView, period: 3000},
    schedules: {make: schedulesView, period: 3000},
  };

  /* A hand-typed address may hold a stray '%': kept as typed. */
  function decode(text) {
    try { return decodeURIComponent(text.replace(/\+/g, ' ')); } catch (e) { return text; }
  }

  /* "#/tasks/12?x=1" -> {name: 'task', params: {id: '12', x: '1'}} */
  function parseHash() {
    var h = location.hash.replace(/^#\/?/, '');
    var qi = h.indexOf('?');
    var path = qi >= 0 ? h.slice(0, qi) : h;
    var params = {};
    if (qi >= 0) {
      h.slice(qi + 1).split('&').forEach(function (kv) {
        if (!kv) return;
        var eq = kv.indexOf('=');
        params[decode(eq >= 0 ? kv.slice(0, eq) : kv)] = eq >= 0 ? decode(kv.slice(eq + 1)) : '';
      });
    }
    var parts = path.split('/').filter(Boolean);
    if (parts[0] === 'tasks' && parts[1]) {
      params.id = decode(parts[1]);
      return {name: 'task', params: params};
    }
    return {name: VIEWS[parts[0]] ? parts[0] : 'overview', params: params};
  }

  /* The poll in flight, if any: a new one waits for it to answer, so a slow
   * server (a long listing) is never sent a second request on top. */
  var pending = null;

  function refresh() {
    if (!route || !route.update) return;
    var serial = routeSerial;
    var p = route.update(serial);
    if (p && p.catch) p.catch(function (e) { if (serial === routeSerial) failure(e); });
    if (p && p.then) {
      var mine = p.then(null, function () {}).then(function () {
        if (pending === mine) pending = null;
      });
      pending = mine;
    }
  }

  function schedule() {
    clearTimeout(updateTimer);
    if (!route || !route.period) return;
    updateTimer = setTimeout(function tick() {
      /* Not while the operator is deciding: the rows would move under the click. */
      if (!dialog.open && !document.hidden && !pending) refresh();
      updateTimer = setTimeout(tick, route.period);
    }, route.period);
  }

  function open() {
    var r = parseHash();
    routeSerial++;
    var spec = VIEWS[r.name];
    route = {name: r.name, params: r.params, period: spec.period};
    route.update = spec.make(r.params);
    Array.prototype.forEach.call(document.querySelectorAll('#nav a'), function (a) {
      var v = a.getAttribute('data-view');
      a.className = v === r.name || (v === 'tasks' && r.name === 'task') ? 'active' : '';
    });
    document.title = 'coda · ' + (r.name === 'task' ? 'task ' + r.params.id : r.name);
    refresh();
    schedule();
  }

  document.getElementById('find').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var input = document.getElementById('find-id');
    var id = input.value.trim();
    if (!/^[0-9]+$/.test(id)) return say('A task id is a number.', 'error');
    input.value = '';
    location.hash = '#/tasks/' + id;
  });
  window.addEventListener('hashchange', open);
  window.addEventListener('resize', function () { if (route && route.name === 'overview') route.update(); });

  session().catch(failure);
  open();
  pollOverview();
  setInterval(pollOverview, 1000);
})();
