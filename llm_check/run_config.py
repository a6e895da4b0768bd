"""Every setting of the LLM runs as frozen dataclasses; this module imports no JAX.

``coupling llm --help`` and ``report.py`` read these without starting JAX. Each dataclass checks
itself (``validate``) and the whole ``RunConfig`` goes to a run's ``config.json``.

The GRPO estimator settings decide where RL converges (docs/theory.md §6 [grpo.fixedpoint]), so two
named presets set them together (``SETTINGS``; single flags override them):

- ``exact``: the KL of the whole completion, beta * sum_t (log p - log ref), is subtracted from the
  reward (``kl_mode="reward"``) after the leave-one-out baseline of the reward
  (``kl_in_baseline=False``, so the penalty still acts on a group of identical completions), no
  std division, and each sequence's log-likelihood summed over its tokens
  (``aggregation="fixed_length"``). On-policy this is an unbiased estimate of grad J_beta
  ([kl.grad], [kl.token]); its fixed point is the Gibbs tilt p* = ref e^{r/beta} / Z that
  Theorem 3.1 is about.
- ``paper``: the paper's (and TRL's before its KL fix) GRPO: k3 per token in the loss, group-mean
  baseline, advantages divided by the group std, the mean over sequences of each one's token mean.
  Its fixed point is p_y = beta' ref_y / (beta' + J - r_y) with a per-prompt beta' (not p*).

Each preset also has its own RL Adam peak learning rate and eps (``SETTING_RL_OPTIM``;
``--rl-lr`` and ``--rl-adam-eps`` override them). Adam turns the gradient of a rare lone sample
into a step of about lr on every coordinate whose gradient is well above eps, and a step like
that can flip a prompt onto an unrewarded answer (docs/log.md):

- ``exact``: lr 3e-3, eps 1e-3; slower rates do not reach the tilt at beta = 0.25 in 300 steps
  (-26% at 1e-3, -6% at 2e-3), and eps 1e-2 with lr 1e-2 (momentum SGD on small gradients) turned
  two runs that held into collapses.
- ``paper``: lr 1e-3, eps 1e-3. Std division gives a lone unrewarded sample in a group of G an
  advantage of about -sqrt(G) however rare it is, and the k3 term pulls a collapsed prompt back
  only weakly (its gradient on a sampled token is (1 - ref/p) grad log p, bounded by grad log p):
  at lr 3e-3 5 of 9 deterministic-expert runs collapsed, and at lr 1e-2, eps 1e-2 too; at lr 1e-3
  none did, and the paper fixed point is still reached within 100 steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from theory.errors import InputError

KL_ESTIMATORS = ("k1", "k2", "k3")
KL_MODES = ("reward", "loss")
BASELINES = ("mean", "loo")
AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "fixed_length")
ORDERS = {"sft_then_rl": ("sft_then_rl",), "rl_then_sft": ("rl_then_sft",),
          "both": ("sft_then_rl", "rl_then_sft")}
# Spellings of earlier releases, still accepted by --order (deprecated).
ORDER_ALIASES = {"sft-rl": "sft_then_rl", "rl-sft": "rl_then_sft"}
STAGES = {"sft_then_rl": ("sft", "rl"), "rl_then_sft": ("rl", "sft")}

# The estimator flags each named setting fixes (module docstring).
SETTINGS = {
    "exact": dict(kl_mode="reward", kl_estimator="k1", kl_in_baseline=False, baseline="loo",
                  std_normalize=False, aggregation="fixed_length"),
    "paper": dict(kl_mode="loss", kl_estimator="k3", baseline="mean", std_normalize=True,
                  aggregation="seq_mean_token_mean"),
}
# The RL Adam peak learning rate and eps of each preset (module docstring); "custom" flags take
# exact's.
SETTING_RL_OPTIM = {"exact": {"lr": 3e-3, "eps": 1e-3}, "paper": {"lr": 1e-3, "eps": 1e-3}}


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup + decay and global-norm clipping; every field goes to config.json."""

    lr: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "constant"  # "constant" | "cosine" (decays to lr * final_lr_frac)
    final_lr_frac: float = 0.1
    total_steps: int = 100
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8  # Adam's denominator floor
    weight_decay: float = 0.0
    clip_norm: float = 1.0

    def validate(self, name: str = "optimizer") -> "OptimConfig":
        if not self.lr > 0:
            raise InputError(f"setting {name} lr={self.lr}: must be > 0")
        if self.schedule not in ("constant", "cosine"):
            raise InputError(f"setting {name} schedule={self.schedule!r}: choose constant or cosine")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise InputError(f"settings {name} warmup_steps={self.warmup_steps}, total_steps="
                             f"{self.total_steps}: need warmup >= 0 and total >= 1")
        if not self.clip_norm > 0 or self.weight_decay < 0:
            raise InputError(f"settings {name} clip_norm={self.clip_norm}, weight_decay="
                             f"{self.weight_decay}: need clip_norm > 0 and weight_decay >= 0")
        return self

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GRPOConfig:
    """Every GRPO setting; the defaults are the ``exact`` preset (module docstring)."""

    group_size: int = 16
    prompts_per_step: int = 8
    beta: float = 0.25
    kl_mode: str = "reward"  # "reward": beta * sequence k1 subtracted from r; "loss": per-token
    kl_estimator: str = "k1"  # the per-token estimator in "loss" mode (k1 | k2 | k3)
    # "reward" mode: False = only r gets the group baseline, -beta * k after it (acts on a group
    # of identical completions); True = the baseline of r - beta * k (grpo.advantages)
    kl_in_baseline: bool = False
    clip_low: float = 0.2
    clip_high: float = 0.2
    inner_iters: int = 1
    baseline: str = "loo"
    std_normalize: bool = False
    std_ddof: int = 1
    std_floor: float = 1e-4
    aggregation: str = "fixed_length"
    max_new_tokens: int = 4
    temperature: float = 1.0
    top_p: float = 1.0

    def validate(self) -> "GRPOConfig":
        """Reject invalid settings with an InputError naming the setting."""
        if self.group_size < 2:
            raise InputError(f"setting group_size={self.group_size}: GRPO needs at least 2 "
                             "completions per prompt")
        if self.prompts_per_step < 1:
            raise InputError(f"setting prompts_per_step={self.prompts_per_step}: must be >= 1")
        if not self.beta >= 0:
            raise InputError(f"setting beta={self.beta}: the KL weight must be >= 0")
        if self.kl_mode not in KL_MODES:
            raise InputError(f"setting kl_mode={self.kl_mode!r}: choose from {', '.join(KL_MODES)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise InputError(f"setting kl_estimator={self.kl_estimator!r}: unknown estimator "
                             f"(choose from {', '.join(KL_ESTIMATORS)})")
        if self.kl_mode == "reward" and self.kl_estimator != "k1":
            raise InputError(f"setting kl_estimator={self.kl_estimator!r} with kl_mode=reward: the "
                             "reward takes the summed log-ratio (k1); use kl_mode=loss for k2/k3")
        if self.baseline not in BASELINES:
            raise InputError(f"setting baseline={self.baseline!r}: choose from {', '.join(BASELINES)}")
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"setting aggregation={self.aggregation!r}: choose from "
                             f"{', '.join(AGGREGATIONS)}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise InputError(f"settings clip_low={self.clip_low}, clip_high="
                             f"{self.clip_high}: need 0 <= low < 1 and high >= 0")
        if self.inner_iters < 1:
            raise InputError(f"setting inner_iters={self.inner_iters}: must be >= 1")
        if self.std_ddof not in (0, 1) or self.std_ddof >= self.group_size:
            raise InputError(f"setting std_ddof={self.std_ddof}: must be 0 or 1")
        if not self.std_floor >= 0:
            raise InputError(f"setting std_floor={self.std_floor}: must be >= 0")
        if self.max_new_tokens < 1:
            raise InputError(f"setting max_new_tokens={self.max_new_tokens}: must be >= 1")
        if not self.temperature > 0:
            raise InputError(f"setting temperature={self.temperature}: must be > 0")
        if not 0 < self.top_p <= 1:
            raise InputError(f"setting top_p={self.top_p}: must lie in (0, 1]")
        return self

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def setting(self) -> str:
        """'exact' or 'paper' when the estimator flags match that preset, else 'custom'."""
        for name, flags in SETTINGS.items():
            if all(getattr(self, k) == v for k, v in flags.items()):
                return name
        return "custom"


