"""The HTML of the dedup report: a static header rendered here (every value escaped) and a small script that
renders one page of groups at a time from the embedded JSON, with ``textContent`` only.

Kept apart from :mod:`neardup.dedup.report` so the reading/thumbnail logic and the page can change separately.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

from neardup.dedup.calibrate import Calibration

#: in report.html's head; a report.html without it was not written by neardup and is never replaced
GENERATOR = '<meta name="generator" content="neardup dedup report">'
#: scores within this much above the threshold are marked borderline (amber)
BORDER_BAND = 0.05


def embed_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` survives literally, so a
    file name such as ``</script><img src=x onerror=alert(1)>`` cannot end the tag or open a comment; non-ASCII
    and undecodable (surrogate-escaped) names are ``\\u`` escapes, which ``JSON.parse`` restores."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _t(v: Any) -> str:
    """Escaped text for the header; a path that is not valid UTF-8 is shown with replacement characters."""
    s = v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return html.escape(s.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), quote=True)


def _num(v: Any, fmt: str = "{:,}") -> str:
    try:
        return _t(fmt.format(v))
    except (TypeError, ValueError):
        return _t(v)


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _threshold_html(summary: dict[str, Any], cal: Calibration | None) -> str:
    t = float(summary["threshold"])
    norm = summary.get("normalization")
    rows = [("Threshold", f"<b>{t:.4f}</b>" + (" (normalised score)" if norm else " (cosine similarity)"))]
    if isinstance(norm, dict):
        how = "mean" if norm.get("reduction") == "mean" else "last"
        rows.append(("Score normalisation", f"cosine − {_num(norm.get('beta'), '{:g}')} × (bias(a) + bias(b)) / 2; "
                     f"bias: an image's {how} similarity to its {_num(norm.get('k'))} nearest background images "
                     f"({_t(norm.get('background'))}, {_num(norm.get('n_background'))} images)"))
    if summary["threshold_source"] == "calibrated" and cal is not None:
        rows.append(("Chosen by", "calibration on this collection: the lowest threshold whose estimated precision "
                                  f"reaches the target {_num(cal.target_precision, '{:g}')}"))
    else:
        rows.append(("Chosen by", f"{_t(summary['threshold_source'])} (set by the user, not calibrated)"))
    if cal is not None:
        sample = f"{_num(cal.n_positives)} attacked copies, {_num(cal.n_negatives)} hard negatives"
        rows += [("Estimated precision", _num(cal.precision, "{:.3f}")),
                 ("Estimated recall", _num(cal.recall, "{:.3f}")), ("Calibration sample", sample)]
        if not cal.reached:
            rows.append(("Warning", '<span class="warn">target precision not reached on the sample: the threshold was '
                                    "set just above every hard negative</span>"))
    return "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)


def _header(summary: dict[str, Any], cal: Calibration | None, scan: Path, plot: str | None) -> str:
    s = summary
    t = float(s["threshold"])
    cards = [("Files scanned", _num(s["files"]), ""),
             ("Duplicate groups", _num(s["groups"]), ""),
             ("Duplicates", _num(s["duplicates"]), f"{_num(s['exact_duplicates'])} exact · "
                                                   f"{_num(s['near_duplicates'])} near"),
             ("Largest group", _num(s["largest_group"]), "files"),
             ("Threshold", f"{t:.3f}", _t(s["threshold_source"])
              + (" · normalised score" if s.get("normalization") else ""))]
    card_html = "".join(f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div>'
                        f'<div class="d">{d}</div></div>' for k, v, d in cards)
    timings = {str(k): float(v) for k, v in s["timings_s"].items() if isinstance(v, (int, float))}
    timing_html = " · ".join(f"{_t(k)} {_seconds(v)}" for k, v in timings.items())
    if timings:
        timing_html += f" · <b>total {_seconds(sum(timings.values()))}</b>"
    mode = "copies of a reference collection (--against)" if s["against"] else "duplicates within the collection"
    figure = (f'<figure class="plot"><img src="{_t(plot)}" alt="calibration scores and precision/recall against '
              f'threshold"><figcaption>Calibration: score histograms and estimated precision/recall.</figcaption>'
              f"</figure>") if plot else '<p class="muted">No calibration plot: the threshold was given.</p>'
    return f"""<header class="top">
  <div class="title"><h1>Duplicate review</h1><span class="path" title="{_t(scan)}">{_t(scan)}</span></div>
  <div class="cards">{card_html}</div>
  <details class="aboutbox" open><summary>Threshold, calibration, model and timings</summary>
  <section class="about">
    <div>
      <table class="facts">{_threshold_html(s, cal)}
        <tr><th>Model</th><td>{_t(s['model'])}</td></tr>
        <tr><th>Mode</th><td>{mode}</td></tr>
        <tr><th>Timings</th><td>{timing_html or '–'}</td></tr>
      </table>
      <p class="legend">{"Normalised score" if s.get("normalization") else "Score"} to the keeper:
        <span><span class="sc hi">≥ {t + BORDER_BAND:.3f}</span> clear</span>
        <span><span class="sc mid">{t:.3f}–{t + BORDER_BAND:.3f}</span> borderline</span>
        <span><span class="sc lo">&lt; {t:.3f}</span> below the threshold (joined through another copy)</span>
        <span><span class="sc exact">identical</span> same bytes or pixels</span></p>
    </div>
    {figure}
  </section>
  </details>
