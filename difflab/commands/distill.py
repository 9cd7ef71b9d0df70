"""`difflab distill`: few-step students of a frozen teacher.

  difflab distill progressive --teacher CKPT --rounds K --teacher-steps 16   # Salimans & Ho 2022: K halvings
  difflab distill consistency --teacher CKPT                                 # Song et al. 2023: CD
  difflab distill levels STUDENT --steps 4               # a consistency model's re-noising levels, chosen by FD

An interrupted run (Ctrl-C, SIGTERM) continues exactly with the same command and --resume.
Each student is a component (OUT/.../student.safetensors) that refers to its teacher by path and sha256; sample it
with `difflab sample STUDENT` (a progressive student on its own grid, a consistency model with --sampler consistency:
on the re-noising levels `difflab distill levels` chose for it, recorded in the file, where they cover --steps).
"""

from __future__ import annotations

import argparse

from difflab.commands import BUNDLED_MODEL, positive_float, positive_int, set_threads
from difflab.distill.consistency import ConsistencyRecipe
from difflab.distill.levels import tune_levels
from difflab.distill.run import Budget, distill_consistency, distill_progressive
from difflab.prediction import PREDICTIONS

LEVELS_HELP = """Choose a consistency model's re-noising levels for multistep sampling as the consistency models
reference code does: one level at a time, each by a ternary search over the levels the model was trained at, scored by
the FD of --n samples (the same seeds in every probe) against the Fashion-MNIST test set. They are recorded in the
model's file, and `difflab sample STUDENT --sampler consistency` (or the web UI's LCM sampler) then samples on them,
with --steps K steps by default."""


def add_budget_arguments(p: argparse.ArgumentParser) -> None:
    """The loop settings every distillation or consistency run takes."""
    p.add_argument("--steps", type=positive_int("--steps"), help=f"optimizer steps (default {Budget.steps})")
    p.add_argument("--minutes", type=positive_float("--minutes"), help="wall-clock budget (stops at whichever first)")
    p.add_argument("--batch", type=positive_int("--batch"), help=f"default {Budget.batch}")
    p.add_argument("--lr", type=positive_float("--lr"), help=f"default {Budget.lr:g}")
    p.add_argument("--lr-decay", choices=["constant", "cosine"],
                   help=f"constant, or cosine to 0 at --steps (default {Budget.lr_decay})")
    p.add_argument("--ema-decay", type=float, help=f"EMA of the weights sampled from (default {Budget.ema_decay})")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true",
                   help="continue the run interrupted in --out exactly: give the flags it was started with (only "
                        "--steps and --minutes may change)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")


def budget(args: argparse.Namespace) -> Budget:
    given = {k: getattr(args, k) for k in ("steps", "minutes", "batch", "lr", "lr_decay", "ema_decay", "seed")
             if getattr(args, k) is not None}
    return Budget(**given)


def add_consistency_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", choices=["pseudo_huber", "l2"], help="d(., .) (default pseudo_huber)")
    p.add_argument("--levels", type=positive_int("--levels"), help=f"N of the fixed curriculum (default "
                                                                    f"{ConsistencyRecipe.levels})")
    p.add_argument("--mu", type=float, help=f"target EMA rate of the fixed curriculum (default {ConsistencyRecipe.mu})")


def recipe(args: argparse.Namespace, **base) -> ConsistencyRecipe:
    given = {k: getattr(args, k) for k in ("metric", "levels", "mu") if getattr(args, k, None) is not None}
    return ConsistencyRecipe(**{**base, **given})


