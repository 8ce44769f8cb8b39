// The console's pages: poll the JSON routes, draw the trend as SVG, send changes with the token.
"use strict";

const TOKEN_HEADER = document.body.dataset.tokenHeader;
const tokenField = document.getElementById("token");
const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromLink) { sessionStorage.setItem("daad-token", fromLink); history.replaceState(null, "", location.pathname); }
tokenField.value = sessionStorage.getItem("daad-token") || "";
tokenField.addEventListener("change", () => sessionStorage.setItem("daad-token", tokenField.value));

const $ = (id) => document.getElementById(id);
// The product this page was loaded for: a change sent from it is refused once another one is on the line.
const forProduct = () => document.body.dataset.product ? { product: document.body.dataset.product } : {};
const fmt = (value, digits = 4) => (value === null || value === undefined) ? "-" : Number(value).toPrecision(digits);

function say(text, error = false) {
  const message = $("message");
  message.textContent = text;
  message.className = error ? "message error" : "message";
  message.hidden = !text;
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function change(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", [TOKEN_HEADER]: tokenField.value },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function svg(tag, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function drawTrend(target, trend) {
  // A log axis when every score is positive: good parts sit close together far below the
  // threshold and defects far above it; on a linear axis the good ones would be one flat line.
  target.replaceChildren();
  const n = trend.score.length;
  if (!n) return;
  const [width, height, pad] = [900, 220, 8];
  const values = [...trend.score, ...trend.threshold];
  const log = values.every((value) => value > 0);
  const scale = log ? Math.log10 : (value) => value;
  const low = log ? scale(Math.min(...values)) - 0.1 : 0, high = scale(Math.max(...values)) + 0.1;
  const x = (i) => pad + (width - 2 * pad) * (n === 1 ? 0.5 : i / (n - 1));
  const y = (value) => height - pad - (height - 2 * pad) * (scale(value) - low) / ((high - low) || 1);
  const line = trend.threshold.map((value, i) => `${x(i)},${y(value)}`).join(" ");
  target.append(svg("polyline", { points: line, class: "threshold-line" }));
  trend.score.forEach((value, i) => target.append(svg("circle", {
    cx: x(i), cy: y(value), r: 2.5, class: value > trend.threshold[i] ? "dot-ng" : "dot-ok" })));
  const label = svg("text", { x: pad + 4, y: pad + 12, class: "axis" });
  label.textContent = `last ${n} parts, score on a ${log ? "log" : "linear"} axis`;
  const threshold = svg("text", { x: width - pad - 4, y: y(trend.threshold[n - 1]) - 4, class: "axis", "text-anchor": "end" });
  threshold.textContent = `threshold ${fmt(trend.threshold[n - 1])}`;
  target.append(label, threshold);
}

function showVerdict(verdict, score) {
  $("verdict").textContent = verdict;
  $("verdict").className = `verdict ${verdict}`;
  $("score").textContent = fmt(score);
}

// The picture is redrawn at most twice a second; the verdict beside it is the pictured part's
// (from the picture's headers), so a fast line never shows an NG badge over an OK part.
async function refreshPicture() {
  const response = await fetch("/live.jpg", { cache: "no-store" });
  if (!response.ok) return false;
  const frame = $("frame"), previous = frame.src;
  frame.src = URL.createObjectURL(await response.blob());
  if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
  const score = response.headers.get("X-Score");
  showVerdict(response.headers.get("X-Verdict"), score === "" ? null : Number(score));
  return true;
}

async function refreshLive() {
  try {
    const state = await getJson("/api/live");
    $("threshold").textContent = fmt(state.threshold);
    if (state.current) {
      if (!(await refreshPicture())) showVerdict(state.current.verdict, state.current.score);
      for (const [key, value] of Object.entries(state.verdicts)) $(`count-${key}`).textContent = value;
      $("count-dropped").textContent = state.counters.dropped ?? 0;
      $("fps").textContent = state.fps === null ? "-" : state.fps.toFixed(1);
      const l = state.latency_ms;
      $("latency").textContent = l.p50 === null ? "-" : `${l.p50.toFixed(1)} / ${l.p90.toFixed(1)} / ${l.p99.toFixed(1)} ms`;
      drawTrend($("trend"), state.trend);
    }
    if (state.products) showProducts(state.products);
    if (state.bundle) document.querySelector("header .bundle").textContent = state.bundle;
    if (state.threshold_problem) say(`${state.threshold_problem} (History page: Roll back)`, true);
    const calibrated = state.calibrated;
    $("calibrated").textContent = calibrated ? `calibrated ${calibrated.created} (${calibrated.method})`
      + (calibrated.saved_by ? ` by ${calibrated.saved_by}` : "") + (calibrated.note ? `: ${calibrated.note}` : "") : "not calibrated";
  } catch (error) { say(`line: ${error.message}`, true); }
}

function showProducts(products) {
  $("product").textContent = products.current;
  $("product-pending").textContent = products.pending ? `(${products.pending} loaded: it takes over at the next part)` : "";
  $("product-previous").textContent = products.previous ?? "-";
  $("rollback-button").disabled = !products.previous;
  const choice = $("product-choice"), names = products.products;
  if ([...choice.options].map((option) => option.value).join("/") !== names.join("/")) {
    const chosen = choice.value;  // the list changed (a product taught meanwhile): keep what the technician chose
    choice.replaceChildren(...names.map((name) => new Option(name, name)));
    if (names.includes(chosen)) choice.value = chosen;
  }
}

async function changeProduct(command) {
  say(command.action === "switch" ? `loading and checking ${command.product}...` : "rolling back...");
  try { say((await change("/api/product", command)).message); refreshLive(); }
  catch (error) { say(error.message, true); }
}

function startLive() {
  refreshLive();
  setInterval(refreshLive, 500);
  if ($("products")) {
    $("switch-button").onclick = () => changeProduct({ action: "switch", product: $("product-choice").value,
                                                       by: $("product-by").value });
    $("rollback-button").onclick = () => changeProduct({ action: "rollback", by: $("product-by").value });
  }
}

let proposalId = null;

async function watchCollection() {
  const state = await getJson("/api/collect");
  $("collect-progress").textContent = state.wanted ? `${state.collected} of ${state.wanted} parts collected` + (state.done ? " - done" : "") : "";
  if (state.wanted && !state.done) setTimeout(watchCollection, 500);
}

function startCalibrate() {
  if ($("collect-button")) {
    $("collect-button").onclick = async () => {
      try { await change("/api/collect", { parts: Number($("collect-parts").value) }); say(""); watchCollection(); }
      catch (error) { say(error.message, true); }
    };
    watchCollection();
  }
  $("propose-button").onclick = async () => {
    const fromLine = document.querySelector("input[name=good-from]:checked").value === "live";
    const request = {
      good: fromLine ? "live" : $("good-folder").value,
      defect: $("defect-folder").value,
      add_review_good: $("add-review-good").checked,
      method: $("method").value,
      target_frr: Number($("target-frr").value),
      target_recall: $("target-recall").value === "" ? null : Number($("target-recall").value),
      keep_outliers: $("keep-outliers").checked,
      ...forProduct(),
    };
    say("scoring and calculating...");
    try {
      const proposal = await change("/api/propose", request);
      proposalId = proposal.id;
      $("proposal").hidden = false;
      $("proposal-threshold").textContent = fmt(proposal.threshold);
      $("proposal-lines").textContent = proposal.lines.join("\n");
      $("proposal-plot").src = `/api/proposals/${proposal.id}/plot.png`;
      say("");
    } catch (error) { say(error.message, true); }
  };
  $("save-button").onclick = async () => {
    try {
      const record = await change("/api/save", { proposal: proposalId, note: $("note").value, saved_by: $("saved-by").value });
      say(`saved: the line now uses threshold ${fmt(record.threshold)} (${record.created})`);
    } catch (error) { say(error.message, true); }
  };
}

const markedText = (label) => ({ good: "marked: false reject", defect: "marked: real defect" })[label] || "";

async function refreshReview() {
  const pictures = await getJson("/api/review");
  $("no-pictures").hidden = pictures.length > 0;
  $("pictures").replaceChildren(...pictures.map((picture) => {
    const card = document.createElement("figure");
    card.className = `picture ${picture.label || ""}`;
    card.innerHTML = `<img src="/api/review/${encodeURIComponent(picture.id)}.png" alt="NG part">
      <figcaption>#${picture.frame} score ${fmt(picture.score)} (threshold ${fmt(picture.threshold)})<br>${picture.time}
      ${picture.earlier ? "<i>earlier run</i>" : ""} <b class="label">${markedText(picture.label)}</b><br>
      <button data-label="good">False reject</button> <button data-label="defect">Real defect</button></figcaption>`;
    card.querySelectorAll("button").forEach((button) => button.onclick = async () => {
      try {  // update this card only: the others stay where the technician sees them
        await change(`/api/review/${encodeURIComponent(picture.id)}`, { label: button.dataset.label, ...forProduct() });
        card.className = `picture ${button.dataset.label}`;
        card.querySelector(".label").textContent = markedText(button.dataset.label);
        say("");
      } catch (error) { say(error.message, true); }
    });
    return card;
  }));
}

function percent(rate, key) { return rate && rate[key] !== undefined ? `${(100 * rate[key]).toFixed(2)}%` : "-"; }

async function refreshHistory() {
  const history = await getJson("/api/history"), rows = history.entries;
  if (history.active_problem) say(`${history.active_problem}. Roll back to a threshold below.`, true);
  $("history-rows").replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    if (row.active) tr.className = "active";
    const rates = row.rates || {}, fr = rates.false_reject, recall = rates.recall;
    const cells = [row.created || row.file, row.problem ? row.threshold ?? "-" : fmt(row.threshold), row.method, `${percent(fr, "estimate")} (${percent(fr, "upper")})`,
      recall ? `${percent(recall, "estimate")} (>= ${percent(recall, "lower")})` : "-",
      Object.entries(row.counts || {}).filter(([k]) => k === "good" || k === "defect").map(([k, v]) => `${v} ${k}`).join(", "),
      row.saved_by, row.note];
    cells.forEach((text) => { const td = document.createElement("td"); td.textContent = text; tr.append(td); });
    const action = document.createElement("td");
    if (row.active) action.textContent = "active";
    else if (row.problem) { action.textContent = "cannot be used"; action.title = row.problem; }
    else if (!row.same_model) action.textContent = "other model, backend or precision";
    else {
      const button = document.createElement("button");
      button.textContent = "Roll back";
      button.onclick = async () => {
        try {
          const record = await change("/api/rollback", { file: row.file, saved_by: prompt("your name") || "", ...forProduct() });
          say(`rolled back: the line now uses threshold ${fmt(record.threshold)}`); refreshHistory();
        } catch (error) { say(error.message, true); }
      };
      action.append(button);
    }
    tr.append(action);
    return tr;
  }));
}

