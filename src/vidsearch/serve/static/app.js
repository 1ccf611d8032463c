// vidsearch web page: search by a clip, an image or a range of an indexed video; list the
// collection's videos; index uploads and follow the jobs. Plain JavaScript, no build step, no
// third-party code; talks only to the server that served it (the HTTP API in /work/notes/api.md,
// OpenAPI at /openapi.json).

const TOKEN_KEY = "vidsearch.token";
const VIDEO_PAGE = 100;         // GET /videos page size
const MAX_VIDEOS = 5000;        // the list stops loading pages here (a note says so)
const JOBS_POLL_ACTIVE_MS = 1000;
const JOBS_POLL_IDLE_MS = 5000;
const VIEWS = ["search", "videos", "indexing"];

const state = {
  videos: new Map(),           // video_id -> {video_id, path, name, duration, segments, frames}
  videosTotal: 0,
  videosLoading: null,         // the promise of a running load
  queryFile: null,             // the File to search with
  queryDuration: null,         // Promise<number|null>: seconds of the local query (0 for an image)
  queryIsImage: false,
  queryUrl: null,              // object URL of the local preview
  searchSeq: 0,                // the newest search; older answers are dropped
  pendingSeek: null,           // {start} applied when the player's metadata arrive
  jobs: [],
  jobsTimer: null,
  activeJobIds: new Set(),
};

const $ = (sel) => document.querySelector(sel);

// ---------------------------------------------------------------- small helpers

/** Make an element: h("button", {class: "x", onclick: fn, "data-testid": "y"}, "text", child). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "style") Object.assign(el.style, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Seconds as "12.3 s" or "1:02.3". */
function fmtTime(seconds) {
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  const s = seconds - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

/** A plain decimal (at most 3 places, never an exponent), as the API's VIDEO_ID@START-END wants. */
function fmtNum(x) {
  return String(Number(Math.max(0, x).toFixed(3)));
}

function basename(path) {
  return String(path).split(/[\\/]/).pop() || String(path);
}

function clamp01(x) {
  return Math.min(1, Math.max(0, x));
}

// ---------------------------------------------------------------- errors

class ApiError extends Error {
  constructor(status, type, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.retryAfter = retryAfter;
  }
}

/** Show an error (an ApiError, an Error or a string) at the top of the page until dismissed. */
function showError(err, context = "") {
  const box = $("#errors");
  // a plain string is the page's own check of what was typed in
  const type = err instanceof ApiError ? err.type : typeof err === "string" ? "Check" : (err && err.name) || "Error";
  let message = err instanceof Error ? err.message : String(err);
  if (err instanceof ApiError && err.retryAfter) message += ` (retry after ${err.retryAfter} s)`;
  const item = h("div", {class: "error", role: "alert", "data-testid": "error", "data-error-type": type},
    h("p", {}, context ? `${context}: ` : "", h("strong", {}, type), " ", h("span", {"data-testid": "error-message"}, message)),
    h("button", {type: "button", class: "secondary small", "aria-label": "Dismiss this message",
                 onclick: () => item.remove()}, "Dismiss"));
  box.prepend(item);
  while (box.children.length > 4) box.lastElementChild.remove();
  return item;
}

/** The error of a failed response: the API's {"error": {"type", "message"}} or whatever came. */
async function errorFrom(resp) {
  const retryAfter = resp.headers.get("Retry-After");
  let text = "";
  try {
    text = await resp.text();
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error === "object") {
      return new ApiError(resp.status, body.error.type || `HTTP ${resp.status}`, body.error.message || text, retryAfter);
    }
    if (body && body.detail !== undefined) {  // a framework error that skipped the API's handler
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      return new ApiError(resp.status, `HTTP ${resp.status}`, detail, retryAfter);
    }
  } catch (_) { /* not JSON: use the text */ }
  const snippet = text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 300);
  return new ApiError(resp.status, `HTTP ${resp.status}`, snippet || resp.statusText || "request failed", retryAfter);
}

window.addEventListener("error", (ev) => {
  if (ev.error || ev.message) showError(ev.error || ev.message, "Page error");
});
window.addEventListener("unhandledrejection", (ev) => showError(ev.reason, "Page error"));

// ---------------------------------------------------------------- token and API calls

function getToken() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
}

function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch (_) { /* storage off: the token lasts until the page closes */ }
  refreshMediaUrls();
}

let tokenPrompt = null;

