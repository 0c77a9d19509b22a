/* status.c: the status page. GET / serves one small HTML page (no build
 * step, no external asset: its style and its script are in it) that reads
 * GET /status every 2 s and draws the pipeline as a line of stages and
 * queues with their depths and rates, the batches waiting and loaded, the
 * rejects by reason, readiness, and the throughput of the last minutes
 * (observe.h keeps the samples in memory). /status needs the bearer token
 * when there is one: the page then asks for it and keeps it in the tab's
 * sessionStorage.
 *
 * GET /status: {"time_ms", "uptime_s", "pipeline", "draining",
 *   "dependency_failures_max" (health: dependency_failures),
 *   "ready": {"ok", "reasons": [..]},
 *   "stages": [{"name", "kind", "input" (null for a source), "outputs": [..],
 *               "concurrency", "in_flight", "done", "retried", "buried",
 *               "dependency_failures", "last_failure"}]   (pipeline order),
 *   "queues": [{"name", "ready", "delayed", "reserved", "buried", "puts",
 *               "reserves", "acks", "oldest_ready_s", "paused",
 *               "working", "held"}],
 *     (ready, delayed, reserved, buried: the jobs by state on disk; the
 *     jobs the engine works are held in memory, not leased: they are ready
 *     on disk, and "working" counts those its slots work or commit now,
 *     "held" those and the ones read ahead for the slots; reserved counts
 *     leases of workers outside the engine, `qctl reserve`)
 *   "batches": [{"model", "open".."failed": {"batches", "rows"},
 *                "oldest_waiting_s"}],
 *   "rejects": {"total", "reasons": [{"model", "field", "rule", "count"}]},
 *   "map": {"used", "size", "limit", "file", "disk_free"},
 *   "history": {"every_s", "points": [[t_ms, done], ..]}} */
#include "observe.h"

#include "engine_int.h"
#include "json.h"
#include "pl.h"

#include <stdio.h>
#include <string.h>

static void jstr(Strbuf *b, const char *s)
{
    if (s)
        sb_add_json_string(b, s, strlen(s));
    else
        sb_adds(b, "null");
}

static void add_reason(void *arg, const char *reason)
{
    Strbuf *b = arg;
    if (b->len)
        sb_adds(b, ",");
    jstr(b, reason);
}