</header>"""


def render_page(summary: dict[str, Any], cal: Calibration | None, data: dict[str, Any], scan: Path,
                plot: str | None) -> str:
    """The whole report.html as one string (inline CSS and JS, relative links only)."""
    from neardup import __version__

    data = {**data, "band": BORDER_BAND}
    options = "".join(f'<option value="{_t(k)}">{_t(v)}</option>' for k, v in data["sorts"].items())
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{GENERATOR}
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>neardup duplicate review: {_t(scan.name)}</title>
<style>{CSS}</style>
</head>
<body>
{_header(summary, cal, scan, plot)}
<nav class="toolbar" aria-label="groups">
  <input id="search" type="search" placeholder="Filter by file name  ( / )" aria-label="filter by file name"
    autocomplete="off" spellcheck="false">
  <label>Sort <select id="sort">{options}</select></label>
  <span id="count" class="muted"></span>
  <span class="pager">
    <button id="first" title="first page">«</button><button id="prev" title="previous page (p)">‹ Prev</button>
    <span id="pageinfo"></span>
    <button id="next" title="next page (n)">Next ›</button><button id="last" title="last page">»</button>
  </span>
</nav>
<main id="groups"></main>
<p id="nomatch" class="empty" hidden></p>
<footer>Keys: <kbd>n</kbd> next page · <kbd>p</kbd> previous page · <kbd>/</kbd> filter ·
  <kbd>Esc</kbd> clear filter. Click a thumbnail to open the file. Generated by neardup {_t(__version__)}
  on {_t(when)}.</footer>
<script type="application/json" id="report-data">{embed_json(data)}</script>
<script>{JS}</script>
</body>
</html>
"""