/** Ask for the API token; resolves when one is saved, rejects when the user cancels. */
function askToken(reason = null) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve, reject) => {
    const dialog = $("#token-dialog");
    const input = $("#token-input");
    $("#token-reason").textContent = reason
      ? (getToken() ? `The saved token was refused: ${reason.message}` : `This server needs an API token: ${reason.message}`)
      : "The token the server was started with (vidsearch serve --token).";
    input.value = "";
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      tokenPrompt = null;
      const token = input.value.trim();
      if (dialog.returnValue === "save" && token) {
        setToken(token);
        resolve(token);
      } else {
        if (dialog.returnValue === "clear") setToken("");
        reject(new ApiError(401, "Unauthorized",
          "this server needs an API token: choose 'API token' at the top right and enter the one it was started with"));
      }
    }, {once: true});
    dialog.showModal();
    input.focus();
  });
  return tokenPrompt;
}

function authHeaders() {
  const token = getToken();
  return token ? {Authorization: `Bearer ${token}`} : {};
}

/**
 * Call the API; parse JSON; throw ApiError with the server's message. On 401, ask for the token
 * and try again. `json` sends a JSON body; `body` sends FormData as is.
 */
async function api(path, {method = "GET", body = undefined, json = undefined} = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = {Accept: "application/json", ...authHeaders()};
    let payload = body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    let resp;
    try {
      resp = await fetch(path, {method, headers, body: payload});
    } catch (e) {
      throw new ApiError(0, "NetworkError", `cannot reach the vidsearch server (${e.message}); is it still running?`);
    }
    if (resp.status === 401 && attempt < 3) {
      await askToken(await errorFrom(resp));
      continue;
    }
    if (!resp.ok) throw await errorFrom(resp);
    const type = resp.headers.get("Content-Type") || "";
    return type.includes("json") ? resp.json() : resp.text();
  }
}

/** POST a FormData with upload progress (fetch has none); same errors and 401 handling as api(). */
async function apiUpload(path, form, onProgress) {
  for (let attempt = 0; ; attempt += 1) {
    const result = await new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      xhr.setRequestHeader("Accept", "application/json");
      for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
      xhr.upload.addEventListener("progress", (ev) => { if (ev.lengthComputable) onProgress(ev.loaded / ev.total); });
      xhr.addEventListener("load", () => resolve({xhr}));
      xhr.addEventListener("error", () => resolve({failed: true}));
      xhr.send(form);
    });
    if (result.failed) throw new ApiError(0, "NetworkError", "the upload did not reach the server; is it still running?");
    const {xhr} = result;
    const resp = new Response(xhr.responseText, {
      status: xhr.status,
      headers: {"Content-Type": xhr.getResponseHeader("Content-Type") || "", "Retry-After": xhr.getResponseHeader("Retry-After") || ""},
    });
    if (xhr.status === 401 && attempt < 3) {
      await askToken(await errorFrom(resp));
      continue;
    }
    if (!resp.ok) throw await errorFrom(resp);
    return resp.json();
  }
}

/** URLs for <img> and <video>, which cannot send headers: the token goes in the query. */
function withToken(url) {
  const token = getToken();
  return token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
}
const thumbnailUrl = (id, t = 0) => withToken(`/videos/${encodeURIComponent(id)}/thumbnail?t=${fmtNum(t)}`);
const mediaUrl = (id) => withToken(`/videos/${encodeURIComponent(id)}/media`);

/** After the token changed: point the images at URLs with the new one. */
function refreshMediaUrls() {
  for (const img of document.querySelectorAll("img[data-video-id]")) {
    img.src = thumbnailUrl(img.dataset.videoId, Number(img.dataset.t || 0));
  }
}

/** A thumbnail <img> that says so in words when the server has none. */
function thumbnail(id, t, alt) {
  const img = h("img", {src: thumbnailUrl(id, t), alt, loading: "lazy", width: 160, height: 90,
                        "data-video-id": id, "data-t": fmtNum(t), "data-testid": "thumbnail"});
  img.addEventListener("error", () => img.replaceWith(h("span", {class: "no-thumb", role: "img", "aria-label": alt}, "no image")),
                       {once: true});
  return img;
}

// ---------------------------------------------------------------- collection state

