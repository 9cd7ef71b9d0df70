"""A fuller AUTOMATIC1111 web UI API client: pick a checkpoint, a sampler and a scheduler, generate at a size, follow
the task's progress, then read the images' parameters back.

It uses only the web UI's documented routes and fields (nothing difflab-specific), so it runs unchanged against
`difflab serve` and against that web UI itself:

    difflab serve --models-dir runs &
    python examples/a1111_workflow_client.py --prompt "a coat" --sampler "DPM++ 2M" --scheduler karras
"""

import argparse
import threading
import uuid

import requests
from a1111_client import save_images  # beside this file


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--model", help="a checkpoint's title or name from /sdapi/v1/sd-models (default: the current)")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--scheduler", default="karras", help="a name or label from /sdapi/v1/schedulers")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg-scale", type=float, default=7.0)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--upscaler", default="Lanczos", help="hr_upscaler, a name from /sdapi/v1/upscalers")
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--auth", help="USER:PASS when the server requires basic auth")
    parser.add_argument("--out", default="workflow", help="file name prefix for the PNGs")
    args = parser.parse_args()

    session = requests.Session()
    session.auth = tuple(args.auth.split(":", 1)) if args.auth else None

    def call(method, route, **kwargs):
        response = session.request(method, f"{args.url}{route}", timeout=600, **kwargs)
        if not response.ok:
            raise SystemExit(f"{method} {route}: error {response.status_code}: {response.text}")
        return response.json()

    models = call("GET", "/sdapi/v1/sd-models")
    print("checkpoints:", ", ".join(m["title"] for m in models))
    print("schedulers:", ", ".join(s["label"] for s in call("GET", "/sdapi/v1/schedulers")))
    print("upscalers:", ", ".join(u["name"] for u in call("GET", "/sdapi/v1/upscalers")))
    if args.model:
        title = next((m["title"] for m in models if args.model in (m["title"], m["model_name"])), args.model)
        call("POST", "/sdapi/v1/options", json={"sd_model_checkpoint": title})
    print("model:", call("GET", "/sdapi/v1/options")["sd_model_checkpoint"])

    task = f"task({uuid.uuid4().hex[:7]}-txt2img)"
    payload = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "sampler_name": args.sampler,
               "scheduler": args.scheduler, "steps": args.steps, "cfg_scale": args.cfg_scale, "width": args.width,
               "height": args.height, "hr_upscaler": args.upscaler, "seed": args.seed, "batch_size": args.batch_size,
               "force_task_id": task}
    result = {}
    worker = threading.Thread(target=lambda: result.update(call("POST", "/sdapi/v1/txt2img", json=payload)))
    worker.start()
    while worker.is_alive():
        progress = call("POST", "/internal/progress", json={"id_task": task, "live_preview": False})
        if progress["active"]:
            print(f"progress: {progress['progress']:.0%}")
        worker.join(0.2)
    if not result:
        raise SystemExit("txt2img failed")
    done = call("POST", "/internal/progress", json={"id_task": task})
    print("task completed:", done["completed"])

    save_images(result, args.out)
    parameters = call("POST", "/sdapi/v1/png-info", json={"image": result["images"][0]})["parameters"]
    print("parameters:", ", ".join(f"{key}={value}" for key, value in parameters.items()))
    memory = call("GET", "/sdapi/v1/memory")
    print(f"server memory: {memory['ram'].get('used', 0) / 2**20:.0f} MiB resident")


if __name__ == "__main__":
    main()