CSS = """
:root { --bg:#f4f5f7; --card:#fff; --ink:#1c2330; --muted:#6a7385; --line:#dfe3ea; --accent:#2f6fde;
  --keeper:#1d9a57; --hi:#1d9a57; --mid:#b7791f; --lo:#d0393e; --exact:#5a64d6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  color:var(--ink); background:var(--bg); }
.muted { color:var(--muted); }
.top { background:var(--card); border-bottom:1px solid var(--line); padding:18px 28px 8px; }
.title { display:flex; align-items:baseline; gap:16px; flex-wrap:wrap; }
.title h1 { font-size:20px; margin:0; }
.title .path { color:var(--muted); font-family:ui-monospace,Menlo,Consolas,monospace; font-size:12px;
  overflow:hidden; text-overflow:ellipsis; white-space:nowrap; max-width:70vw; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; margin:14px 0; }
.card { border:1px solid var(--line); border-radius:10px; padding:10px 14px; background:#fbfcfd; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:24px; font-weight:600; }
.card .d { color:var(--muted); font-size:12px; min-height:1em; }
.aboutbox > summary { cursor:pointer; color:var(--muted); font-size:12px; margin-bottom:6px; }
.about { display:flex; gap:24px; flex-wrap:wrap; align-items:flex-start; }
.about > div { flex:1 1 380px; }
.facts { border-collapse:collapse; font-size:13px; }
.facts th { text-align:left; color:var(--muted); font-weight:500; padding:3px 14px 3px 0; vertical-align:top;
  white-space:nowrap; }
.facts td { padding:3px 0; }
.warn { color:var(--lo); font-weight:600; }
.legend { font-size:12px; color:var(--muted); display:flex; gap:6px 14px; flex-wrap:wrap; align-items:center; }
.legend > span { white-space:nowrap; }
.plot { margin:0; flex:1 1 520px; max-width:760px; }
.plot img { width:100%; height:auto; border:1px solid var(--line); border-radius:8px; background:#fff; }
.plot figcaption { font-size:12px; color:var(--muted); }
.toolbar { position:sticky; top:0; z-index:5; display:flex; gap:14px; align-items:center; flex-wrap:wrap;
  padding:10px 28px; background:rgba(244,245,247,.96); border-bottom:1px solid var(--line);
  backdrop-filter:blur(4px); }
.toolbar input[type=search] { flex:0 1 340px; padding:7px 10px; border:1px solid var(--line); border-radius:8px;
  font:inherit; background:#fff; }
.toolbar select { padding:6px 8px; border:1px solid var(--line); border-radius:8px; font:inherit; background:#fff; }
.pager { margin-left:auto; display:flex; gap:6px; align-items:center; }
.pager button { padding:6px 11px; border:1px solid var(--line); border-radius:8px; background:#fff; font:inherit;
  cursor:pointer; }
.pager button:hover:not(:disabled) { border-color:var(--accent); color:var(--accent); }
.pager button:disabled { opacity:.4; cursor:default; }
#pageinfo { min-width:110px; text-align:center; font-variant-numeric:tabular-nums; }
main { padding:16px 28px; display:flex; flex-direction:column; gap:14px; }
.group { background:var(--card); border:1px solid var(--line); border-radius:12px; padding:12px 14px;
  box-shadow:0 1px 2px rgba(16,24,40,.04); }
.ghead { display:flex; gap:12px; align-items:center; margin-bottom:10px; font-size:13px; flex-wrap:wrap; }
.ghead .gid { font-weight:700; font-size:14px; }
.tiles { display:flex; gap:12px; flex-wrap:wrap; }
.tile { width:208px; margin:0; border:1px solid var(--line); border-radius:10px; overflow:hidden; background:#fff; }
.tile.keeper { border:2px solid var(--keeper); box-shadow:0 0 0 3px rgba(29,154,87,.12); }
.tile .thumb { display:flex; align-items:center; justify-content:center; height:164px; background:#eef0f3; }
.tile .thumb img { max-width:100%; max-height:164px; display:block; }
.tile figcaption { padding:7px 9px 9px; font-size:12px; display:flex; flex-direction:column; gap:3px; }
.tile .name { font-weight:600; font-size:13px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.tile .dir { color:var(--muted); overflow:hidden; text-overflow:ellipsis; white-space:nowrap; direction:rtl;
  text-align:left; font-family:ui-monospace,Menlo,Consolas,monospace; font-size:11px; }
.tile .row { display:flex; justify-content:space-between; gap:6px; color:var(--muted);
  font-variant-numeric:tabular-nums; }
.tile .note { color:var(--lo); font-weight:600; }
.kind { font-size:11px; font-weight:700; text-transform:uppercase; letter-spacing:.05em; }
.kind.keeper { color:var(--keeper); }
.kind.exact { color:var(--exact); }
.kind.near { color:var(--muted); }
.sc { display:inline-block; padding:1px 7px; border-radius:999px; font-weight:600; font-size:12px;
  font-variant-numeric:tabular-nums; color:#fff; background:var(--muted); }
.sc.hi { background:var(--hi); } .sc.mid { background:var(--mid); } .sc.lo { background:var(--lo); }
.sc.exact { background:var(--exact); } .sc.keeper { background:var(--keeper); }
.empty { text-align:center; color:var(--muted); padding:40px; font-size:15px; }
footer { padding:14px 28px 28px; color:var(--muted); font-size:12px; }
kbd { border:1px solid var(--line); border-bottom-width:2px; border-radius:4px; padding:0 4px; background:#fff;
  font-size:11px; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#14171c; --card:#1c2028; --ink:#e6e9ef; --muted:#98a1b3; --line:#2c323d; }
  .card { background:#20252e; } .tile, .toolbar input[type=search], .toolbar select, .pager button, kbd
  { background:#232833; color:var(--ink); } .tile .thumb { background:#2a303b; }
  .toolbar { background:rgba(20,23,28,.94); } .plot img { background:#fff; }
}
"""

