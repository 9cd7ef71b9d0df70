// The ControlNet panel: a control image, the preprocessor's preview (POST /controlnet/detect), the model and weight;
// controlnetScripts() gives app.js the request's alwayson_scripts, in the sd-webui-controlnet extension's shape.
"use strict";

const cn = {image: null};  // the uploaded control image as a data: URI

async function cnInit() {
  const [modules, models] = await Promise.all([api("/controlnet/module_list"), api("/controlnet/model_list")]);
  for (const name of modules.module_list) {
    const option = new Option(name, name);
    option.title = modules.module_detail[name].description;
    $("cn-module").add(option);
  }
  $("cn-model").replaceChildren(...models.model_list.map((title) => new Option(title, title)));
  const none = models.model_list.length === 0;
  $("cn-note").hidden = !none;
  for (const id of ["cn-image", "cn-module", "cn-model", "cn-weight", "cn-mode"]) $(id).disabled = none;
}

// The preprocessor's map of the uploaded image, at the model's size.
async function cnDetect() {
  if (!cn.image) return;
  try {
    const answer = await api("/controlnet/detect", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({controlnet_module: $("cn-module").value, controlnet_input_images: [cn.image]}),
    });
    $("cn-preview").src = `data:image/png;base64,${answer.images[0]}`;
    $("cn-preview").hidden = false;
  } catch (err) {
    showError(`preprocessor: ${err.message}`);
  }
}

function cnLoad() {
  const file = $("cn-image").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    cn.image = reader.result;
    $("cn-input").src = cn.image;
    $("cn-input").hidden = false;
    cnDetect();
  };
  reader.readAsDataURL(file);
}

function controlnetScripts() {
  if (!cn.image || !$("cn-model").value) return {};
  return {controlnet: {args: [{
    image: cn.image, module: $("cn-module").value, model: $("cn-model").value, weight: Number($("cn-weight").value),
    control_mode: $("cn-mode").value, resize_mode: "Crop and Resize",
  }]}};
}

$("cn-image").addEventListener("change", cnLoad);
$("cn-module").addEventListener("change", cnDetect);
$("cn-weight").addEventListener("input", () => { $("cn-weight-value").textContent = $("cn-weight").value; });
$("cn-clear").addEventListener("click", () => {
  cn.image = null;
  $("cn-image").value = "";
  $("cn-input").hidden = $("cn-preview").hidden = true;
});
cnInit().catch((err) => showError(`ControlNet: ${err.message}`));