async function loadHealth() {
  try {
    const health = await fetch("/health").then((r) => (r.ok ? r.json() : null));
    $("#health").textContent = health
      ? `${health.videos} video${health.videos === 1 ? "" : "s"} · ${health.segments} segments`
      : "server not healthy";
  } catch (_) {
    $("#health").textContent = "server unreachable";
  }
}

/** Load every video's record (pages of VIDEO_PAGE, at most MAX_VIDEOS); one load at a time. */
function loadVideos() {
  if (state.videosLoading) return state.videosLoading;
  state.videosLoading = (async () => {
    const videos = new Map();
    let total = 0;
    for (let offset = 0; offset < MAX_VIDEOS;) {
      const page = await api(`/videos?offset=${offset}&limit=${VIDEO_PAGE}`);
      total = page.total;
      for (const v of page.videos) videos.set(v.video_id, v);
      offset += page.videos.length;
      if (!page.videos.length || offset >= total) break;
    }
    state.videos = videos;
    state.videosTotal = total;
    renderRefSelect();
    return videos;
  })().finally(() => { state.videosLoading = null; });
  return state.videosLoading;
}

/** The record of a video (from the list, else GET /videos/{id}); null if the server has none. */
async function videoInfo(id) {
  if (state.videos.has(id)) return state.videos.get(id);
  try {
    const v = await api(`/videos/${encodeURIComponent(id)}`);
    state.videos.set(v.video_id, v);
    return v;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

function videoName(v, fallbackPath = "") {
  return (v && (v.name || basename(v.path))) || basename(fallbackPath);
}

// ---------------------------------------------------------------- search view

function searchMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function setSearchMode(mode) {
  document.querySelector(`input[name="mode"][value="${mode}"]`).checked = true;
  $("#upload-fields").hidden = mode !== "upload";
  $("#ref-fields").hidden = mode !== "ref";
}

function renderRefSelect() {
  const select = $("#ref-video");
  const keep = select.value;
  const videos = [...state.videos.values()].sort((a, b) => videoName(a).localeCompare(videoName(b)));
  select.replaceChildren(...(videos.length
    ? videos.map((v) => h("option", {value: v.video_id}, `${videoName(v)} (${fmtTime(v.duration)}, ${v.video_id})`))
    : [h("option", {value: ""}, "no videos indexed yet")]));
  if (keep && state.videos.has(keep)) select.value = keep;
}

/** Take a local file as the query: preview it, learn its duration, search. */
function setQueryFile(file) {
  if (!file) return;
  state.queryFile = file;
  setSearchMode("upload");
  if (state.queryUrl) URL.revokeObjectURL(state.queryUrl);
  state.queryUrl = URL.createObjectURL(file);
  const preview = $("#query-preview");
  const isImage = file.type.startsWith("image/");
  state.queryIsImage = isImage;
  const caption = h("p", {class: "caption"}, h("strong", {}, file.name), ` · ${(file.size / 1e6).toFixed(2)} MB`);
  if (isImage) {
    preview.replaceChildren(h("img", {src: state.queryUrl, alt: `The query image ${file.name}`}), caption);
    state.queryDuration = Promise.resolve(0);
  } else {
    const video = h("video", {src: state.queryUrl, muted: true, controls: true, preload: "metadata",
                              "aria-label": `The query clip ${file.name}`, "data-testid": "query-video"});
    preview.replaceChildren(video, caption);
    state.queryDuration = new Promise((resolve) => {
      const done = (value) => { clearTimeout(timer); resolve(value); };
      const timer = setTimeout(() => done(null), 4000);
      video.addEventListener("loadedmetadata", () => {
        const d = video.duration;
        caption.append(` · ${fmtTime(d)}`);
        done(Number.isFinite(d) ? d : null);
      }, {once: true});
      video.addEventListener("error", () => { video.remove(); done(null); }, {once: true});  // a codec the browser lacks
    });
  }
  preview.hidden = false;
  runSearch();
}

function setStatus(el, text, stateName) {
  el.textContent = text;
  el.dataset.state = stateName;
}

async function runSearch() {
  const status = $("#search-status");
  const form = new FormData();
  let queryLabel;
  let knownDuration = null;          // seconds of the query, when known before the answer
  let durationPromise = Promise.resolve(null);
  let isImage = false;
  if (searchMode() === "upload") {
    if (!state.queryFile) {
      showError("choose a video clip or an image first (or drop one on the form)", "Search");
      $("#query-file").focus();
      return;
    }
    form.append("file", state.queryFile, state.queryFile.name);
    queryLabel = state.queryFile.name;
    durationPromise = state.queryDuration || durationPromise;
    isImage = state.queryIsImage;
  } else {
    const id = $("#ref-video").value;
    const start = Number($("#ref-start").value);
    const end = Number($("#ref-end").value);
    if (!id) { showError("no indexed video to search with: add videos on the Indexing page", "Search"); return; }
    if (!(Number.isFinite(start) && Number.isFinite(end) && start >= 0 && end > start)) {
      showError(`the range must have 0 <= start < end seconds, got start ${$("#ref-start").value || "(empty)"} and end ${$("#ref-end").value || "(empty)"}`, "Search");
      $("#ref-start").focus();
      return;
    }
    const ref = `${id}@${fmtNum(start)}-${fmtNum(end)}`;
    form.append("ref", ref);
    queryLabel = `${videoName(state.videos.get(id))} ${fmtTime(start)}–${fmtTime(end)}`;
    knownDuration = end - start;
  }
  const k = $("#opt-k").value.trim();
  if (k) form.append("k", k);
  const rerank = $("#opt-rerank").value;
  if (rerank) form.append("rerank", rerank);
  if ($("#opt-crops").checked) form.append("crops", "true");
  const minSim = $("#opt-minsim").value.trim();
  if (minSim) form.append("min_similarity", minSim);

  const seq = ++state.searchSeq;
  const button = $("#search-submit");
  button.disabled = true;
  $("#results").setAttribute("aria-busy", "true");
  setStatus(status, `Searching with ${queryLabel}…`, "busy");
  try {
    const answer = await api("/search", {method: "POST", body: form});
    const infos = await Promise.all(answer.results.map((r) => videoInfo(r.video_id).catch(() => null)));
    const localDuration = await durationPromise;
    if (seq !== state.searchSeq) return;  // a newer search is under way
    const matchEnd = Math.max(0, ...answer.results.flatMap((r) => r.matches.map((m) => m.query_end)));
    // the query's length: the server's word, else the range asked for, else the local file's, else the
    // last matched second; never shorter than a match (a clip whose header gives no duration says 0)
    const given = answer.query_duration ?? knownDuration ?? (localDuration > 0 ? localDuration : null);
    const queryDuration = isImage ? 0 : Math.max(given ?? 0, matchEnd);
    renderResults(answer, infos, {queryDuration, isImage, queryLabel});
    const t = answer.timings_ms || {};
    setStatus(status, `${answer.results.length} result${answer.results.length === 1 ? "" : "s"} for ${queryLabel} in ${Math.round(t.total ?? 0)} ms`
      + ` (decode ${Math.round(t.decode ?? 0)}, encode ${Math.round(t.encode ?? 0)}, search ${Math.round(t.search ?? 0)} ms)`, "done");
  } catch (e) {
    if (seq !== state.searchSeq) return;
    $("#results").replaceChildren();  // the rows of an earlier query would read as this one's
    setStatus(status, `The search failed: ${e.message}`, "error");
    showError(e, "Search");
  } finally {
    if (seq === state.searchSeq) {
      button.disabled = false;
      $("#results").removeAttribute("aria-busy");
    }
  }
}

/** One timeline: a track of `duration` seconds with one bar per match. */
function timeline(kind, duration, matches, row, onPick) {
  const label = kind === "query" ? "Query" : "Reference";
  const track = h("div", {class: "track", "data-testid": `timeline-${kind}`, "data-duration": String(duration),
                          role: "group", "aria-label": `${label} timeline, 0 to ${fmtTime(duration)}`});
  // overlapping matches go to separate lanes (greedy, by start) so none hides another
  const spans = matches.map((m, i) => ({m, i, start: kind === "query" ? m.query_start : m.ref_start,
                                         end: kind === "query" ? m.query_end : m.ref_end}));
  const laneEnds = [];
  const lanes = new Map();
  for (const span of [...spans].sort((a, b) => a.start - b.start || a.i - b.i)) {
    let lane = laneEnds.findIndex((end) => end <= span.start);
    if (lane < 0) { lane = laneEnds.length; laneEnds.push(0); }
    laneEnds[lane] = span.end;
    lanes.set(span.i, lane);
  }
  const laneCount = Math.max(1, laneEnds.length);
  track.style.height = `${Math.max(20, 12 * laneCount)}px`;
  spans.forEach(({m, i, start, end}) => {
    const lane = lanes.get(i);
    const left = clamp01(start / duration);
    const width = Math.min(clamp01((end - start) / duration), 1 - left);
    const text = `Match ${i + 1}: reference ${fmtTime(m.ref_start)} to ${fmtTime(m.ref_end)}, `
      + `query ${fmtTime(m.query_start)} to ${fmtTime(m.query_end)}, score ${m.score.toFixed(3)}. Play from ${fmtTime(m.ref_start)}`;
    track.append(h("button", {
      type: "button", class: `bar c${i % 6}`, "data-testid": "match-bar", "data-match": String(i),
      "data-start": String(start), "data-end": String(end), title: text, "aria-label": text,
      tabindex: kind === "ref" ? null : "-1",   // the reference bars and the match list are the tab stops
      style: {left: `${(100 * left).toFixed(4)}%`, width: `${(100 * width).toFixed(4)}%`,
              top: `${(100 * lane / laneCount).toFixed(4)}%`, height: `${(100 / laneCount).toFixed(4)}%`},
      onclick: () => onPick(m), onmouseenter: () => highlight(row, i, true), onmouseleave: () => highlight(row, i, false),
      onfocus: () => highlight(row, i, true), onblur: () => highlight(row, i, false),
    }));
  });
  return h("div", {class: "timeline"},
    h("span", {class: "tl-label"}, label),
    h("div", {class: "tl-body"}, track,
      h("div", {class: "tl-scale", "aria-hidden": "true"}, h("span", {}, "0"), h("span", {}, fmtTime(duration)))));
}

function highlight(row, index, on) {
  for (const bar of row.querySelectorAll(`[data-match="${index}"]`)) bar.classList.toggle("hot", on);
}

function renderResults(answer, infos, {queryDuration, isImage, queryLabel}) {
  const list = $("#results");
  if (!answer.results.length) {
    list.replaceChildren(h("li", {class: "empty", "data-testid": "no-results"},
      "No indexed video matches this query. A lower minimum similarity, re-ranking off, or crops (for a video "
      + "shown inside another) may find more."));
    return;
  }
  list.replaceChildren(...answer.results.map((r, idx) => {
    const info = infos[idx];
    const name = videoName(info, r.path);
    const refDuration = (info && info.duration) || Math.max(1e-3, ...r.matches.map((m) => m.ref_end));
    const best = r.matches[0];
    const row = h("li", {class: "result", "data-testid": "result-row", "data-video-id": r.video_id, "data-rank": String(r.rank)});
    const pick = (m) => playMatch(r.video_id, name, m);
    const thumb = best
      ? h("button", {type: "button", class: "thumb", "data-testid": "result-thumb", onclick: () => pick(best),
                     "aria-label": `Play ${name} from ${fmtTime(best.ref_start)}`},
          thumbnail(r.video_id, best.ref_start, `Frame at ${fmtTime(best.ref_start)} of ${name}`))
      : h("div", {class: "thumb"}, thumbnail(r.video_id, 0, `First frame of ${name}`));
    const timelines = h("div", {class: "timelines"},
      isImage
        ? h("div", {class: "timeline"}, h("span", {class: "tl-label"}, "Query"),
            h("p", {class: "tl-note", "data-testid": "timeline-query-image"}, "an image: every match is one frame"))
        : timeline("query", Math.max(queryDuration, 1e-3), r.matches, row, pick),
      timeline("ref", refDuration, r.matches, row, pick));
    const matchList = h("ol", {class: "matches", "aria-label": `Matches in ${name}`},
      r.matches.map((m, i) => h("li", {},
        h("button", {type: "button", class: `link c${i % 6}`, "data-testid": "match-play", "data-match": String(i),
                     onclick: () => pick(m)},
          `▶ ${fmtTime(m.ref_start)}–${fmtTime(m.ref_end)}`),
        isImage ? ` · score ${m.score.toFixed(3)}`
          : ` ← query ${fmtTime(m.query_start)}–${fmtTime(m.query_end)} · score ${m.score.toFixed(3)}`)));
    row.append(thumb,
      h("div", {class: "info"},
        h("h3", {}, h("span", {class: "rank"}, `${r.rank}.`), " ", h("span", {"data-testid": "result-name"}, name)),
        h("p", {class: "path", title: r.path}, r.path),
        h("p", {}, "score ", h("strong", {class: "score", "data-testid": "result-score"}, r.score.toFixed(3)),
          " · ", h("code", {}, r.video_id), info ? ` · ${fmtTime(info.duration)}` : " · (no longer in the collection)"),
        matchList),
      timelines);
    return row;
  }));
}

/** Play a video in the page's player from a match's start. */
function playMatch(id, name, m) {
  const player = $("#player");
  const panel = $("#player-panel");
  panel.hidden = false;
  $("#player-caption").textContent = `${name}: the match ${fmtTime(m.ref_start)}–${fmtTime(m.ref_end)} (score ${m.score.toFixed(3)})`;
  player.dataset.videoId = id;
  player.dataset.start = String(m.ref_start);
  const url = mediaUrl(id);
  if (player.getAttribute("src") === url && player.readyState >= 1) {
    seekAndPlay(player, m.ref_start);
  } else {
    state.pendingSeek = m.ref_start;
    player.src = url;
  }
  panel.scrollIntoView({block: "nearest"});
}

function seekAndPlay(player, start) {
  player.currentTime = start;
  const p = player.play();
  if (p) p.catch(() => { /* autoplay refused or a newer source: the controls are there */ });
}

function setupPlayer() {
  const player = $("#player");
  player.addEventListener("loadedmetadata", () => {
    if (state.pendingSeek !== null) {
      const start = state.pendingSeek;
      state.pendingSeek = null;
      seekAndPlay(player, start);
    }
  });
  player.addEventListener("error", () => {
    if (!player.getAttribute("src")) return;
    const code = player.error ? player.error.code : 0;
    const why = {1: "loading was aborted", 2: "a network error", 3: "the browser could not decode it",
                 4: "the browser cannot play this format or the server refused it"}[code] || "unknown";
    showError(`cannot play ${$("#player-caption").textContent.split(":")[0] || "the video"}: ${why}`, "Player");
  });
}

function setupSearch() {
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => setSearchMode(searchMode()));
  }
  $("#query-file").addEventListener("change", (ev) => setQueryFile(ev.target.files[0]));
  setupDropzone($("#upload-fields"), (files) => setQueryFile(files[0]));
  $("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(); });
  $("#ref-video").addEventListener("change", () => {
    const v = state.videos.get($("#ref-video").value);
    if (v) {
      $("#ref-start").value = "0";
      $("#ref-end").value = String(Number(Math.min(v.duration, 5).toFixed(1)));
      $("#ref-end").max = String(v.duration);
    }
  });
  setupPlayer();
}

/** Accept dropped files on `zone` (and stop the browser from opening files dropped elsewhere). */
function setupDropzone(zone, onFiles) {
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    if (ev.dataTransfer && ev.dataTransfer.files.length) onFiles([...ev.dataTransfer.files]);
  });
}

