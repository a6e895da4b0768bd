"""``coupling llm``: invalid settings are one line on stderr and exit code 2, before any work;
the parsed arguments become the RunConfig that config.json records."""

from __future__ import annotations

import pytest

from llm_check.cli import _parser, _seeds, config_from_args
from theory.errors import InputError
from toy_models.cli import main

pytestmark = pytest.mark.usefixtures("f32")


@pytest.mark.parametrize("argv,fragment", [
    (["--beta", "-0.1"], "setting beta=-0.1"),
    (["--group-size", "1"], "setting group_size=1"),
    (["--kl-estimator", "k7"], "setting kl_estimator='k7'"),
    (["--baseline", "median"], "setting baseline='median'"),
    (["--aggregation", "sum"], "setting aggregation='sum'"),
    (["--task", "imagenet"], "setting --task 'imagenet'"),
    (["--task", "cola:/nonexistent/folder"], "not a directory"),
    (["--order", "sideways"], "setting --order 'sideways'"),
    (["--seeds", "two"], "setting --seeds 'two'"),
    (["--sft-batch", "600"], "setting sft_batch=600: larger than the train set"),
    (["--prompts-per-step", "600"], "setting prompts_per_step=600"),
    (["--eps", "1.5"], "setting eps=1.5"),
    (["--sft-lr", "0"], "setting sft lr=0.0"),
    (["--sft-batch", "32", "--grad-accum", "5"], "setting grad_accum=5"),
    (["--resume"], "--resume needs --out"),
    (["--setting", "trl"], "setting --setting 'trl'"),
    (["--kl-mode", "reward", "--kl-estimator", "k3"], "kl_mode=reward"),
    (["--model", "MODEL_DIR"], "no config.json"),
])
def test_invalid_settings_exit_2_with_one_line(argv, fragment, capsys, tmp_path):
    out = [] if "--resume" in argv else ["--out", str(tmp_path / "run")]
    if "MODEL_DIR" in argv:  # a folder that is no model snapshot
        (tmp_path / "empty").mkdir()
        argv = [str(tmp_path / "empty") if a == "MODEL_DIR" else a for a in argv]
    code = main(["llm", "run", *argv, *out])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_unknown_option_is_an_argparse_error():
    with pytest.raises(SystemExit) as e:
        main(["llm", "run", "--no-such-option"])
    assert e.value.code == 2


def test_seeds_count_or_list():
    assert _seeds("3") == (0, 1, 2)
    assert _seeds("4,9") == (4, 9)
    with pytest.raises(InputError):
        _seeds("0")


def test_arguments_become_the_config():
    cfg = config_from_args(_parser().parse_args(
        ["run", "--beta", "0.5", "--kl-estimator", "k1", "--baseline", "loo",
         "--no-std-normalize", "--aggregation", "fixed_length", "--clip-eps", "0.1",
         "--clip-eps-high", "0.3", "--inner-iters", "2", "--seeds", "0,7", "--rl-lr", "5e-4"]))
    g = cfg.grpo
    assert (g.beta, g.kl_estimator, g.baseline, g.std_normalize, g.aggregation) == (
        0.5, "k1", "loo", False, "fixed_length")
    assert (g.clip_low, g.clip_high, g.inner_iters) == (0.1, 0.3, 2)
    assert cfg.seeds == (0, 7) and cfg.rl_optim.lr == 5e-4
    assert cfg.base_steps > 0  # the tiny model gets a prompt-format base
    hf = config_from_args(_parser().parse_args(["run", "--model", "some/snapshot"]))
    assert hf.base_steps == 0  # a pretrained snapshot is its own base


def test_eval_of_a_missing_model_is_a_clear_error(capsys):
    assert main(["llm", "eval", "--model", "/nonexistent/snapshot"]) == 2
    assert "neither 'tiny' nor a folder" in capsys.readouterr().err


def test_named_settings_and_single_flags_over_them():
    parse = lambda *a: config_from_args(_parser().parse_args(["run", *a])).grpo  # noqa: E731
    exact = parse()
    assert (exact.kl_mode, exact.baseline, exact.std_normalize, exact.setting) == (
        "reward", "loo", False, "exact")
    paper = parse("--setting", "paper")
    assert (paper.kl_mode, paper.kl_estimator, paper.baseline, paper.std_normalize,
            paper.aggregation, paper.setting) == ("loss", "k3", "mean", True,
                                                  "seq_mean_token_mean", "paper")
    mixed = parse("--setting", "paper", "--no-std-normalize", "--kl-estimator", "k2")
    assert (mixed.kl_estimator, mixed.std_normalize, mixed.baseline, mixed.setting) == (
        "k2", False, "mean", "custom")
    kib = parse("--kl-in-baseline")
    assert (kib.kl_in_baseline, kib.kl_mode, kib.setting) == (True, "reward", "custom")


