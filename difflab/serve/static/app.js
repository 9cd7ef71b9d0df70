// difflab web page: fills the form from the server, posts /sdapi/v1/txt2img (or img2img, img2img.js), polls
// /sdapi/v1/progress meanwhile.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;
let polling = null;

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

async function init() {
  try {
    const [models, options, samplers, schedulers] = await Promise.all(
      [api("/sdapi/v1/sd-models"), api("/sdapi/v1/options"), api("/sdapi/v1/samplers"), api("/sdapi/v1/schedulers")]);
    for (const m of models) $("model-select").add(new Option(m.title, m.title));
    $("model-select").value = options.sd_model_checkpoint;
    for (const s of samplers) $("sampler").add(new Option(s.name, s.name));
    for (const s of schedulers) $("scheduler").add(new Option(s.label, s.label));  // Automatic first
    await hiresInit(models, samplers, schedulers);  // hires.js
    await configure();
    await listNetworks();
  } catch (err) {
    showError(`cannot reach the server: ${err.message}`);
  }
}

// The server's LoRAs and embeddings (GET /sdapi/v1/loras, /sdapi/v1/embeddings): a click adds one to the prompt.
async function listNetworks() {
  const [loras, embeddings] = await Promise.all([api("/sdapi/v1/loras"), api("/sdapi/v1/embeddings")]);
  const items = [...loras.map((l) => [`LoRA ${l.name}`, `<lora:${l.name}:1>`]),
                 ...Object.keys(embeddings.loaded).map((token) => [`embedding ${token}`, token])];
  $("networks").replaceChildren(...items.map(([label, text]) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.title = `add ${text} to the prompt`;
    button.addEventListener("click", () => { $("prompt").value = `${$("prompt").value.trim()} ${text}`.trim(); });
    return button;
  }));
  $("networks").hidden = items.length === 0;
}

// The form for the current model: its conditioning decides between a prompt, a class list or neither.
async function configure() {
  const info = await api("/difflab/v1/model");
  model = info;
  $("class").replaceChildren();
  $("prompt-row").hidden = false;
  $("class-row").hidden = true;
  $("conditioning-note").hidden = true;
  $("negative").disabled = $("cfg").disabled = false;
  $("model").textContent = `${info.name} · ${info.width}×${info.height}` +
    {class: ` · ${(info.class_names || []).length} classes`, text: " · text prompts", none: " · unconditional"}[info.conditioning];
  $("steps").max = info.max_steps;
  $("batch").max = info.max_images;
  $("seed").max = info.max_seed;
  $("cfg").value = info.default_cfg_scale;
  if (info.conditioning === "class") {
    $("prompt-row").hidden = true;
    $("class-row").hidden = false;
    $("class").add(new Option("any class (unconditional)", ""));
    for (const name of info.class_names) $("class").add(new Option(name, name));
  } else if (info.conditioning === "none") {
    $("conditioning-note").hidden = false;
    $("conditioning-note").textContent =
      `${info.name} is unconditional: a prompt is accepted but does not steer the image.`;
  }
  sizeEditor(info);  // img2img.js: the image and mask canvases at the model's size
  if (info.conditioning === "none") {
    $("negative").disabled = $("cfg").disabled = true;
    $("negative").placeholder = "needs a conditional model";
  } else if (info.conditioning === "text") {
    $("prompt").placeholder = "e.g. a dark ankle boot, some jeans, a sandal for summer";
    $("negative").placeholder = "text to steer away from (with CFG scale > 1)";
  } else {
    $("negative").placeholder = "a class to steer away from (with CFG scale > 1)";
  }
}

// Switch checkpoints as the web UI does: POST /sdapi/v1/options, which the server queues between requests.
async function switchModel() {
  showError("");
  $("generate").disabled = $("model-select").disabled = true;
  $("model").textContent = "loading model…";
  try {
    await api("/sdapi/v1/options", {method: "POST", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify({sd_model_checkpoint: $("model-select").value})});
    await configure();
  } catch (err) {
    showError(err.message);
  } finally {
    $("generate").disabled = $("model-select").disabled = false;
  }
}

function setProgress(fraction, text, state) {
  $("progress").value = fraction;
  $("progress").dataset.state = state;
  $("progress-text").textContent = text;
}