// ---------------------------------------------------------------- videos view

async function showVideos() {
  const status = $("#videos-status");
  setStatus(status, "Loading…", "busy");
  try {
    await loadVideos();
    renderVideos();
  } catch (e) {
    setStatus(status, `Could not list the videos: ${e.message}`, "error");
    showError(e, "Videos");
  }
}

function renderVideos() {
  const rows = $("#video-rows");
  const videos = [...state.videos.values()].sort((a, b) => videoName(a).localeCompare(videoName(b)));
  const more = state.videosTotal > videos.length ? ` (the first ${videos.length} are listed)` : "";
  setStatus($("#videos-status"), `${state.videosTotal} video${state.videosTotal === 1 ? "" : "s"}${more}`, "done");
  if (!videos.length) {
    rows.replaceChildren(h("tr", {}, h("td", {colspan: 7, class: "empty", "data-testid": "no-videos"},
      "No videos yet. Add some on the ", h("a", {href: "#/indexing"}, "Indexing"), " page.")));
    return;
  }
  rows.replaceChildren(...videos.map((v) => {
    const name = videoName(v);
    const del = h("button", {type: "button", class: "danger small", "data-testid": "video-delete",
                             "aria-label": `Delete ${name} from the collection`});
    del.textContent = "Delete";
    del.addEventListener("click", () => deleteVideo(v, del));
    return h("tr", {"data-testid": "video-row", "data-video-id": v.video_id},
      h("td", {}, thumbnail(v.video_id, Math.min(1, v.duration / 2), `A frame of ${name}`)),
      h("td", {}, h("strong", {"data-testid": "video-name"}, name), h("div", {class: "path", title: v.path}, v.path)),
      h("td", {class: "num"}, fmtTime(v.duration)),
      h("td", {class: "num"}, String(v.segments)),
      h("td", {class: "num"}, v.frames === undefined ? "" : String(v.frames)),
      h("td", {}, h("code", {}, v.video_id)),
      h("td", {class: "actions"},
        h("button", {type: "button", class: "secondary small", "data-testid": "video-search",
                     "aria-label": `Search with a range of ${name}`, onclick: () => searchWithVideo(v)}, "Search with it"),
        del));
  }));
}

