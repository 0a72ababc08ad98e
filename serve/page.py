"""The web page at the app's root: pick a served model, type a prompt or pick a class, choose
steps (and solver, guidance, seed), see the images. A few-step model (a consistency model or an
LCM: ``compare_steps`` in its description) shows rows at 1, 2 and 4 steps for one seed. Plain
HTML + fetch() against the same API a program uses; relative URLs under a <base> of the app's
route prefix."""

from __future__ import annotations

import html

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<base href="__BASE__">
<title>diffusion-zoo</title>
<link rel="icon" href="data:,">
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 56rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .sub { color: #666; margin-top: 0; }
  form { display: grid; grid-template-columns: max-content 1fr; gap: .5rem 1rem; align-items: center;
         background: #f6f6f8; padding: 1rem; border-radius: 8px; }
  label { font-weight: 600; }
  input, select { font: inherit; padding: .25rem .4rem; max-width: 22rem; }
  .hidden { display: none; }
  button { font: inherit; padding: .4rem 1.2rem; cursor: pointer; grid-column: 2; justify-self: start; }
  #status { color: #555; margin: 1rem 0 .5rem; min-height: 1.4em; }
  #error { color: #a40000; background: #fff0f0; padding: .5rem .8rem; border-radius: 6px; white-space: pre-wrap; }
  #error:empty { display: none; }
  #images .row { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 8px; }
  #images .caption { width: 5rem; font-weight: 600; }
  #images img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ccc; background: #fff; }
  small { color: #777; }
</style>
</head>
<body>
<h1>diffusion-zoo</h1>
<p class="sub">Models served from their training spec. API: <a href="docs">docs</a> &middot; <a href="openapi.json">openapi.json</a></p>
<form id="form">
  <label for="model">Model</label>
  <select id="model"></select>
  <label for="label" class="cond-label hidden">Class</label>
  <select id="label" class="cond-label hidden"></select>
  <label for="prompt" class="cond-prompt hidden">Prompt</label>
  <input id="prompt" class="cond-prompt hidden" type="text" placeholder="a photo of ...">
  <label for="compare" class="few hidden">Compare</label>
  <span class="few hidden"><input id="compare" type="checkbox" checked> <small id="compare-hint"></small></span>
  <label for="steps">Steps</label>
  <span><input id="steps" type="number" min="1"> <small id="steps-hint"></small></span>
  <label for="n">Images</label>
  <span><input id="n" type="number" min="1" value="4"> <small id="n-hint"></small></span>
  <label for="solver">Solver</label>
  <select id="solver"></select>
  <label for="guidance" class="guided hidden">Guidance</label>
  <input id="guidance" class="guided hidden" type="number" min="0" step="0.5">
  <label for="seed">Seed</label>
  <input id="seed" type="number" min="0" placeholder="random">
  <button id="generate" type="submit">Generate</button>
</form>
<div id="status"></div>
<div id="error" role="alert"></div>
<div id="images"></div>
<script>
let models = {};
const $ = (id) => document.getElementById(id);
function show(cls, on) { document.querySelectorAll("." + cls).forEach(e => e.classList.toggle("hidden", !on)); }

async function load() {
  const r = await fetch("v1/models");
  const body = await r.json();
  const sel = $("model");
  for (const m of body.models) {
    models[m.name] = m;
    sel.add(new Option(m.name + " (" + m.width + "x" + m.height + ", " + m.conditioning + ")", m.name));
  }
  pick();
  $("status").textContent = body.models.length + " model(s) served";
}

function pick() {
  const m = models[$("model").value];
  if (!m) return;
  show("cond-label", m.conditioning === "label");
  show("cond-prompt", m.conditioning === "prompt");
  show("guided", m.guidance);
  const lab = $("label");
  lab.innerHTML = "";
  lab.add(new Option("none (unconditional)", ""));
  for (let c = 0; c < (m.num_classes || 0); c++) lab.add(new Option(String(c), String(c)));
  $("steps").value = m.default_steps;
  $("steps").max = m.limits.max_steps;
  $("steps-hint").textContent = "max " + m.limits.max_steps;
  $("n").max = m.limits.max_n;
  $("n-hint").textContent = "max " + m.limits.max_n;
  const sol = $("solver");
  sol.innerHTML = "";
  for (const s of m.limits.solvers) sol.add(new Option(s, s, false, s === m.default_solver.kind));
  $("guidance").value = m.default_guidance;
  show("few", m.compare_steps.length > 0);
  $("compare").checked = m.compare_steps.length > 0;
  $("compare-hint").textContent = m.compare_steps.join(" / ") + " steps side by side, one seed";
  $("steps").disabled = $("compare").checked;
}

function post(m, req) {
  return fetch(m.generate, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(req) })
    .then(async (r) => [r, await r.json()]);
}

async function generate(ev) {
  ev.preventDefault();
  const m = models[$("model").value];
  const req = { n: Number($("n").value), steps: Number($("steps").value), format: "base64" };
  if ($("solver").value !== m.default_solver.kind) req.solver = $("solver").value;
  if (m.conditioning === "label" && $("label").value !== "") req.label = Number($("label").value);
  if (m.conditioning === "prompt") req.prompt = $("prompt").value;
  if (m.guidance) req.guidance = Number($("guidance").value);
  if ($("seed").value !== "") req.seed = Number($("seed").value);
  const compare = m.compare_steps.length > 0 && $("compare").checked;
  if (compare && req.seed === undefined) req.seed = Math.floor(Math.random() * 2 ** 31);  // one seed for every row
  const plan = compare ? m.compare_steps : [req.steps];
  $("error").textContent = "";
  $("status").textContent = "generating...";
  $("generate").disabled = true;
  const t0 = performance.now();
  try {
    const answers = await Promise.all(plan.map((k) => post(m, { ...req, steps: k })));
    const failed = answers.find(([r]) => !r.ok);
    if (failed) {
      $("status").textContent = "";
      $("images").innerHTML = "";
      $("error").textContent = "HTTP " + failed[0].status + ": " + failed[1].detail;
      return;
    }
    const box = $("images");
    box.innerHTML = "";
    for (const [, body] of answers) {
      const row = document.createElement("div");
      row.className = "row";
      if (compare) {
        const cap = document.createElement("span");
        cap.className = "caption";
        cap.textContent = body.steps + (body.steps === 1 ? " step" : " steps");
        row.appendChild(cap);
      }
      for (const b64 of body.images) {
        const img = document.createElement("img");
        img.className = "sample";
        img.alt = m.name + " sample, " + body.steps + " steps";
        img.dataset.steps = body.steps;
        img.src = "data:image/png;base64," + b64;
        row.appendChild(img);
      }
      box.appendChild(row);
    }
    const body = answers[0][1], secs = ((performance.now() - t0) / 1000).toFixed(2) + " s";
    $("status").textContent = compare
      ? body.n + " image(s) at each of " + plan.join(" / ") + " steps, seed " + body.seed + ", " + secs
      : body.n + " image(s), seed " + body.seed + ", " + body.steps + " steps, " + secs +
        " (batched with " + (body.batch.requests - 1) + " other request(s))";
  } catch (e) {
    $("error").textContent = String(e);
    $("status").textContent = "";
  } finally {
    $("generate").disabled = false;
  }
}
$("form").addEventListener("submit", generate);
$("model").addEventListener("change", pick);
$("compare").addEventListener("change", () => { $("steps").disabled = $("compare").checked; });
load();
</script>
</body>
</html>
"""


def render(root_path: str) -> str:
    """The page with its <base> at the app's route prefix (so it works under any prefix)."""
    return PAGE.replace("__BASE__", html.escape(root_path.rstrip("/") + "/", quote=True))