function startHistory() {
  refreshHistory().catch((error) => say(error.message, true));
  $("drift-button").onclick = async () => {
    try {
      const check = await getJson(`/api/drift?parts=${Number($("drift-parts").value)}`);
      $("drift-lines").textContent = check.lines.join("\n");
      $("drift-lines").className = check.drifted ? "drifted" : "steady";
    } catch (error) { say(error.message, true); }
  };
}

// -- new product: name, take parts, drop bad ones, fit, calibration, save ---------------------------

const FIT_STEPS = ["features", "coreset", "calibration"];
const teachView = { shown: 0, dropped: new Set(), plotted: false };

function resetTeachView() {
  $("teach-grid").replaceChildren();
  Object.assign(teachView, { shown: 0, plotted: false });
  teachView.dropped.clear();
}

function addThumbnail(index, name) {
  const figure = document.createElement("figure");
  figure.className = "thumb";
  figure.dataset.index = index;
  const image = document.createElement("img");
  image.src = `/api/teach/parts/${index}.jpg`;
  image.alt = name;
  const caption = document.createElement("figcaption");
  caption.textContent = name;
  figure.append(image, caption);
  figure.onclick = () => {
    const drop = !teachView.dropped.has(index);
    drop ? teachView.dropped.add(index) : teachView.dropped.delete(index);
    figure.classList.toggle("dropped", drop);
    countTeach();
  };
  $("teach-grid").append(figure);
}