void status_answer(Engine *e, const Snapshot *s, Exchange *x)
{
    Strbuf b, r;
    sb_init(&b);
    sb_init(&r);
    size_t unready = observe_reasons(e, s, add_reason, &r);
    uint64_t now = pl_now_ms();
    sb_addf(&b, "{\"time_ms\":%llu,\"uptime_s\":%llu,\"pipeline\":", (unsigned long long)now,
            (unsigned long long)((now - e->started_ms) / 1000));
    jstr(&b, e->p->path);
    sb_addf(&b, ",\"draining\":%s,\"dependency_failures_max\":%u,\"ready\":{\"ok\":%s,"
                "\"reasons\":[", e->draining ? "true" : "false", e->p->health_dep_failures,
            unready ? "false" : "true");
    sb_add(&b, r.buf, r.len);
    sb_adds(&b, "]},\"stages\":[");
    for (size_t i = 0; i < e->nstages; i++) {
        const Stage *st = &e->stages[i];
        sb_adds(&b, i ? ",{\"name\":" : "{\"name\":");
        jstr(&b, st->conf->name);
        sb_adds(&b, ",\"kind\":");
        jstr(&b, st->conf->kind);
        sb_adds(&b, ",\"input\":");
        jstr(&b, st->conf->input);
        sb_adds(&b, ",\"outputs\":[");
        for (size_t k = 0; k < st->conf->noutputs; k++) {
            if (k)
                sb_adds(&b, ",");
            jstr(&b, st->conf->outputs[k]);
        }
        sb_addf(&b, "],\"concurrency\":%u,\"in_flight\":%u,\"done\":%llu,\"retried\":%llu,"
                    "\"buried\":%llu,\"dependency_failures\":%llu,\"last_failure\":",
                st->conf->input ? st->nslots : 0, st->in_flight, (unsigned long long)st->ctr.done,
                (unsigned long long)st->ctr.retried, (unsigned long long)st->ctr.buried,
                (unsigned long long)st->ctr.dep_failures);
        jstr(&b, st->dep_error[0] ? st->dep_error : NULL);
        sb_adds(&b, "}");
    }
    sb_adds(&b, "],\"queues\":[");
    for (size_t i = 0; i < s->nqueues; i++) {
        const QueueStats *q = &s->queues[i];
        uint64_t held, working;
        holds_count(e, q->name, &held, &working);
        sb_adds(&b, i ? ",{\"name\":" : "{\"name\":");
        jstr(&b, q->name);
        sb_addf(&b, ",\"ready\":%llu,\"delayed\":%llu,\"reserved\":%llu,\"buried\":%llu,"
                    "\"puts\":%llu,\"reserves\":%llu,\"acks\":%llu,\"oldest_ready_s\":%.3f,"
                    "\"paused\":%s,\"working\":%llu,\"held\":%llu}",
                (unsigned long long)q->ready, (unsigned long long)q->delayed,
                (unsigned long long)q->reserved, (unsigned long long)q->buried,
                (unsigned long long)q->puts, (unsigned long long)q->reserves,
                (unsigned long long)q->acks, (double)q->oldest_ready_ms / 1000.0,
                q->paused ? "true" : "false", (unsigned long long)working,
                (unsigned long long)held);
    }
    sb_adds(&b, "],\"batches\":[");
    for (size_t i = 0; i < s->nmodels; i++) {
        const ObsModel *m = &s->models[i];
        sb_adds(&b, i ? ",{\"model\":" : "{\"model\":");
        jstr(&b, m->name);
        for (int k = 0; k < OBSERVE_NBATCH; k++)
            sb_addf(&b, ",\"%s\":{\"batches\":%llu,\"rows\":%llu}", batch_state_name(k),
                    (unsigned long long)m->batches[k], (unsigned long long)m->rows[k]);
        sb_addf(&b, ",\"oldest_waiting_s\":%.3f}",
                m->waiting_ms && s->ms > m->waiting_ms ? (double)(s->ms - m->waiting_ms) / 1000.0 : 0);
    }
    sb_addf(&b, "],\"rejects\":{\"total\":%llu,\"reasons\":[", (unsigned long long)s->rejects);
    for (size_t i = 0; i < s->nreasons; i++) {
        const ObsReason *o = &s->reasons[i];
        sb_adds(&b, i ? ",{\"model\":" : "{\"model\":");
        jstr(&b, o->model);
        sb_adds(&b, ",\"field\":");
        jstr(&b, o->field);
        sb_adds(&b, ",\"rule\":");
        jstr(&b, o->rule);
        sb_addf(&b, ",\"count\":%llu}", (unsigned long long)o->n);
    }
    const StoreInfo *in = &s->info;
    uint64_t used = in->last_page > in->free_pages ? (uint64_t)(in->last_page - in->free_pages) * in->page_size : 0;
    sb_addf(&b, "]},\"map\":{\"used\":%llu,\"size\":%llu,\"limit\":%llu,\"file\":%llu,\"disk_free\":",
            (unsigned long long)used, (unsigned long long)in->map_size,
            (unsigned long long)in->map_max, (unsigned long long)in->file_size);
    if (s->disk_known)
        sb_addf(&b, "%llu}", (unsigned long long)s->disk_free);
    else
        sb_adds(&b, "null}");
    const ObsHistory *h = observe_history(e);
    sb_addf(&b, ",\"history\":{\"every_s\":%d,\"points\":[", OBSERVE_HISTORY_S);
    for (size_t i = 0; i < h->n; i++)
        sb_addf(&b, "%s[%llu,%llu]", i ? "," : "", (unsigned long long)h->t_ms[i],
                (unsigned long long)h->done[i]);
    /* and now, so that the last bar is current */
    uint64_t done = 0;
    for (size_t i = 0; i < e->nstages; i++)
        done += e->stages[i].ctr.done;
    sb_addf(&b, "%s[%llu,%llu]]}}\n", h->n ? "," : "", (unsigned long long)now, (unsigned long long)done);
    exchange_respond(x, 200, "application/json", b.buf, b.len);
    sb_free(&r);
    sb_free(&b);
}

