// The Hires. fix panel of the txt2img tab: sample, upscale (a latent upscaler or a super-resolution model), then
// denoise again at the larger size. Loaded before app.js, which calls hiresInit() with the server's checkpoints,
// samplers and schedulers and takes hiresRequest()'s txt2img fields (enable_hr, hr_*; {} when off).
"use strict";

const hr = (id) => document.getElementById(id);

const SAME_SAMPLER = "Use same sampler";
const SAME_SCHEDULER = "Use same scheduler";
const SAME_CHECKPOINT = "Use same checkpoint";

async function hiresInit(models, samplers, schedulers) {
  const [modes, upscalers] = await Promise.all([api("/sdapi/v1/latent-upscale-modes"), api("/sdapi/v1/upscalers")]);
  const srModels = upscalers.filter((u) => u.model_name !== null);  // super-resolution models (--upscaler-dir)
  hr("hr-upscaler").replaceChildren(...[...modes, ...srModels].map((u) => new Option(u.name, u.name)));
  hr("hr-checkpoint").replaceChildren(
    ...[SAME_CHECKPOINT, ...models.map((m) => m.title)].map((n) => new Option(n, n)));
  hr("hr-sampler").replaceChildren(...[SAME_SAMPLER, ...samplers.map((s) => s.name)].map((n) => new Option(n, n)));
  hr("hr-scheduler").replaceChildren(
    ...[SAME_SCHEDULER, ...schedulers.map((s) => s.label)].map((n) => new Option(n, n)));
}

function hiresShow() {
  hr("hires").hidden = hr("mode-img2img").checked;  // a txt2img field
  hr("hires-fields").hidden = hr("hires-prompts").hidden = !hr("hr-enable").checked;
}

function hiresRequest() {
  if (hr("hires").hidden || !hr("hr-enable").checked) return {};
  return {
    enable_hr: true, hr_upscaler: hr("hr-upscaler").value, hr_scale: Number(hr("hr-scale").value),
    hr_second_pass_steps: Number(hr("hr-steps").value), denoising_strength: Number(hr("hr-strength").value),
    hr_checkpoint_name: hr("hr-checkpoint").value, hr_sampler_name: hr("hr-sampler").value,
    hr_scheduler: hr("hr-scheduler").value,
    hr_prompt: hr("hr-prompt").value, hr_negative_prompt: hr("hr-negative").value,
  };
}

for (const id of ["hr-enable", "mode-txt2img", "mode-img2img"]) hr(id).addEventListener("change", hiresShow);
hr("hr-strength").addEventListener("input", () => { hr("hr-strength-value").textContent = hr("hr-strength").value; });
hiresShow();