let lastTeach = null;
function countTeach() {
  const state = lastTeach;
  if (!state || !state.stage) { $("teach-count").textContent = ""; return; }
  const dropped = teachView.dropped.size ? `, ${teachView.dropped.size} dropped` : "";
  const skipped = state.skipped ? ` (${state.skipped.length} unreadable, skipped: ${state.skipped.join(", ")})` : "";
  $("teach-count").textContent = `${state.taken} of ${state.wanted} parts taken${state.stage === "taking" ? "..." : ""}${dropped}${skipped}`;
}

function showTeach(state) {
  lastTeach = state;
  const stage = state.stage;
  $("teach-products").textContent = state.products;
  if (!stage) resetTeachView();
  for (; stage && teachView.shown < state.names.length; teachView.shown++) addThumbnail(teachView.shown, state.names[teachView.shown]);
  countTeach();
  $("teach-parts-section").hidden = !stage || !state.taken;
  $("fit-button").disabled = !["taken", "fitted", "failed"].includes(stage);
  $("teach-fit-section").hidden = !["fitting", "fitted", "saved"].includes(stage);
  const now = stage === "fitting" ? FIT_STEPS.indexOf(state.step) : FIT_STEPS.length;
  document.querySelectorAll(".steps li").forEach((item, index) => {
    item.className = index < now ? "done" : index === now ? "now" : "";
  });
  $("teach-step").textContent = stage === "fitting" ? `- ${state.step || "starting"}...` : "- done";
  $("teach-evidence").hidden = !state.evidence;
  if (state.evidence) {
    $("teach-threshold").textContent = fmt(state.evidence.threshold);
    $("teach-lines").textContent = state.evidence.lines.join("\n");
    if (!teachView.plotted) { $("teach-plot").src = `/api/teach/calibration.png?at=${Date.now()}`; teachView.plotted = true; }
  }
  $("save-product-button").disabled = stage !== "fitted";
  $("teach-saved").textContent = state.saved ? `saved as ${state.saved}: switch to it on the Live page (with --products) or run it with --bundle` : "";
  if (state.error) say(state.error, true);
  else if (stage && !["taking", "fitting"].includes(stage)) say("");
}

