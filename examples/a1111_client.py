"""Generate images through the AUTOMATIC1111 web UI API, the way client scripts for it are usually written.

Runs unchanged against `difflab serve` (and against that web UI itself):

    difflab serve &
    python examples/a1111_client.py --prompt "a coat" --steps 20 --batch-size 4
"""

import argparse
import base64
import json

import requests


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--auth", help="USER:PASS when the server runs with --api-auth")
    parser.add_argument("--out", default="txt2img", help="file name prefix for the PNGs")
    args = parser.parse_args()

    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    response = requests.get(f"{args.url}/sdapi/v1/samplers", auth=auth, timeout=30)
    response.raise_for_status()
    samplers = [s["name"] for s in response.json()]
    print("samplers:", ", ".join(samplers))

    payload = {
        "prompt": args.prompt,
        "steps": args.steps,
        "sampler_name": args.sampler,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    response = requests.post(f"{args.url}/sdapi/v1/txt2img", json=payload, auth=auth, timeout=600)
    if not response.ok:
        raise SystemExit(f"error {response.status_code}: {response.json().get('detail')}")
    info = save_images(response.json(), args.out)
    for warning in info.get("warnings", []):
        print("warning:", warning)


def save_images(result: dict, prefix: str) -> dict:
    """Write a txt2img answer's images as PREFIX-i.png, print each with its seed; return the answer's info."""
    info = json.loads(result["info"])
    for i, image in enumerate(result["images"]):
        path = f"{prefix}-{i}.png"
        with open(path, "wb") as f:
            f.write(base64.b64decode(image))
        print(f"{path}: seed {info['all_seeds'][i]}")
    return info


if __name__ == "__main__":
    main()
