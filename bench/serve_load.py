"""Load check for `difflab serve`: start a server on 127.0.0.1, send N concurrent txt2img requests, and check that
each completes or gets 503 with Retry-After, that /sdapi/v1/progress stays quick meanwhile, and that the server's
resident memory returns near its baseline afterwards. Prints the figures; exits 1 when a check fails.

    python bench/serve_load.py [CKPT] [--requests 20] [--steps 20] [--batch-size 4] [--queue-size 4]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from difflab.commands import BUNDLED_MODEL
from difflab.errors import run_script

RSS_SLACK_MIB = 64  # after the burst, RSS may exceed the warmed-up baseline by this much
PROBE_LIMIT_S = 0.5  # the slowest /progress answer allowed during the burst


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: str, queue_size: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "difflab", "serve", checkpoint, "--host", "127.0.0.1",
                                "--port", str(port), "--queue-size", str(queue_size), "--threads", str(threads)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            requests.get(f"{url}/sdapi/v1/progress", timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not come up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(BUNDLED_MODEL))
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    args = parser.parse_args()

    process, url = start_server(args.checkpoint, args.queue_size, args.threads)
    body = {"steps": args.steps, "batch_size": args.batch_size, "sampler_name": "DPM++ 2M Karras"}
    try:
        requests.post(f"{url}/sdapi/v1/txt2img", json={**body, "seed": 0}, timeout=300).raise_for_status()  # warm-up
        baseline = rss_mib(process.pid)
        probes: list[float] = []
        peak = [baseline]
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                start = time.perf_counter()
                requests.get(f"{url}/sdapi/v1/progress", timeout=10).raise_for_status()
                probes.append(time.perf_counter() - start)
                peak[0] = max(peak[0], rss_mib(process.pid))
                time.sleep(0.1)

        def send(i: int) -> tuple[int, str | None, float]:
            start = time.perf_counter()
            r = requests.post(f"{url}/sdapi/v1/txt2img", json={**body, "seed": 1000 * i}, timeout=600)
            return r.status_code, r.headers.get("Retry-After"), time.perf_counter() - start

        prober = threading.Thread(target=probe)
        prober.start()
        start = time.perf_counter()
        with ThreadPoolExecutor(args.requests) as pool:
            results = list(pool.map(send, range(args.requests)))
        wall = time.perf_counter() - start
        done.set()
        prober.join()
        time.sleep(2)
        after = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(30)

    statuses = Counter(status for status, _, _ in results)
    served = [seconds for status, _, seconds in results if status == 200]
    retry_after = sorted({int(r) for status, r, _ in results if status == 503 and r is not None})
    checks = {
        "every request answered 200 or 503": set(statuses) <= {200, 503},
        "every 503 carried Retry-After": all(r is not None for status, r, _ in results if status == 503),
        "at least 1 + queue-size requests served": statuses[200] >= min(args.requests, 1 + args.queue_size),
        f"/progress answered within {PROBE_LIMIT_S} s": max(probes) < PROBE_LIMIT_S,
        f"RSS back within {RSS_SLACK_MIB} MiB of baseline": after - baseline < RSS_SLACK_MIB,
    }
    print(f"{args.requests} concurrent requests ({args.batch_size} images x {args.steps} steps each, queue "
          f"{args.queue_size}) in {wall:.1f} s")
    print(f"  status counts:   {dict(statuses)}; Retry-After values: {retry_after}")
    print(f"  served latency:  median {statistics.median(served):.2f} s, max {max(served):.2f} s")
    print(f"  /progress:       {len(probes)} probes, median {1000 * statistics.median(probes):.1f} ms, "
          f"max {1000 * max(probes):.1f} ms")
    print(f"  RSS (MiB):       baseline {baseline:.0f}, peak {peak[0]:.0f}, after {after:.0f}")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    run_script(main)