function searchWithVideo(v) {
  setSearchMode("ref");
  renderRefSelect();
  $("#ref-video").value = v.video_id;
  $("#ref-start").value = "0";
  $("#ref-end").value = String(Number(Math.min(v.duration, 5).toFixed(1)));
  location.hash = "#/search";
  $("#ref-start").focus();
}

/** Delete on a second press (the first asks to confirm, for 5 s). */
async function deleteVideo(v, button) {
  const name = videoName(v);
  if (button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    button.textContent = "Confirm delete";
    button.setAttribute("aria-label", `Press again to delete ${name}`);
    setTimeout(() => {
      if (button.isConnected && button.dataset.armed === "1") {
        button.dataset.armed = "";
        button.textContent = "Delete";
        button.setAttribute("aria-label", `Delete ${name} from the collection`);
      }
    }, 5000);
    return;
  }
  button.disabled = true;
  try {
    await api(`/videos/${encodeURIComponent(v.video_id)}`, {method: "DELETE"});
    state.videos.delete(v.video_id);
    state.videosTotal = Math.max(0, state.videosTotal - 1);
    renderVideos();
    renderRefSelect();
    setStatus($("#videos-status"), `Deleted ${name}. ${state.videosTotal} videos left.`, "done");
    loadHealth();
  } catch (e) {
    button.disabled = false;
    showError(e, `Delete ${name}`);
  }
}