async function poll() {
  try {
    const p = await api("/sdapi/v1/progress");
    const s = p.state;
    if (polling === null || s.job_count === 0) return;  // the request finished while this poll was in flight
    const batch = s.job_count > 1 ? ` · batch ${s.job_no + 1}/${s.job_count}` : "";
    const queued = s.queued ? ` · ${s.queued} queued` : "";
    setProgress(p.progress, `step ${s.sampling_step}/${s.sampling_steps}${batch}${queued}`, "running");
    if (p.current_image) {
      $("preview").src = `data:image/png;base64,${p.current_image}`;
      $("preview").hidden = false;
    }
  } catch (err) {
    // a missed poll only delays the bar; the request itself reports errors
  }
}

function request() {
  const conditional = model && model.conditioning === "class";
  return {
    prompt: conditional ? $("class").value : $("prompt").value,
    negative_prompt: $("negative").value,
    sampler_name: $("sampler").value,
    scheduler: $("scheduler").value,
    steps: Number($("steps").value),
    cfg_scale: Number($("cfg").value),
    seed: Number($("seed").value),
    batch_size: Number($("batch").value),
    n_iter: 1,
    alwayson_scripts: controlnetScripts(),  // controlnet.js
    ...hiresRequest(),  // hires.js
  };
}

function addCards(result) {
  const info = JSON.parse(result.info);
  const cards = document.createDocumentFragment();
  $("gallery").querySelector(".empty")?.remove();
  result.images.forEach((image, i) => {
    const seed = info.all_seeds[i];
    const src = `data:image/png;base64,${image}`;
    const card = document.createElement("figure");
    card.className = "card";
    card.innerHTML = `<img alt="generated image, seed ${seed}"><figcaption class="meta"></figcaption>` +
      `<a class="download">Download PNG</a>`;
    card.querySelector("img").src = src;
    const meta = card.querySelector(".meta");
    const fields = [["Seed", seed], ["Sampler", info.sampler_name], ["Schedule type", info.scheduler],
                    ["Steps", info.steps], ["Size", `${info.width}×${info.height}`]];
    if (info.prompt) fields.unshift([model.conditioning === "text" ? "Prompt" : "Class", info.prompt]);
    meta.innerHTML = fields.map(([k]) => `<b>${k}:</b> <span data-key="${k}"></span>`).join("<br>");
    for (const [k, v] of fields) meta.querySelector(`[data-key="${k}"]`).textContent = v;
    for (const warning of info.warnings) {
      const line = document.createElement("div");
      line.className = "warn";
      line.textContent = warning;
      meta.append(line);
    }
    const infotext = document.createElement("pre");  // the generation parameters, as the web UI prints them
    infotext.className = "infotext";
    infotext.textContent = info.infotexts[i];
    meta.after(infotext);
    const link = card.querySelector("a");
    link.href = src;
    link.download = `difflab-${info.sd_model_name}-${seed}.png`;
    cards.append(card);
  });
  $("gallery").prepend(cards);  // newest request first, its images in seed order
  return info;
}

async function generate(event) {
  event.preventDefault();
  showError("");
  $("generate").disabled = true;
  $("interrupt").disabled = false;
  setProgress(0, "starting…", "running");
  const started = performance.now();
  polling = setInterval(poll, 250);
  try {
    const edit = editRequest();  // img2img.js: the init image and mask, or null for txt2img
    const result = await api(edit ? "/sdapi/v1/img2img" : "/sdapi/v1/txt2img", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({...request(), ...edit}),
    });
    const info = addCards(result);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setProgress(1, `${info.interrupted ? "interrupted" : "done"}: ${result.images.length} image(s) in ${seconds} s`,
                "done");
  } catch (err) {
    setProgress(0, "failed", "error");
    showError(err.message);
  } finally {
    clearInterval(polling);
    polling = null;
    $("generate").disabled = false;
    $("interrupt").disabled = true;
    $("preview").hidden = true;
  }
}

$("form").addEventListener("submit", generate);
$("model-select").addEventListener("change", switchModel);
$("dice").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 32); });
$("interrupt").addEventListener("click", () => api("/sdapi/v1/interrupt", {method: "POST"}).catch(() => {}));
init();