JS = r"""
(() => {
"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const G = DATA.groups, T = DATA.threshold, PS = DATA.page_size, BAND = DATA.band;
const $ = (id) => document.getElementById(id);
const baseName = (p) => p.slice(Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\")) + 1);
const dirName = (p) => p.slice(0, Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\")) + 1);
const KEYS = G.map((g) => g.m.map((m) => baseName(m.p).toLowerCase()).join("\u0000"));
const state = { sort: "size", q: "", page: 1 };
let view = [];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
function human(n) {
  if (typeof n !== "number" || n < 0) return "?";
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0, x = n;
  while (x >= 1000 && i < u.length - 1) { x /= 1000; i++; }
  return (i === 0 ? String(x) : x.toFixed(x < 10 ? 2 : x < 100 ? 1 : 0)) + " " + u[i];
}
function scoreClass(s) {
  if (typeof s !== "number") return "";
  return s < T ? "lo" : s < T + BAND ? "mid" : "hi";
}
function fileHref(p) {
  try { return DATA.root + p.split("/").filter(Boolean).map(encodeURIComponent).join("/"); }
  catch (e) { return null; }  // a name that is not valid Unicode: no link
}
function minScore(g) {
  let lo = null;
  for (const m of g.m.slice(1)) if (typeof m.s === "number" && (lo === null || m.s < lo)) lo = m.s;
  return lo;
}
function tile(m) {
  const f = el("figure", "tile " + (m.k === "keeper" ? "keeper" : ""));
  f.dataset.kind = m.k;
  const box = el("div", "thumb");
  const img = document.createElement("img");
  img.loading = "lazy";
  img.decoding = "async";
  img.alt = baseName(m.p);
  const fallback = DATA.files_dir + "/unreadable.jpg";
  img.src = m.t ? DATA.files_dir + "/thumbs/" + m.t + ".jpg" : fallback;
  img.addEventListener("error", () => { if (!img.src.endsWith("/unreadable.jpg")) img.src = fallback; });
  const href = fileHref(m.p);
  if (href) {
    const a = el("a");
    a.href = href; a.target = "_blank"; a.rel = "noopener"; a.title = "open " + m.p;
    a.appendChild(img); box.appendChild(a);
  } else box.appendChild(img);
  f.appendChild(box);
  const cap = el("figcaption");
  const name = el("div", "name", baseName(m.p));
  name.title = m.p;
  cap.appendChild(name);
  const dir = el("div", "dir", "\u200e" + dirName(m.p) + "\u200e");
  dir.title = m.p;
  cap.appendChild(dir);
  const r1 = el("div", "row");
  r1.appendChild(el("span", "kind " + m.k, m.k === "keeper" && DATA.against ? "reference" : m.k));
  if (m.k === "exact") r1.appendChild(el("span", "sc exact", "identical"));
  else if (m.k !== "keeper") {
    r1.appendChild(el("span", "sc " + scoreClass(m.s), typeof m.s === "number" ? m.s.toFixed(3) : "–"));
  }
  cap.appendChild(r1);
  const r2 = el("div", "row");
  r2.appendChild(el("span", "res", m.w > 0 && m.h > 0 ? m.w + "×" + m.h : "?×?"));
  r2.appendChild(el("span", "size", human(m.b)));
  cap.appendChild(r2);
  if (m.n) cap.appendChild(el("div", "note", m.n));
  f.appendChild(cap);
  return f;
}
function card(g) {
  const a = el("article", "group");
  a.dataset.group = String(g.id);
  const h = el("div", "ghead");
  h.appendChild(el("span", "gid", "Group " + g.id));
  h.appendChild(el("span", "muted", g.m.length + " files"));
  const exact = g.m.filter((m) => m.k === "exact").length, near = g.m.filter((m) => m.k === "near").length;
  h.appendChild(el("span", "muted", exact + " exact · " + near + " near"));
  const lo = minScore(g);
  if (lo !== null) {
    h.appendChild(el("span", "muted", "weakest"));
    h.appendChild(el("span", "sc " + (near ? scoreClass(lo) : "exact"), lo.toFixed(3)));
  }
  a.appendChild(h);
  const tiles = el("div", "tiles");
  for (const m of g.m) tiles.appendChild(tile(m));
  a.appendChild(tiles);
  return a;
}
function pages() { return Math.max(1, Math.ceil(view.length / PS)); }
function recompute() {
  const q = state.q.trim().toLowerCase();
  const order = DATA.orders[state.sort] || DATA.orders.size;
  view = q ? order.filter((i) => KEYS[i].includes(q)) : order;
}
function saveHash() {
  const h = new URLSearchParams();
  if (state.sort !== "size") h.set("sort", state.sort);
  if (state.q) h.set("q", state.q);
  if (state.page > 1) h.set("page", String(state.page));
  try { history.replaceState(null, "", h.toString() ? "#" + h.toString() : location.pathname + location.search); }
  catch (e) { /* some browsers refuse replaceState on file:// */ }
}
function render(scroll) {
  state.page = Math.min(Math.max(1, state.page), pages());
  const start = (state.page - 1) * PS, slice = view.slice(start, start + PS);
  const frag = document.createDocumentFragment();
  for (const i of slice) frag.appendChild(card(G[i]));
  $("groups").replaceChildren(frag);
  $("pageinfo").textContent = "Page " + state.page + " of " + pages();
  $("first").disabled = $("prev").disabled = state.page <= 1;
  $("next").disabled = $("last").disabled = state.page >= pages();
  const total = G.length;
  $("count").textContent = view.length === total ? total + " groups"
    : view.length + " of " + total + " groups match";
  const none = $("nomatch");
  none.hidden = view.length > 0;
  none.textContent = total === 0 ? "No duplicate groups: nothing to review."
    : "No match: no group has a file whose name contains \u201c" + state.q.trim() + "\u201d.";
  saveHash();
  if (scroll) $("groups").scrollIntoView({ block: "start" });
}
function go(page) {
  if (page < 1 || page > pages() || page === state.page) return;
  state.page = page;
  render(true);
}
function load() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get("sort") && DATA.orders[h.get("sort")]) state.sort = h.get("sort");
  state.q = h.get("q") || "";
  state.page = parseInt(h.get("page") || "1", 10) || 1;
  $("sort").value = state.sort;
  $("search").value = state.q;
  recompute();
  render(false);
}
function refilter() { state.page = 1; recompute(); render(false); }
$("search").addEventListener("input", (e) => { state.q = e.target.value; refilter(); });
$("sort").addEventListener("change", (e) => { state.sort = e.target.value; refilter(); });
$("first").addEventListener("click", () => go(1));
$("prev").addEventListener("click", () => go(state.page - 1));
$("next").addEventListener("click", () => go(state.page + 1));
$("last").addEventListener("click", () => go(pages()));
document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
  if (e.key === "Escape" && e.target === $("search")) {
    $("search").value = ""; state.q = ""; refilter(); $("search").blur(); return;
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "n") go(state.page + 1);
  else if (e.key === "p") go(state.page - 1);
  else if (e.key === "/") { e.preventDefault(); $("search").focus(); }
});
load();
})();
"""