// ---------------------------------------------------------------- indexing view

function setupIndexing() {
  const input = $("#upload-files");
  setupDropzone($("#upload-drop"), (files) => {
    const dt = new DataTransfer();
    for (const f of files) dt.items.add(f);
    input.files = dt.files;
  });
  $("#upload-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!input.files.length) { showError("choose one or more video files first", "Upload"); input.focus(); return; }
    const form = new FormData();
    for (const f of input.files) form.append("file", f, f.name);
    const bar = $("#upload-progress");
    const button = ev.target.querySelector("button[type=submit]");
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    try {
      const {job_id: jobId} = await apiUpload("/videos", form, (fraction) => { bar.value = fraction; });
      setStatus($("#jobs-status"), `Started job ${jobId}.`, "done");
      input.value = "";
      pollJobs(true);
    } catch (e) {
      showError(e, "Upload");
    } finally {
      bar.hidden = true;
      button.disabled = false;
    }
  });
  $("#paths-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const paths = $("#paths-input").value.split("\n").map((p) => p.trim()).filter(Boolean);
    if (!paths.length) { showError("write one path a line first", "Index"); $("#paths-input").focus(); return; }
    try {
      const {job_id: jobId} = await api("/videos", {method: "POST", json: {paths}});
      setStatus($("#jobs-status"), `Started job ${jobId}.`, "done");
      $("#paths-input").value = "";
      pollJobs(true);
    } catch (e) {
      showError(e, "Index");
    }
  });
}

