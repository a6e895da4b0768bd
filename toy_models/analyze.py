"""``coupling toy analyze``: every quantity of docs/theory.md §3–§4 on one instance, in closed form and
as measured by running the optax trainers, side by side.

The contract keys (README.md, "coupling toy analyze") are computed as follows:

- ``c1_closed_form``: C1(β) = E_x[log E_{p_D} e^{r/β} − E_{p_D} r/β] (thm31.c1);
- ``c1_measured``: start at the SFT optimum (policy = expert), run natural policy gradient on J_β
  with reference = that policy to convergence, and measure L(p_RL) − L(p_D);
- ``sft_loss_change_after_rl``: the same from ``sft_policy`` (null when the file has none), measured;
  its closed form is the thm31.identity;
- ``rl_optimum_reward`` / ``rl_optimum_objective``: J and J_β at the regularized optimum
  p* ∝ π_ref e^{r/β} (closed form);
- ``sft_after_rl``: for each step size η, one SFT gradient step (optax SGD on L) from the logits of
  p*: ``reward`` J, ``objective`` J_β, ``objective_drop`` J_β(p*) − J_β, ``kl_to_rl`` E_x KL(p ‖ p*).

``side_by_side`` lists, for each quantity, the closed form, the measurement and their difference:
C1 and the identity against the RL trainer, p* against the trainer's optimum, the objective drop
against β·KL (thm41.gibbs) and the local predictions of thm41.local.

Simplification: a zero probability is floored at 1e-300 when it becomes a logit, so the trainers
start from finite parameters; its effect on every number printed is below 1e-250.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from toy_models import coupling_rl_sft as rls
from toy_models import coupling_sft_rl as srl
from toy_models import objectives as obj
from toy_models import tabular, trainers
from toy_models.instance import Instance

NPG_STEPS = 80  # NPG with step 0.5/β halves the distance to the optimum each step


def _logits(p):
    return jnp.log(jnp.maximum(p, 1e-300))


def _npg_optimum(inst: Instance, log_ref, theta0):
    objective = lambda th: obj.regularized_objective(tabular.log_probs(th), inst.q, inst.reward, log_ref,
                                                     inst.beta)
    theta, _ = trainers.natural_ascent(objective, tabular.log_probs, theta0, inst.q, 0.5 / inst.beta,
                                       NPG_STEPS)
    return tabular.log_probs(theta)


def _sft_step(inst: Instance, theta0, eta):
    loss = lambda th: obj.sft_loss(tabular.log_probs(th), inst.q, inst.expert)
    theta, _ = trainers.minimize(loss, theta0, optax.sgd(eta), 1)
    return tabular.log_probs(theta)


def _row(name, closed, measured):
    closed, measured = float(closed), float(measured)
    return {"quantity": name, "closed_form": closed, "measured": measured, "difference": measured - closed}


def analyze(inst: Instance, sft_steps: tuple[float, ...], has_sft_policy: bool) -> dict:
    """The contract dictionary plus ``side_by_side`` (see the module docstring). Needs x64."""
    sft = lambda logp: obj.sft_loss(logp, inst.q, inst.expert)
    log_expert = _logits(inst.expert)
    side = []

    # SFT then RL, from the SFT optimum.
    log_rl_d = jax.jit(_npg_optimum)(inst, log_expert, log_expert)
    c1_closed = srl.c1_closed_form(inst)
    c1_measured = sft(log_rl_d) - sft(jnp.log(inst.expert))
    side.append(_row("C1 = L(p_RL) - L(p_D), RL trained by NPG", c1_closed, c1_measured))
    side.append(_row("C1 as E KL(p_D || p_RL)", c1_closed, srl.c1_as_kl(inst)))

    change = None
    if has_sft_policy:
        log_sft = _logits(inst.sft_policy)
        log_rl_s = jax.jit(_npg_optimum)(inst, log_sft, log_sft)
        change = sft(log_rl_s) - sft(log_sft)
        side.append(_row("L(p_RL) - L(p_SFT) (thm31.identity), RL trained by NPG",
                         srl.sft_loss_change_identity(inst), change))

    # RL (reference = `reference`) to the optimum, then SFT steps.
    log_ref = _logits(inst.reference)
    log_star = rls.rl_optimum(inst)
    log_star_trained = jax.jit(_npg_optimum)(inst, log_ref, jnp.zeros_like(log_ref))
    j_star = obj.raw_reward(log_star, inst.q, inst.reward)
    jb_star = rls.objective(log_star, inst)
    side.append(_row("rl_optimum_reward, RL trained by NPG", j_star,
                     obj.raw_reward(log_star_trained, inst.q, inst.reward)))
    side.append(_row("rl_optimum_objective, RL trained by NPG", jb_star, rls.objective(log_star_trained, inst)))

    after = []
    step = jax.jit(_sft_step)
    for eta in sft_steps:
        logp = step(inst, _logits(jnp.exp(log_star)), eta)
        reward = obj.raw_reward(logp, inst.q, inst.reward)
        objective = rls.objective(logp, inst)
        kl = obj.kl(logp, log_star, inst.q)
        drop = jb_star - objective
        after.append({"eta": float(eta), "reward": float(reward), "objective": float(objective),
                      "objective_drop": float(drop), "kl_to_rl": float(kl)})
        d_obj, d_rew = rls.local_sft_changes(inst, eta)
        side.append(_row(f"eta={eta:g}: objective_drop vs beta*KL (thm41.gibbs)", inst.beta * kl, drop))
        side.append(_row(f"eta={eta:g}: objective_drop vs local 2nd order (thm41.local)", -d_obj, drop))
        side.append(_row(f"eta={eta:g}: reward change vs local 1st order (thm41.local)", d_rew, reward - j_star))

    return {
        "c1_closed_form": float(c1_closed),
        "c1_measured": float(c1_measured),
        "sft_loss_change_after_rl": None if change is None else float(change),
        "rl_optimum_reward": float(j_star),
        "rl_optimum_objective": float(jb_star),
        "sft_after_rl": after,
        "side_by_side": side,
    }


def format_text(result: dict) -> str:
    """The human-readable report of ``analyze``."""
    lines = [
        f"C1 (SFT-loss rise after exact RL from the SFT optimum): closed form {result['c1_closed_form']:.6g}, "
        f"measured {result['c1_measured']:.6g}",
        "SFT-loss change after RL from sft_policy: "
        + ("(no sft_policy in the instance)" if result["sft_loss_change_after_rl"] is None
           else f"{result['sft_loss_change_after_rl']:.6g}"),
        f"RL optimum: reward J = {result['rl_optimum_reward']:.4f}, objective J_beta = {result['rl_optimum_objective']:.6g}",
        "",
        "One SFT step of size eta from the RL optimum:",
        f"  {'eta':>6}  {'reward':>8}  {'objective':>10}  {'obj. drop':>10}  {'KL to p*':>10}",
    ]
    for row in result["sft_after_rl"]:
        lines.append(f"  {row['eta']:>6g}  {row['reward']:>8.4f}  {row['objective']:>10.6f}  "
                     f"{row['objective_drop']:>10.3e}  {row['kl_to_rl']:>10.3e}")
    lines += ["", "Theory beside measurement:",
              f"  {'quantity':<58} {'closed form':>13} {'measured':>13} {'difference':>11}"]
    for row in result["side_by_side"]:
        lines.append(f"  {row['quantity']:<58} {row['closed_form']:>13.6g} {row['measured']:>13.6g} "
                     f"{row['difference']:>11.2e}")
    return "\n".join(lines)
