"""Benchmark: the theorem quantities of docs/theory.md §3–§4 on random instances, vmapped and jitted in
JAX, against a plain per-instance NumPy loop computing the same quantities, in the same run.

    python -m toy_models.bench [--instances N] [--repeats R] [--x X] [--y Y] [--json]

Per instance: C1 (thm31.c1), the thm31.identity change, the threshold sides (threshold.kl), the
regularized optimum's J and J_β, one SFT step from it with its J, J_β drop and β·KL (thm41.gibbs),
and the thm41.argmax gap and bound. Both sides run in float64; the script checks that they agree
(max relative difference printed). Timing: best of ``repeats`` after one warm-up (compilation is
excluded from the JAX figure and reported separately).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from toy_models import coupling_rl_sft as rls
from toy_models import coupling_sft_rl as srl
from toy_models import objectives as obj
from toy_models.instance import Instance, random_batch

ETA = 0.5
NAMES = ("c1", "identity", "threshold_left", "threshold_right", "j_star", "jb_star", "j_sft", "drop",
         "beta_kl", "argmax_gap", "argmax_bound")


def quantities(inst: Instance) -> jax.Array:
    """The benchmarked quantities of one instance, stacked in the order of ``NAMES``."""
    left, right = srl.threshold_sides(inst)
    log_star = rls.rl_optimum(inst)
    logp = rls.sft_step_from_optimum(inst, ETA)
    drop, beta_kl = rls.gibbs_gap(logp, inst)
    gap, bound = rls.argmax_gap_and_bound(inst)
    return jnp.stack([srl.c1_closed_form(inst), srl.sft_loss_change_identity(inst), left, right,
                      obj.raw_reward(log_star, inst.q, inst.reward), rls.objective(log_star, inst),
                      obj.raw_reward(logp, inst.q, inst.reward), drop, beta_kl, gap, bound])


def _lse(z: np.ndarray) -> np.ndarray:
    m = z.max(-1)
    return m + np.log(np.exp(z - m[..., None]).sum(-1))


def quantities_numpy(q, expert, reward, reference, sft, beta) -> np.ndarray:
    """The same quantities for one instance, in plain NumPy (the baseline)."""
    e_d = (expert * reward).sum(-1)
    c1 = float(q @ (_lse(np.log(expert) + reward / beta) - e_d / beta))
    log_z_sft = _lse(np.log(sft) + reward / beta)
    identity = float(q @ (log_z_sft - e_d / beta))
    left, right = float(q @ e_d) / beta, float(q @ log_z_sft)
    z = np.log(reference) + reward / beta
    log_star = z - _lse(z)[:, None]
    p_star = np.exp(log_star)

    def jb(logp):
        p = np.exp(logp)
        return float(q @ (p * reward).sum(-1) - beta * q @ (p * (logp - np.log(reference))).sum(-1))

    theta = log_star - ETA * q[:, None] * (p_star - expert)
    logp = theta - _lse(theta)[:, None]
    p = np.exp(logp)
    j_star = float(q @ (p_star * reward).sum(-1))
    jb_star = jb(log_star)
    drop = jb_star - jb(logp)
    beta_kl = beta * float(q @ (p * (logp - log_star)).sum(-1))
    r_max = reward.max(-1)
    in_a = reward >= r_max[:, None]
    r_next = np.where(in_a, -np.inf, reward).max(-1)
    delta = np.where(np.isfinite(r_next), r_max - r_next, 0.0)
    gap = float(q @ r_max) - float(q @ e_d)
    bound = float(q @ (delta * (1 - np.where(in_a, expert, 0).sum(-1))))
    return np.array([c1, identity, left, right, j_star, jb_star, float(q @ (p * reward).sum(-1)), drop,
                     beta_kl, gap, bound])


def run(instances: int, repeats: int, num_x: int, num_y: int) -> dict:
    with jax.enable_x64(True):
        batch = random_batch(np.random.default_rng(0), instances, num_x, num_y)
        fn = jax.jit(jax.vmap(quantities))
        t0 = time.perf_counter()
        out = fn(batch).block_until_ready()
        compile_s = time.perf_counter() - t0
        jax_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(batch).block_until_ready()
            jax_times.append(time.perf_counter() - t0)
        arrays = [np.asarray(a) for a in (batch.q, batch.expert, batch.reward, batch.reference,
                                          batch.sft_policy, batch.beta)]
        n_loop = min(instances, 2000)  # the loop is timed on a prefix and reported per instance
        loop_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ref = np.stack([quantities_numpy(*(a[i] for a in arrays)) for i in range(n_loop)])
            loop_times.append(time.perf_counter() - t0)
        diff = np.abs(np.asarray(out)[:n_loop] - ref)
        rel = np.max(diff / np.maximum(np.abs(ref), 1e-6))
    jax_rate = instances / min(jax_times)
    loop_rate = n_loop / min(loop_times)
    return {"instances": instances, "instance_shape": [num_x, num_y], "repeats": repeats,
            "quantities_per_instance": len(NAMES), "jax_compile_s": compile_s,
            "jax_best_s": min(jax_times), "jax_instances_per_s": jax_rate,
            "numpy_loop_instances": n_loop, "numpy_loop_best_s": min(loop_times),
            "numpy_loop_instances_per_s": loop_rate, "speedup": jax_rate / loop_rate,
            "max_abs_difference": float(diff.max()), "max_rel_difference": float(rel),
            "devices": str(jax.devices())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toy_models.bench", description=__doc__.split("\n")[0])
    p.add_argument("--instances", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--x", type=int, default=3)
    p.add_argument("--y", type=int, default=4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = run(args.instances, args.repeats, args.x, args.y)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['instances']} instances of shape X={args.x}, Y={args.y}, {len(NAMES)} quantities each, "
              f"best of {args.repeats}")
        print(f"  JAX vmap+jit : {res['jax_instances_per_s']:.3g} instances/s "
              f"({res['jax_best_s'] * 1e3:.1f} ms; compile {res['jax_compile_s']:.2f} s)")
        print(f"  NumPy loop   : {res['numpy_loop_instances_per_s']:.3g} instances/s "
              f"({res['numpy_loop_instances']} instances in {res['numpy_loop_best_s']:.2f} s)")
        print(f"  speedup      : {res['speedup']:.0f}x   (JAX vs NumPy: max abs difference {res['max_abs_difference']:.2g}, "
              f"relative {res['max_rel_difference']:.2g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