const isActive = (job) => job.status === "queued" || job.status === "running";

/** Poll GET /jobs: every second while a job runs, else every 5 s while the Indexing page is open. */
async function pollJobs(now = false) {
  clearTimeout(state.jobsTimer);
  state.jobsTimer = null;
  if (!now && document.hidden) { scheduleJobs(); return; }
  let failed = false;
  try {
    const {jobs} = await api("/jobs");
    const finished = [...state.activeJobIds].filter((id) => !jobs.some((j) => j.job_id === id && isActive(j)));
    state.jobs = jobs;
    state.activeJobIds = new Set(jobs.filter(isActive).map((j) => j.job_id));
    renderJobs();
    if (finished.length) {  // new videos are committed: list them
      loadHealth();
      loadVideos().then(() => { if (currentView() === "videos") renderVideos(); }).catch((e) => showError(e, "Videos"));
    }
  } catch (e) {
    failed = true;
    setStatus($("#jobs-status"), `Could not read the jobs: ${e.message}`, "error");
    if (currentView() === "indexing") showError(e, "Jobs");
  }
  scheduleJobs(failed);
}

function scheduleJobs(failed = false) {
  clearTimeout(state.jobsTimer);
  const active = state.activeJobIds.size > 0;
  if (failed || (!active && currentView() !== "indexing")) { state.jobsTimer = null; return; }
  state.jobsTimer = setTimeout(() => pollJobs(), active ? JOBS_POLL_ACTIVE_MS : JOBS_POLL_IDLE_MS);
}