@pytest.mark.parametrize("flags", [["--kl-in-baseline"], ["--setting", "paper", "--kl-in-baseline"],
                                   ["--setting", "paper", "--kl-estimator", "k2"], []])
def test_a_runs_config_json_repeats_its_grpo_setting(flags, tmp_path):
    """``--config DIR/config.json`` gives back every GRPO field of the run that wrote it,
    ``kl_in_baseline`` too (``exact`` fixes it, ``paper`` does not)."""
    import json

    from llm_check.run_config import load_run_config

    cfg = config_from_args(_parser().parse_args(["run", *flags]))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_json()))
    again = config_from_args(_parser(load_run_config(str(path))).parse_args(["run"]))
    assert again.grpo == cfg.grpo


def test_each_setting_has_its_rl_optimizer_and_the_flags_override_it():
    cfg = lambda *a: config_from_args(_parser().parse_args(["run", *a]))  # noqa: E731
    lr_eps = lambda c: (c.rl_optim.lr, c.rl_optim.eps)  # noqa: E731
    assert lr_eps(cfg()) == (3e-3, 1e-3) and cfg().grpo.kl_in_baseline is False
    assert lr_eps(cfg("--setting", "paper")) == (1e-3, 1e-3)
    assert lr_eps(cfg("--setting", "paper", "--rl-lr", "5e-4")) == (5e-4, 1e-3)
    assert lr_eps(cfg("--rl-adam-eps", "1e-4")) == (3e-3, 1e-4)
    assert cfg().sft_optim.eps == 1e-8  # the other stages keep their own
    # the sweep: each setting its own unless a flag is given
    sweep = _parser().parse_args(["sweep"])
    assert sweep.rl_lr is None and sweep.rl_adam_eps is None
    assert _parser().parse_args(["sweep", "--rl-lr", "1e-3"]).rl_lr == 1e-3


def test_config_files_and_flags_over_them(tmp_path, capsys):
    import json

    from llm_check.run_config import RunConfig, load_run_config

    toml = tmp_path / "c.toml"
    toml.write_text('eps = 0.1\nseeds = [3, 4]\n[grpo]\nbeta = 0.25\nkl_mode = "loss"\n'
                    'kl_estimator = "k2"\n[rl_optim]\nlr = 1e-3\n')
    cfg = load_run_config(str(toml))
    assert (cfg.eps, cfg.seeds, cfg.grpo.beta, cfg.grpo.kl_estimator, cfg.rl_optim.lr) == (
        0.1, (3, 4), 0.25, "k2", 1e-3)
    assert cfg.rl_optim.total_steps == cfg.rl_steps and cfg.sft_steps == RunConfig().sft_steps
    again = config_from_args(_parser(cfg).parse_args(["run", "--beta", "1", "--seeds", "2"]))
    assert again.grpo.beta == 1 and again.seeds == (0, 1) and again.grpo.kl_estimator == "k2"
    for text, fragment in [('{"eps": 0.1, "nope": 1}', "unknown setting 'nope'"),
                           ('{"grpo": {"beta": "big"}}', "setting beta: expected a number"),
                           ('{"seeds": 3}', "setting seeds: expected a list"),
                           ('{"grpo": {"beta": -1}}', "setting beta=-1"),
                           ("{not json", "not valid JSON")]:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        out = tmp_path / "never"
        assert main(["llm", "run", "--config", str(bad), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    assert json.loads(json.dumps(RunConfig().to_json()))["grpo"]["kl_mode"] == "reward"


def test_help_is_grouped_with_defaults_and_imports_no_jax():
    import subprocess
    import sys

    code = ("import sys\nfrom toy_models.cli import main\ntry:\n    main(['llm', 'run', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('JAX', any(m == 'jax' or m.startswith('jax.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("JAX False"), out[-200:]
    for title in ("data:", "model:", "SFT stage:", "RL stage (GRPO):", "evaluation:",
                  "outputs and checkpoints:", "devices:"):
        assert f"\n{title}\n" in out, title
    assert "--rl-clip-norm RL_CLIP_NORM" in out and "(default: 100.0)" in out


def test_sweep_defaults_follow_the_model_and_local_theory_can_be_turned_on():
    """The sweep starts from ``sweep_run_config``, yet a snapshot still gets no base stage (as
    ``run`` gives it), and ``--local-theory`` turns back on what the sweep leaves off."""
    sweep = lambda *a: config_from_args(_parser().parse_args(["sweep", *a]))  # noqa: E731
    assert sweep().base_steps == 100 and sweep("--model", "some/snapshot").base_steps == 0
    assert sweep("--model", "some/snapshot", "--base-steps", "5").base_steps == 5
    assert sweep().local_theory is False and sweep("--local-theory").local_theory is True
    run = lambda *a: config_from_args(_parser().parse_args(["run", *a]))  # noqa: E731
    assert run().local_theory is True and run("--no-local-theory").local_theory is False
    assert run("--std-eps", "0.01").grpo.std_floor == 0.01  # a deprecated spelling still works