/* ---------------------------------------------------------------- the page */

static const char page[] =
"<!doctype html>\n"
"<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
"<title>pickline</title>\n"
"<style>\n"
"body{font:14px/1.35 system-ui,sans-serif;margin:16px;color:#1d2733;background:#fff}\n"
"h1{font-size:18px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px}\n"
"#meta{color:#5b6673;margin-bottom:8px}\n"
"#ready{padding:6px 10px;margin:8px 0;border-left:6px solid #2e8540;background:#eef7f0}\n"
"#ready.bad{border-color:#c0392b;background:#fbeeed}\n"
"#line{display:flex;align-items:center;gap:6px;overflow-x:auto;padding:4px 0}\n"
".col{display:flex;flex-direction:column;gap:8px}\n"
".arrow{color:#8a96a3;font-size:20px}\n"
".stage{background:#d6eaf8;padding:8px 10px;min-width:130px}\n"
".queue{background:#fdebd0;padding:8px 10px;min-width:120px}\n"
".stage.failing{outline:3px solid #c0392b}\n"
".name{font-weight:600}.kind{color:#5b6673;font-size:12px}\n"
".num{font-variant-numeric:tabular-nums}\n"
"table{border-collapse:collapse}td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #e3e7eb}\n"
"td:first-child,th:first-child{text-align:left}\n"
"#chart{border:1px solid #e3e7eb}\n"
"#auth{display:none;margin:8px 0}\n"
"</style></head><body>\n"
"<h1>pickline</h1><div id=\"meta\">loading&hellip;</div>\n"
"<form id=\"auth\"><label>Bearer token: <input id=\"token\" type=\"password\" size=\"40\"></label>\n"
"<button>Show</button></form>\n"
"<div id=\"ready\"></div>\n"
"<h2>The line</h2><div id=\"line\"></div>\n"
"<h2>Throughput (jobs done per second, last minutes)</h2>\n"
"<svg id=\"chart\" width=\"720\" height=\"160\" role=\"img\" aria-label=\"throughput\"></svg>\n"
"<h2>Batches</h2><div id=\"batches\"></div>\n"
"<h2>Rejects by reason</h2><div id=\"rejects\"></div>\n"
"<script>\n"
"'use strict';\n"
"const $ = id => document.getElementById(id);\n"
"const esc = s => String(s).replace(/[&<>\"']/g, c => '&#' + c.charCodeAt(0) + ';');\n"
"let prev = null, timer = null;\n"
"function rate(now, then, key, dt) {\n"
"  if (!then || dt <= 0 || now[key] < then[key]) return '-';\n"
"  return ((now[key] - then[key]) / dt).toFixed(1);\n"
"}\n"
"function byName(list, name) { return list ? list.find(x => x.name === name) : null; }\n"
"/* The line: each stage in a column after the stages that feed its input,\n"
"   each queue in the column after the first stage that writes it. */\n"
"function columns(st) {\n"
"  const writers = {}, level = {};\n"
"  st.stages.forEach(s => s.outputs.forEach(q => (writers[q] = writers[q] || []).push(s.name)));\n"
"  const lv = (s, seen) => {\n"
"    if (level[s.name] !== undefined) return level[s.name];\n"
"    if (seen.has(s.name)) return 0;\n"
"    seen.add(s.name);\n"
"    let l = 0;\n"
"    (s.input && writers[s.input] || []).forEach(w => {\n"
"      l = Math.max(l, lv(byName(st.stages, w), seen) + 1); });\n"
"    return (level[s.name] = l);\n"
"  };\n"
"  st.stages.forEach(s => lv(s, new Set()));\n"
"  const cols = [];\n"
"  const put = (i, item) => (cols[i] = cols[i] || []).push(item);\n"
"  st.queues.forEach(q => {\n"
"    const w = writers[q.name];\n"
"    put(w ? 2 * Math.min(...w.map(n => level[n])) + 2 : 0, {queue: q});\n"
"  });\n"
"  st.stages.forEach(s => put(2 * level[s.name] + 1, {stage: s}));\n"
"  return cols.filter(c => c);\n"
"}\n"
"function stageBox(s, dt, st) {\n"
"  const p = prev && byName(prev.stages, s.name);\n"
"  const failing = s.dependency_failures >= st.dependency_failures_max;\n"
"  return '<div class=\"stage' + (failing ? ' failing' : '') + '\" data-stage=\"' + esc(s.name) + '\"' +\n"
"    (s.last_failure ? ' title=\"' + esc(s.last_failure) + '\"' : '') + '>' +\n"
"    '<div class=\"name\">' + esc(s.name) + '</div><div class=\"kind\">' + esc(s.kind) + '</div>' +\n"
"    '<div class=\"num\">' + (s.input ? s.in_flight + '/' + s.concurrency + ' in flight<br>' : '') +\n"
"    s.done + ' done, ' + rate(s, p, 'done', dt) + '/s<br>' + s.retried + ' retried, ' + s.buried +\n"
"    ' buried' + (s.dependency_failures ? '<br>' + s.dependency_failures + ' failures in a row' : '') +\n"
"    '</div></div>';\n"
"}\n"
"function queueBox(q, dt) {\n"
"  const p = prev && byName(prev.queues, q.name);\n"
"  return '<div class=\"queue\" data-queue=\"' + esc(q.name) + '\"><div class=\"name\">' + esc(q.name) +\n"
"    (q.paused ? ' (paused)' : '') + '</div><div class=\"num\">' + Math.max(0, q.ready - q.working) +\n"
"    ' ready, ' + q.working + ' working, ' + q.reserved + ' reserved<br>' + q.delayed +\n"
"    ' delayed, ' + q.buried + ' buried<br>in ' + rate(q, p, 'puts', dt) +\n"
"    '/s, out ' + rate(q, p, 'acks', dt) + '/s' + (q.ready ? '<br>oldest ' + q.oldest_ready_s.toFixed(1) +\n"
"    ' s' : '') + '</div></div>';\n"
"}\n"
"function table(head, rows) {\n"
"  if (!rows.length) return '<p>none</p>';\n"
"  return '<table><tr>' + head.map(h => '<th>' + esc(h) + '</th>').join('') + '</tr>' +\n"
"    rows.map(r => '<tr>' + r.map(c => '<td>' + esc(c) + '</td>').join('') + '</tr>').join('') +\n"
"    '</table>';\n"
"}\n"
"function chart(pts) {\n"
"  const svg = $('chart'), W = 720, H = 160, L = 40, B = 20;\n"
"  const rates = [];\n"
"  for (let i = 1; i < pts.length; i++) {\n"
"    const dt = (pts[i][0] - pts[i - 1][0]) / 1000;\n"
"    if (dt >= 1) rates.push([pts[i][0], Math.max(0, (pts[i][1] - pts[i - 1][1]) / dt)]);\n"
"  }\n"
"  const max = Math.max(1, ...rates.map(r => r[1]));\n"
"  const t1 = pts.length ? pts[pts.length - 1][0] : 0, t0 = t1 - 15 * 60 * 1000;\n"
"  const x = t => L + (W - L - 4) * (t - t0) / (t1 - t0 || 1), y = v => H - B - (H - B - 6) * v / max;\n"
"  let s = '<line x1=\"' + L + '\" y1=\"' + (H - B) + '\" x2=\"' + W + '\" y2=\"' + (H - B) +\n"
"    '\" stroke=\"#8a96a3\"/><text x=\"2\" y=\"12\" font-size=\"11\">' + max.toFixed(1) +\n"
"    '/s</text><text x=\"' + L + '\" y=\"' + (H - 4) + '\" font-size=\"11\">-15 min</text>' +\n"
"    '<text x=\"' + (W - 30) + '\" y=\"' + (H - 4) + '\" font-size=\"11\">now</text>';\n"
"  if (rates.length) s += '<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"' +\n"
"    rates.map(r => x(r[0]).toFixed(1) + ',' + y(r[1]).toFixed(1)).join(' ') + '\"/>';\n"
"  svg.innerHTML = s;\n"
"}\n"
"function draw(st) {\n"
"  const dt = prev ? (st.time_ms - prev.time_ms) / 1000 : 0;\n"
"  $('meta').textContent = st.pipeline + ' \\u00b7 up ' + st.uptime_s + ' s' +\n"
"    (st.draining ? ' \\u00b7 draining' : '') + ' \\u00b7 map ' + (st.map.used / 1048576).toFixed(1) +\n"
"    ' MiB used' + (st.map.disk_free !== null ? ', disk ' + (st.map.disk_free / 1048576).toFixed(0) +\n"
"    ' MiB free' : '');\n"
"  const r = $('ready');\n"
"  r.className = st.ready.ok ? '' : 'bad';\n"
"  r.innerHTML = st.ready.ok ? 'ready' : 'not ready: ' + st.ready.reasons.map(esc).join('; ');\n"
"  $('line').innerHTML = columns(st).map(c => '<div class=\"col\">' + c.map(it =>\n"
"    it.stage ? stageBox(it.stage, dt, st) : queueBox(it.queue, dt)).join('') + '</div>')\n"
"    .join('<div class=\"arrow\">&rarr;</div>');\n"
"  const states = ['open', 'sealed', 'held', 'loading', 'loaded', 'failed'];\n"
"  $('batches').innerHTML = table(['model'].concat(states, ['waiting']), st.batches.map(m =>\n"
"    [m.model].concat(states.map(k => m[k].batches + ' (' + m[k].rows + ' rows)'),\n"
"    [m.oldest_waiting_s ? m.oldest_waiting_s.toFixed(0) + ' s' : '-'])));\n"
"  $('rejects').innerHTML = '<p>' + st.rejects.total + ' rejected rows</p>' +\n"
"    table(['model', 'field', 'rule', 'rows'], st.rejects.reasons.map(x =>\n"
"      [x.model, x.field || '-', x.rule, x.count]));\n"
"  chart(st.history.points);\n"
"  prev = st;\n"
"}\n"
"async function poll() {\n"
"  const h = {}, tok = sessionStorage.getItem('pickline-token');\n"
"  if (tok) h.Authorization = 'Bearer ' + tok;\n"
"  try {\n"
"    const res = await fetch('/status', {headers: h, cache: 'no-store'});\n"
"    if (res.status === 401) { $('auth').style.display = 'block'; $('meta').textContent =\n"
"      'a bearer token is needed to read the status'; return; }\n"
"    if (!res.ok) throw new Error('HTTP ' + res.status);\n"
"    $('auth').style.display = 'none';\n"
"    draw(await res.json());\n"
"  } catch (e) {\n"
"    $('meta').textContent = 'cannot read /status: ' + e.message + ' (retrying)';\n"
"  } finally { timer = setTimeout(poll, 2000); }\n"
"}\n"
"$('auth').addEventListener('submit', ev => { ev.preventDefault();\n"
"  sessionStorage.setItem('pickline-token', $('token').value); clearTimeout(timer); poll(); });\n"
"poll();\n"
"</script></body></html>\n";

void status_page(void *arg, Exchange *x)
{
    (void)arg;
    const char *m = exchange_method(x);
    if (strcmp(exchange_path(x), "/") != 0) {
        exchange_error(x, 404, "no such path");
        return;
    }
    if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
        exchange_error(x, 405, "method not allowed on this path");
        return;
    }
    exchange_respond(x, 200, "text/html; charset=utf-8", page, sizeof page - 1);
}
