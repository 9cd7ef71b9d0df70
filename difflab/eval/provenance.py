"""Which model a kept measurement came from. A bench report that grows over several runs records the bytes of its
model (sha256), and a run of another model, even one at the same path, may not add its results to it."""

from __future__ import annotations

from pathlib import Path

from difflab.train.checkpoint import sha256_file


def model_record(path: str | Path) -> dict[str, str]:
    """What a report keeps of the model it measured: its path and the sha256 of its file."""
    return {"model": str(path), "model_sha256": sha256_file(path)}


def refusal(report_path: str | Path, recorded: dict, model: dict[str, str], flag: str) -> str | None:
    """Why a run of `model` may not add to the report at `report_path`, which recorded `recorded` (its
    model_record); None where it may. `flag` is the bench's option for another report."""
    if recorded.get("model_sha256") == model["model_sha256"]:
        return None
    return (f"{report_path} holds results of another model ({recorded.get('model')}, sha256 "
            f"{str(recorded.get('model_sha256'))[:12]}), not of {model['model']} "
            f"(sha256 {model['model_sha256'][:12]}): give another {flag}")
