// difflab web page, img2img / inpaint tab: an uploaded image at the model's size, a mask painted on a canvas over it,
// and the fields POST /sdapi/v1/img2img takes. app.js calls editRequest() when generating and sizeEditor() per model.
"use strict";

const editor = {
  el: (id) => document.getElementById(id),
  painted: false,  // whether the mask has any stroke (no stroke: plain img2img)
  painting: false,
  loaded: false,   // whether an image was uploaded
};

function editMode() {
  return editor.el("mode-img2img").checked;
}

function showMode() {
  editor.el("edit-panel").hidden = !editMode();
  editor.el("generate").textContent = editMode() ? "Edit" : "Generate";
}

// Both canvases hold the model's pixels (the page shows them enlarged): the image, and the mask (white = repaint).
function sizeEditor(info) {
  for (const id of ["init-canvas", "mask-canvas"]) {
    editor.el(id).width = info.width;
    editor.el(id).height = info.height;
  }
  editor.channels = info.channels;
  clearMask();
  if (editor.image) drawImage(editor.image);
}

function clearMask() {
  const mask = editor.el("mask-canvas").getContext("2d");
  mask.fillStyle = "#000";
  mask.fillRect(0, 0, mask.canvas.width, mask.canvas.height);
  editor.painted = false;
  editor.el("mask-state").textContent = "no mask: the whole image is edited";
}

// The upload stretched to the model's size on an opaque background, grey for a one-channel model.
function drawImage(image) {
  const canvas = editor.el("init-canvas");
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  if (editor.channels === 1) {
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
    const d = pixels.data;
    for (let i = 0; i < d.length; i += 4) {
      d[i] = d[i + 1] = d[i + 2] = Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]);  // ITU-R 601 luma
    }
    context.putImageData(pixels, 0, 0);
  }
  editor.loaded = true;
}

function loadFile() {
  const file = editor.el("init-file").files[0];
  if (!file) return;
  const image = new Image();
  image.onload = () => { editor.image = image; drawImage(image); clearMask(); };
  image.src = URL.createObjectURL(file);
}

function paint(event) {
  if (!editor.painting) return;
  const canvas = editor.el("mask-canvas");
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * canvas.width / box.width;
  const y = (event.clientY - box.top) * canvas.height / box.height;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.beginPath();
  context.arc(x, y, Number(editor.el("brush").value) / 2, 0, 2 * Math.PI);
  context.fill();
  editor.painted = true;
  editor.el("mask-state").textContent = "inpainting: only the white region is repainted";
}

const base64Of = (canvas) => canvas.toDataURL("image/png").split(",")[1];

// The img2img fields of the request, or null in txt2img mode; an error when no image was uploaded.
function editRequest() {
  if (!editMode()) return null;
  if (!editor.loaded) throw new Error("upload an image to edit first");
  const body = {
    init_images: [base64Of(editor.el("init-canvas"))],
    denoising_strength: Number(editor.el("strength").value),
    resize_mode: 0,
  };
  if (editor.painted) {
    Object.assign(body, {
      mask: base64Of(editor.el("mask-canvas")), mask_blur: Number(editor.el("mask-blur").value),
      inpainting_fill: 1, inpaint_full_res: false, difflab_inpaint_method: editor.el("inpaint-method").value,
    });
  }
  return body;
}

for (const id of ["mode-txt2img", "mode-img2img"]) editor.el(id).addEventListener("change", showMode);
editor.el("init-file").addEventListener("change", loadFile);
editor.el("clear-mask").addEventListener("click", clearMask);
editor.el("strength").addEventListener("input", () => {
  editor.el("strength-value").textContent = Number(editor.el("strength").value).toFixed(2);
});
editor.el("mask-canvas").addEventListener("pointerdown", (event) => {
  editor.painting = true;
  editor.el("mask-canvas").setPointerCapture(event.pointerId);
  paint(event);
});
editor.el("mask-canvas").addEventListener("pointermove", paint);
editor.el("mask-canvas").addEventListener("pointerup", () => { editor.painting = false; });
