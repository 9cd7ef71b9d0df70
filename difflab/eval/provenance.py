"""Which model a kept measurement came from. A bench report that grows over several runs records the bytes of its
model (sha256), and a run of another model, even one at the same path, may not add its results to it; a folder of
cached samples records the models that drew them the same way."""

from __future__ import annotations

import json
from pathlib import Path

from difflab.errors import DifflabError
from difflab.images import atomic_write
from difflab.train.checkpoint import sha256_file


def model_record(path: str | Path) -> dict[str, str]:
    """What a report keeps of the model it measured: its path (relative to the working directory where it lies
    below it, so a report stays valid in another checkout) and the sha256 of its file."""
    path, here = Path(path), Path.cwd().resolve()
    if not path.is_file():
        raise DifflabError(f"model {path} not found")
    shown = path.resolve().relative_to(here) if path.resolve().is_relative_to(here) else path
    return {"model": str(shown), "model_sha256": sha256_file(path)}


def refusal(report_path: str | Path, recorded: dict, model: dict[str, str], flag: str) -> str | None:
    """Why a run of `model` may not add to the report at `report_path`, which recorded `recorded` (its
    model_record); None where it may. `flag` is the bench's option for another report."""
    if recorded.get("model_sha256") == model["model_sha256"]:
        return None
    return (f"{report_path} holds results of another model ({recorded.get('model')}, sha256 "
            f"{str(recorded.get('model_sha256'))[:12]}), not of {model['model']} "
            f"(sha256 {model['model_sha256'][:12]}): give another {flag}")


def claim_samples(folder: str | Path, models: dict[str, str | Path], settings: dict, flag: str) -> None:
    """Let a bench reuse the samples it cached in `folder` by name only where the same `models` (role ->
    checkpoint) drew them with the same `settings` (n, sampler, steps, seed...): the folder's models.json records
    both, and a run that differs in a recorded role or setting stops with the reason before it reads or draws."""
    ledger = Path(folder) / "models.json"
    recorded = json.loads(ledger.read_text()) if ledger.is_file() else {"models": {}, "settings": {}}
    current = {role: model_record(path) for role, path in models.items()}
    for role, record in current.items():
        if role in recorded["models"] and (problem := refusal(folder, recorded["models"][role], record, flag)):
            raise DifflabError(f"{role}: {problem}")
    for key, value in settings.items():
        if recorded["settings"].get(key, value) != value:
            raise DifflabError(f"{folder} holds samples drawn with {key} {recorded['settings'][key]}, not {value}: "
                               f"give another {flag}")
    ledger_text = json.dumps({"models": {**recorded["models"], **current},
                              "settings": {**recorded["settings"], **settings}}, indent=1) + "\n"
    atomic_write(ledger, lambda f: f.write(ledger_text.encode()))