def register(subparsers) -> None:
    p = subparsers.add_parser("distill", help="distil a few-step student from a teacher", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="method", required=True)
    pd = kinds.add_parser("progressive", help="progressive distillation (Salimans & Ho 2022)")
    pd.add_argument("--teacher", default=str(BUNDLED_MODEL), help="teacher checkpoint (default: the bundled model)")
    pd.add_argument("--rounds", type=positive_int("--rounds"), default=1, help="halvings of the grid (default 1)")
    pd.add_argument("--teacher-steps", type=positive_int("--teacher-steps"), default=16,
                    help="the teacher's DDIM steps at the start (default 16; 256 or 1024 as in the paper)")
    pd.add_argument("--grid", help="the teacher's grid kind (default: its model's, trailing on a VP schedule)")
    pd.add_argument("--prediction", choices=PREDICTIONS,
                    help="the student's output (default the teacher's; the paper predicts v)")
    pd.add_argument("--out", default="runs/progressive", help="output folder (round_K/student.safetensors)")
    add_budget_arguments(pd)
    pd.set_defaults(handler=run_progressive)
    cd = kinds.add_parser("consistency", help="consistency distillation (Song et al. 2023)")
    cd.add_argument("--teacher", default=str(BUNDLED_MODEL), help="teacher checkpoint (default: the bundled model)")
    cd.add_argument("--init", default="teacher", metavar="{teacher,scratch,STUDENT}",
                    help="start the student from the teacher's weights (default), from scratch, or from a student's "
                         "EMA weights (a new run: e.g. --lr-decay cosine and a longer --ema-decay after a constant-lr "
                         "run)")
    cd.add_argument("--prediction", choices=PREDICTIONS, default="v",
                    help="the student's network output inside the scalings (default v: an eps network's x0 = x - sigma "
                         "eps magnifies its error by sigma, and on the bundled model eps students kept 1-step FD "
                         "near 90 where v reached 10; see the README)")
    cd.add_argument("--out", default="runs/consistency", help="output folder (student.safetensors)")
    add_consistency_arguments(cd)
    add_budget_arguments(cd)
    cd.set_defaults(handler=run_consistency)
    levels = kinds.add_parser("levels", help="choose a consistency model's re-noising levels by FD",
                              description=LEVELS_HELP)
    levels.add_argument("student", help="a consistency model (difflab distill consistency, difflab train-consistency)")
    levels.add_argument("--steps", type=positive_int("--steps"), default=2,
                        help="the most sampling steps to choose levels for (default 2); fewer steps use the first ones")
    levels.add_argument("--n", type=positive_int("--n"), default=1000, help="samples per FD (default 1000)")
    levels.add_argument("--seed", type=int, default=0, help="sample i uses seed + i, in every probe (default 0)")
    levels.add_argument("--batch", type=positive_int("--batch"), default=250, help="default 250")
    levels.add_argument("--levels", type=positive_int("--levels"),
                        help="N of the Karras grid the model was trained at, for a model that does not record it")
    levels.add_argument("--threads", type=int, help="CPU threads for torch")
    levels.set_defaults(handler=run_levels)


def run_progressive(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    paths = distill_progressive(args.teacher, args.out, args.rounds, args.teacher_steps, budget(args), grid=args.grid,
                                prediction=args.prediction, resume=args.resume)
    for r, path in enumerate(paths, start=1):
        print(f"round {r}: {args.teacher_steps >> r}-step student {path}")
    return 0


def run_consistency(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    path = distill_consistency(args.teacher, args.out, recipe(args), budget(args), init=args.init,
                               prediction=args.prediction, resume=args.resume)
    print(f"consistency model {path}; sample with `difflab sample {path} --sampler consistency --steps 1`")
    return 0


def run_levels(args: argparse.Namespace) -> int:
    set_threads(args.threads)

    def report(sigmas: tuple[float, ...], fd: float) -> None:
        print(f"FD {fd:8.3f}  at {','.join(f'{s:.4g}' for s in sigmas)}", flush=True)

    chosen, _ = tune_levels(args.student, args.steps, n=args.n, seed=args.seed, batch=args.batch, levels=args.levels,
                            report=report)
    for steps in range(2, len(chosen.renoise) + 2):
        print(f"{steps} steps: --sigmas {','.join(repr(s) for s in chosen.sampling(steps))}")
    print(f"recorded in {args.student}: `difflab sample {args.student} --sampler consistency` samples on them, with "
          f"{len(chosen.renoise) + 1} steps unless --steps says fewer")
    return 0