async function pollTeach() {
  const state = await getJson("/api/teach");
  showTeach(state);
  if (state.stage === "taking" || state.stage === "fitting") setTimeout(() => pollTeach().catch((error) => say(error.message, true)), 500);
}

async function teachChange(path, body, text) {
  try { say(text); showTeach(await change(path, body)); await pollTeach(); }
  catch (error) { say(error.message, true); }
}

function startTeach() {
  $("take-button").onclick = () => {
    const line = document.querySelector("input[name=teach-from]:checked").value === "line";
    resetTeachView();
    teachChange("/api/teach/take", { name: $("teach-name").value, source: line ? "line" : $("teach-folder").value,
      parts: Number($("teach-parts").value) }, "taking the parts...");
  };
  $("discard-button").onclick = () => teachChange("/api/teach/discard", {}, "");
  $("fit-button").onclick = () => {
    teachView.plotted = false;
    teachChange("/api/teach/fit", { drop: [...teachView.dropped].sort((a, b) => a - b) }, "fitting...");
  };
  $("save-product-button").onclick = () => teachChange("/api/teach/save", {}, "");
  pollTeach().catch((error) => say(error.message, true));
}

({
  live: startLive,
  calibrate: startCalibrate,
  review: () => {  // no timer: cards must not move under the technician's cursor
    const show = () => refreshReview().catch((error) => say(error.message, true));
    $("newest-button").onclick = show;
    show();
  },
  history: startHistory,
  teach: startTeach,
})[document.body.dataset.page]();