function renderJobs() {
  const running = state.jobs.filter(isActive).length;
  const badge = $("#jobs-badge");
  badge.hidden = running === 0;
  badge.textContent = running ? `${running} running` : "";
  if (!state.jobs.length) {
    setStatus($("#jobs-status"), "No jobs yet.", "done");
    $("#jobs").replaceChildren();
    return;
  }
  setStatus($("#jobs-status"), `${running} running, ${state.jobs.length - running} finished.`, "done");
  const openIds = new Set([...document.querySelectorAll("#jobs details[open]")].map((d) => d.dataset.jobId));
  $("#jobs").replaceChildren(...state.jobs.map((job) => {
    const total = job.total || 0;
    const summary = job.summary || {};
    const files = job.files || [];
    return h("li", {class: `job ${job.status}`, "data-testid": "job", "data-job-id": job.job_id, "data-status": job.status},
      h("div", {class: "job-head"},
        h("span", {class: `pill ${job.status}`, "data-testid": "job-status"}, job.status),
        h("code", {}, job.job_id),
        h("progress", {max: String(Math.max(total, 1)), value: String(job.done || 0), "data-testid": "job-progress",
                       "aria-label": `Job ${job.job_id}: ${job.done || 0} of ${total} files`}),
        h("span", {}, `${job.done || 0} / ${total} files`),
        h("span", {class: "muted"}, `started ${fmtDate(job.created)}${job.finished ? `, finished ${fmtDate(job.finished)}` : ""}`)),
      h("p", {}, `${summary.indexed ?? 0} indexed, ${summary.skipped ?? 0} skipped, ${summary.failed ?? 0} failed`),
      job.error ? h("p", {class: "job-error", "data-testid": "job-error"}, job.error) : null,
      files.length
        ? h("details", {"data-job-id": job.job_id, open: openIds.has(job.job_id)},
            h("summary", {}, `Files (${files.length})`),
            h("ul", {class: "files"}, files.map((f) => h("li", {class: f.status},
              h("span", {class: `pill ${f.status}`}, f.status), " ", basename(f.path),
              f.video_id ? ` · ${f.video_id}` : "",
              f.status === "indexed" ? ` · ${f.segments} segments, ${fmtTime(f.duration)}` : "",
              f.error ? h("span", {class: "job-error"}, ` · ${f.error}`) : null))))
        : null);
  }));
}

function fmtDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString();
}

// ---------------------------------------------------------------- routing and start

function currentView() {
  const m = location.hash.match(/^#\/(\w+)/);
  return m && VIEWS.includes(m[1]) ? m[1] : "search";
}

function route(focus = true) {
  const view = currentView();
  for (const name of VIEWS) {
    $(`#view-${name}`).hidden = name !== view;
    const link = document.querySelector(`nav a[data-view="${name}"]`);
    if (name === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `vidsearch · ${view[0].toUpperCase()}${view.slice(1)}`;
  if (focus) {  // the user went to another page: the last one's messages are done with
    $("#errors").replaceChildren();
    $(`#${view}-heading`).focus({preventScroll: true});
  }
  if (view === "videos") showVideos();
  if (view === "indexing") pollJobs(true);
}

function start() {
  setupSearch();
  setupIndexing();
  // files dropped outside a drop zone must not navigate away from the page
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
  $("#token-button").addEventListener("click", () => askToken().then(() => {
    loadVideos().catch((e) => showError(e, "Videos"));
    if (currentView() === "videos") showVideos();
  }, () => {}));
  window.addEventListener("hashchange", () => route(true));
  document.addEventListener("visibilitychange", () => { if (!document.hidden && state.activeJobIds.size) pollJobs(true); });
  route(false);
  loadHealth();
  loadVideos().catch((e) => showError(e, "Videos"));
  if (currentView() !== "indexing") pollJobs(true);  // shows the running-jobs badge; stops when none runs
}

start();
