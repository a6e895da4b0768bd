"""``--report-to tensorboard,wandb``: mirror every metrics row to the loggers people already use.

``metrics.jsonl`` stays the source of truth; a tracker only receives the rows as ``run_stage``
writes them. Each numeric field of a row becomes one scalar named
``seed{seed}/{order}/{stage}/{metric}``, so TRL's names (``reward``, ``kl``, ``entropy``,
``clip_ratio/...``) stay the leaf and the stages of a run do not mix:

- TensorBoard: ``tensorboardX.SummaryWriter`` event files in ``OUT/tensorboard``, at the stage's
  own step;
- Weights & Biases: one ``wandb`` run in ``OUT/wandb`` whose config is the run's config. W&B needs
  a step that only grows, so the row's position in the run is W&B's step and the stage step is
  logged beside it. ``WANDB_MODE=offline`` works without a network (``wandb sync`` uploads later).

Both libraries come with the ``[track]`` extra (and the test extra). Simplification: a resumed run
logs the rows it writes again from its checkpoint on; the trackers do not dedupe.
"""

from __future__ import annotations

import importlib.util
import os

from theory.errors import InputError

TRACKERS = {"tensorboard": "tensorboardX", "wandb": "wandb"}
_KEYS = ("seed", "order", "stage", "step")


def check_report_to(names) -> None:
    """Unknown trackers and missing libraries are an InputError before anything is written."""
    for name in names:
        if name not in TRACKERS:
            raise InputError(f"setting --report-to {name!r}: choose from {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise InputError(f"setting --report-to {name}: needs the {TRACKERS[name]} package "
                             "(pip install 'sft-rl-coupling[track]')")


def scalars(row: dict) -> dict[str, float]:
    """The numeric fields of a metrics row under ``seed{seed}/{order}/{stage}/{metric}``."""
    prefix = f"seed{row['seed']}/{row['order']}/{row['stage']}/"
    return {prefix + k: float(v) for k, v in row.items()
            if k not in _KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoard:
    def __init__(self, out: str, config: dict):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=os.path.join(out, "tensorboard"))

    def log(self, row: dict) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["step"]))

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, out: str, config: dict):
        import wandb

        os.makedirs(os.path.join(out, "wandb"), exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(project="sft-rl-coupling", dir=out, config=config,
                              name=os.path.basename(os.path.abspath(out)))
        self.count = 0

    def log(self, row: dict) -> None:
        values = scalars(row)
        values[f"seed{row['seed']}/{row['order']}/{row['stage']}/stage_step"] = float(row["step"])
        self.run.log(values, step=self.count)
        self.count += 1

    def close(self) -> None:
        self.run.finish()


def open_trackers(names, out: str, config: dict) -> list:
    """One writer per name of ``names`` (already checked by ``check_report_to``)."""
    kinds = {"tensorboard": TensorBoard, "wandb": WandB}
    return [kinds[name](out, config) for name in names]