def grpo_setting(name: str, base: GRPOConfig | None = None, **overrides) -> GRPOConfig:
    """``base`` (default GRPOConfig()) with the preset ``name``'s flags, then ``overrides``."""
    if name not in SETTINGS:
        raise InputError(f"setting --setting {name!r}: choose from {', '.join(SETTINGS)}")
    return dataclasses.replace(base or GRPOConfig(), **{**SETTINGS[name], **overrides})


@dataclass(frozen=True)
class RunConfig:
    """Every setting of ``coupling llm run``; the whole object goes to config.json."""

    model: str = "tiny"
    task: str = "builtin"
    order: str = "both"
    seeds: tuple[int, ...] = (0, 1, 2)
    eps: float = 0.3
    max_operand: int = 4
    n_train: int = 512
    n_heldout: int = 64
    heldout_fraction: float = 0.1
    eval_rows: int = 0  # 0 = every held-out row
    eval_samples: int = 8  # sampled completions per held-out prompt for the rewards
    sampled_eval: bool = True  # False: evaluations compute only the CE and the exact quantities
    base_steps: int = 100
    base_p_correct: float = 0.5
    init_std: float = 0.1  # tiny model only: random init std (0.02 leaves it on a long plateau)
    base_optim: OptimConfig = OptimConfig(lr=3e-3, total_steps=100)
    sft_steps: int = 400
    sft_batch: int = 32
    grad_accum: int = 1
    sft_optim: OptimConfig = OptimConfig(lr=3e-3, schedule="cosine", total_steps=400)
    rl_steps: int = 150
    # cosine to 0 averages the sampling noise out at the end; global-norm clipping is off in
    # effect (100), since clipping the rare large updates biases the estimator; lr and Adam's
    # eps are the exact setting's (SETTING_RL_OPTIM: a rare lone sample's gradient is not blown
    # up to an lr-sized step on every parameter; docs/log.md)
    rl_optim: OptimConfig = OptimConfig(lr=3e-3, schedule="cosine", final_lr_frac=0.0,
                                        clip_norm=100.0, eps=1e-3, total_steps=150)
    grpo: GRPOConfig = GRPOConfig()
    eval_every: int = 50
    ckpt_every: int = 50
    chunk_size: int = 64
    local_theory: bool = True
    local_steps: int = 10  # local theory on RL steps 1..N and every eval step; -1 = every step
    mesh: str | None = None  # "data=D,fsdp=F": params FSDP-sharded, batches split over all D*F
    remat: bool = False  # recompute each layer's activations in the backward pass (memory)
    dtype: str = "float32"  # compute dtype: float32 (CPU) or bfloat16 (GPU/TPU; f32 master weights)
    report_to: str = ""  # comma-separated trackers: tensorboard, wandb (llm_check.tracking)

    def validate(self) -> "RunConfig":
        if self.order not in ORDERS:
            raise InputError(f"setting --order {self.order!r}: choose sft_then_rl, rl_then_sft or both")
        if not self.seeds:
            raise InputError("setting --seeds: needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise InputError(f"setting --seeds {list(self.seeds)}: seeds must be distinct and >= 0")
        if self.base_steps < 0:
            raise InputError(f"setting base_steps={self.base_steps}: must be >= 0")
        for name in ("sft_steps", "rl_steps", "sft_batch", "grad_accum", "eval_every",
                     "ckpt_every", "chunk_size"):
            if getattr(self, name) < 1:
                raise InputError(f"setting {name}={getattr(self, name)}: must be >= 1")
        if self.dtype not in ("float32", "bfloat16"):
            raise InputError(f"setting dtype={self.dtype!r}: choose float32 or bfloat16")
        if self.eval_samples < 1:
            raise InputError(f"setting eval_samples={self.eval_samples}: must be >= 1")
        if self.local_steps < -1:
            raise InputError(f"setting local_steps={self.local_steps}: must be >= -1")
        if self.eval_rows < 0:
            raise InputError(f"setting eval_rows={self.eval_rows}: must be >= 0")
        if self.sft_batch % self.grad_accum:
            raise InputError(f"setting grad_accum={self.grad_accum}: must divide sft_batch="
                             f"{self.sft_batch}")
        self.check_mesh()
        from llm_check.tracking import check_report_to

        check_report_to(self.trackers)
        self.base_optim.validate("base")
        self.sft_optim.validate("sft")
        self.rl_optim.validate("rl")
        self.grpo.validate()
        return self

    def check_mesh(self) -> None:
        """With ``mesh``, every batch fed to a jitted function is split over all its devices, so
        each batch size must be a multiple of the device count (``mesh_devices``)."""
        if self.mesh is None:
            return
        n = mesh_devices(self.mesh)
        where = f"the {n} devices of --mesh {self.mesh}"
        micro = self.sft_batch // self.grad_accum
        if micro % n:
            raise InputError(f"setting --sft-batch {self.sft_batch}"
                             + (f" / --grad-accum {self.grad_accum}" if self.grad_accum > 1
                                else "")
                             + f": the {micro} rows of a micro-batch must split evenly over {where}")
        p, g = self.grpo.prompts_per_step, self.grpo.group_size
        if p % n:
            raise InputError(f"setting --prompts-per-step {p} (x --group-size {g}): the {p} "
                             f"prompts of a GRPO step (and their {p * g} completions) must split "
                             f"evenly over {where}")

    def check_heldout(self, n_heldout: int) -> None:
        """With ``mesh``, the ``n_heldout`` held-out rows evaluated (CE batch and eval prompts)
        must split evenly over the mesh's devices."""
        if self.mesh is None:
            return
        n = mesh_devices(self.mesh)
        if n_heldout % n:
            raise InputError(f"setting --eval-rows {self.eval_rows} (--n-heldout "
                             f"{self.n_heldout}): the {n_heldout} held-out rows evaluated must "
                             f"split evenly over the {n} devices of --mesh {self.mesh}; set "
                             f"--eval-rows to a multiple of {n}")

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def trackers(self) -> tuple[str, ...]:
        return tuple(x.strip() for x in self.report_to.split(",") if x.strip())

    @property
    def known_eps(self) -> float | None:
        """The expert's error rate when the task has a known one (the built-in task), else None."""
        return self.eps if self.task == "builtin" else None


def mesh_sizes(spec: str | None) -> dict[str, int]:
    """``{"data": D, "fsdp": F}`` of a mesh spec ``"data=D,fsdp=F"`` (either may be omitted,
    default 1; None is 1x1); a malformed spec is an InputError."""
    sizes = {"data": 1, "fsdp": 1}
    for part in spec.split(",") if spec else ():
        name, _, value = part.strip().partition("=")
        if name not in sizes or not value.strip().isdigit() or int(value) < 1:
            raise InputError(f"mesh spec {spec!r}: expected 'data=N,fsdp=M' with N, M >= 1, "
                             f"got {part.strip()!r}")
        sizes[name] = int(value)
    return sizes


def mesh_devices(spec: str | None) -> int:
    """The number of devices of the mesh spec (D * F)."""
    sizes = mesh_sizes(spec)
    return sizes["data"] * sizes["fsdp"]


def sweep_run_config() -> "RunConfig":
    """The run settings a sweep starts from: RL twice as long as a single run's (300 steps: the
    sweep measures effect sizes to a few percent, docs/log.md), evaluations without sampling and
    without the per-step local theory."""
    base = RunConfig()
    return dataclasses.replace(base, rl_steps=300, eval_every=100, sampled_eval=False,
                               local_theory=False,
                               rl_optim=dataclasses.replace(base.rl_optim, total_steps=300))


# Field names of earlier releases, still read from old config files.
RENAMED = {"clip_eps_low": "clip_low", "clip_eps_high": "clip_high", "std_eps": "std_floor"}


def _from_dict(cls, data, where: str):
    """``cls`` (a frozen settings dataclass) from a JSON/TOML mapping, every value type-checked."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a table of settings, got {type(data).__name__}")
    data = {RENAMED.get(k, k): v for k, v in data.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown setting {unknown[0]!r}")
    kw = {}
    for name, value in data.items():
        default = fields[name].default
        here = f"{where}: setting {name}"
        if dataclasses.is_dataclass(default):
            kw[name] = _from_dict(type(default), value, here)
        elif name == "seeds":
            if not isinstance(value, list) or not all(type(x) is int for x in value):
                raise InputError(f"{here}: expected a list of integers, got {value!r}")
            kw[name] = tuple(value)
        elif default is None or isinstance(default, str):  # str, or str | None
            if not (isinstance(value, str) or (default is None and value is None)):
                raise InputError(f"{here}: expected a string, got {value!r}")
            kw[name] = value
        elif isinstance(default, bool):
            if type(value) is not bool:
                raise InputError(f"{here}: expected true or false, got {value!r}")
            kw[name] = value
        elif isinstance(default, int):
            if type(value) is not int:
                raise InputError(f"{here}: expected an integer, got {value!r}")
            kw[name] = value
        else:  # float
            if type(value) not in (int, float):
                raise InputError(f"{here}: expected a number, got {value!r}")
            kw[name] = float(value)
    return cls(**kw)


def load_run_config(path: str, flag: str = "--config") -> RunConfig:
    """A RunConfig from a run's ``config.json`` or a TOML file of the same fields (missing fields,
    such as a setting added since the run started, keep their defaults; a renamed field is read
    under its old name too); validated. ``flag`` names the option in error messages."""
    import json
    import os
    import tomllib

    if not os.path.isfile(path):
        raise InputError(f"{flag} {path}: no such file")
    try:
        if path.endswith(".toml"):
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{flag} {path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}"
                         f" ({str(e).splitlines()[0]})") from None
    cfg = _from_dict(RunConfig, data, path)
    # each optimizer's schedule length is its stage's step count (as the command line sets it)
    cfg = dataclasses.replace(cfg, **{f"{st}_optim": dataclasses.replace(
        getattr(cfg, f"{st}_optim"), total_steps=max(getattr(cfg, f"{st}_steps"), 1))
        for st in ("base", "sft", "rl")})
    return cfg.validate()
