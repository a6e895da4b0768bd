"""Multi-process runs (``coupling llm run --coordinator --num-processes --process-id``) and their
Orbax checkpoints, on localhost CPU processes that talk through gloo.

Every run is the same small ``sft_then_rl`` run on ``--mesh data=2,fsdp=2`` (4 devices), launched
through the command line in fresh subprocesses (XLA_FLAGS must be set before JAX starts):

- ``one``: 1 process x 4 simulated devices, uninterrupted: the reference;
- ``two``: 2 processes x 2 devices, uninterrupted. Its summary.json and every metric must equal
  ``one``'s to 1e-5 relative (the comparison is always against a one-process run: gloo's CPU
  reduce-scatter has returned wrong values for large chunks in some JAX versions, jax#40830);
- ``killed``: 2 x 2, and process 1 dies (``os._exit``) at RL step 3, after the step-2 checkpoint.
  Process 0 must stop on its own with an error (JAX's missing-heartbeat error, or a broken gloo
  collective), within the ``--process-timeout`` (nothing hangs). The run is then resumed on 1 x 4 from the checkpoint the
  2 processes saved;
- ``stopped`` (``-m slow``: two more launches): 1 x 4, stopped by an exception at RL step 3, then
  resumed on 2 x 2.

Both resumed runs must end with ``one``'s metrics (to 1e-5), so a checkpoint crosses topologies
both ways. The evaluation is the exact one (``--no-sampled-eval``: fewer programs to compile in
every process); the RL steps still sample, decode and score across processes. Only process 0 writes: the test checks that process 1 wrote no file of its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--seeds", "1", "--order", "sft_then_rl", "--n-train", "32", "--n-heldout", "8",
        "--eval-samples", "2", "--base-steps", "2", "--sft-steps", "2", "--sft-batch", "8",
        "--rl-steps", "4", "--group-size", "4", "--prompts-per-step", "4",
        "--max-new-tokens", "2", "--eval-every", "2", "--ckpt-every", "2", "--no-local-theory",
        "--no-sampled-eval",
        "--sft-lr", "1e-3", "--rl-lr", "3e-3", "--mesh", "data=2,fsdp=2",
        "--process-timeout", "15"]
TIMEOUT_S = 15

# one process: patch the RL step function to die or stop at RL step 3, then the command line
SCRIPT = textwrap.dedent('''
    import json, os, sys
    from llm_check import pipeline
    from llm_check.cli import main

    mode, args = sys.argv[1], json.loads(sys.argv[2])
    real = pipeline.rl_step_fn
    ran = []  # the RL steps this process ran

    def patched(ctx, ref, step=None):
        run = real(ctx, ref, step)

        def go(params, opt_state, k):
            import jax
            if k == 3 and mode == "die" and jax.process_index() == 1:
                os._exit(9)  # killed: no error message, no shutdown
            if k == 3 and mode == "stop":
                raise KeyboardInterrupt("stopped at RL step 3, after the step-2 checkpoint")
            ran.append(k)
            return run(params, opt_state, k)
        return go

    pipeline.rl_step_fn = patched
    rc = main(["run", *args])
    print("RL steps run:", json.dumps(ran), file=sys.stderr)
    sys.exit(rc)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(out: str, processes: int, mode: str = "run", resume: bool = False):
    """Start the run in ``processes`` processes (4 devices in all); returns [(rc, stderr, s)]."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="0",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={4 // processes} "
                         "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [*ARGS, "--out", out] + (["--resume"] if resume else [])
    port = _free_port()
    procs = []
    for i in range(processes):
        extra = ([] if processes == 1 else
                 ["--coordinator", f"localhost:{port}", "--num-processes", str(processes),
                  "--process-id", str(i)])
        procs.append(subprocess.Popen(
            [sys.executable, "-c", SCRIPT, mode, json.dumps(args + extra)], env=env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    t0 = time.perf_counter()
    results = []
    for p in procs:
        _, err = p.communicate(timeout=400)
        results.append((p.returncode, err, time.perf_counter() - t0))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("mp")
    out = {name: str(base / name) for name in ("one", "two", "killed")}
    logs = {}
    for name, processes, mode in (("one", 1, "run"), ("two", 2, "run"), ("killed", 2, "die")):
        logs[name] = _launch(out[name], processes, mode)
    logs["killed+resumed on 1x4"] = _launch(out["killed"], 1, resume=True)
    return out, logs


def _ok(logs, name):
    for i, (rc, err, _) in enumerate(logs[name]):
        assert rc == 0, f"{name}, process {i}: exit {rc}\n{err[-3000:]}"


def _rows(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}/")
        else:
            yield prefix + k, v


def _assert_same(a_dir, b_dir, rel=1e-5, floor=1e-2):
    """Every float of metrics.jsonl and summary.json of b equals a's to ``rel`` relative to
    max(|a|, ``floor``); the rest exactly. The floor is for the KLs at a stage's start, which are
    0 up to float32 rounding: sums of differences of log-probabilities of size 1-10, so their
    values (~1e-7) are rounding noise that a reduction in another order changes. Returns the
    largest relative difference seen."""
    a_rows, b_rows = _rows(a_dir), _rows(b_dir)
    assert [(r["stage"], r["step"]) for r in a_rows] == [(r["stage"], r["step"]) for r in b_rows]
    pairs = [(k, r[k], s.get(k)) for r, s in zip(a_rows, b_rows) for k in r]
    with open(os.path.join(a_dir, "summary.json")) as f, \
            open(os.path.join(b_dir, "summary.json")) as g:
        sa, sb = dict(_flat(json.load(f))), dict(_flat(json.load(g)))
    sa.pop("wall_s"), sb.pop("wall_s")
    assert set(sa) == set(sb)
    pairs += [(k, v, sb[k]) for k, v in sa.items()]
    worst = 0.0
    for k, x, y in pairs:
        if isinstance(x, float):
            d = abs(x - y) / max(abs(x), floor)
            worst = max(worst, d)
            assert d <= rel, (k, x, y)
        else:
            assert x == y, (k, x, y)
    assert len(pairs) > 100
    return worst


def test_two_processes_give_the_one_process_run(runs):
    out, logs = runs
    _ok(logs, "one")
    _ok(logs, "two")
    worst = _assert_same(out["one"], out["two"])
    print(f"2x2 against 1x4: largest relative difference {worst:.2e}")
    # process 1 printed no report and wrote nothing of its own
    assert "wrote" not in logs["two"][1][1]
    names = sorted(os.listdir(out["two"]))
    assert names == sorted(os.listdir(out["one"])), names


def test_a_dead_process_stops_the_other_with_a_clear_error(runs):
    _, logs = runs
    (rc0, err0, t0), (rc1, _, t1) = logs["killed"]
    assert rc1 == 9
    assert rc0 != 0, err0[-3000:]
    # either JAX's coordination service noticed the missing heartbeats, or a collective with the
    # dead process broke first (gloo: connection reset / closed by peer); either way a message
    # naming the cause, not a hang
    assert any(m in err0 for m in ("stopped sending heartbeats", "another task died",
                                   "Connection reset by peer", "Connection closed by peer")), \
        err0[-3000:]
    assert "process 0 of 2" in err0 or "heartbeat" in err0, err0[-3000:]
    # process 0 did not hang: stopped within the heartbeat timeout (plus start-up slack)
    assert t0 - t1 < TIMEOUT_S + 45, (t0, t1)


def _resumed_on_the_other_topology(out, logs, name, resumed):
    _ok(logs, resumed)
    # the resume restored RL step 2 (every process): it ran only steps 3 and 4
    assert all("RL steps run: [3, 4]" in err for _, err, _ in logs[resumed]), resumed
    worst = _assert_same(out["one"], out[name])
    print(f"{name}, {resumed}, against 1x4: {worst:.2e}")
    # the stage's training state is removed once it ends
    assert not os.path.exists(os.path.join(out[name], "runs", "seed0", "sft_then_rl", "rl", "ckpt"))


def test_a_checkpoint_saved_by_two_processes_resumes_on_one(runs):
    out, logs = runs
    _resumed_on_the_other_topology(out, logs, "killed", "killed+resumed on 1x4")


@pytest.mark.slow
def test_a_checkpoint_saved_by_one_process_resumes_on_two(runs, tmp_path):
    """The reverse direction (two more launches, so opt-in: -m slow)."""
    out, logs = runs
    out = {**out, "stopped": str(tmp_path / "stopped")}
    logs = {"stopped": _launch(out["stopped"], 1, "stop"),
            "stopped+resumed on 2x2": _launch(out["stopped"], 2, resume=True)}
    rc, err, _ = logs["stopped"][0]
    assert rc != 0 and "stopped at RL step 3" in err, err[-3000:]
    _resumed_on_the_other_topology(out, logs, "stopped", "stopped+resumed on 2x2")


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "localhost:1", "--num-processes", "2"], "--process-id: needed with"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0", "--out", "o"],
     "expected HOST:PORT"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2", "--out", "o"],
     r"--process-id 2: expected 0 \.\. 1"),
    (["--coordinator", "localhost:1", "--num-processes", "0", "--process-id", "0", "--out", "o"],
     "--num-processes 0: must be >= 1"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "1"],
     "--out: needed with several processes"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "1", "--out", "o",
      "--process-timeout", "0"], "--process-timeout 0"),
])
def test_bad_process_flags_are_refused_before_jax_starts(flags, message, capsys, tmp_path,
                                                        monkeypatch):
    import re

    from llm_check import sharding
    from toy_models.cli import main

    def never(*a, **k):
        raise AssertionError("jax.distributed was started")

    monkeypatch.setattr(sharding, "init_distributed", never)
    monkeypatch.chdir(tmp_path)
    assert main(["llm", "run", *flags]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path) == []


def _launch_cli(args: list[str], processes: int) -> list[tuple[int, str, str]]:
    """``coupling *args`` in ``processes`` processes (4 devices in all); [(rc, stdout, stderr)]."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="0",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={4 // processes} "
                         "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-c", "import sys; from toy_models.cli import main; sys.exit(main())",
         *args, *([] if processes == 1 else ["--coordinator", f"localhost:{port}",
                                             "--num-processes", str(processes),
                                             "--process-id", str(i)])],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(processes)]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=400)
        results.append((p.returncode, stdout, stderr))
    return results


def _eval(model: str, processes: int) -> list[tuple[int, str, str]]:
    """``coupling llm eval --json`` of ``model`` on --mesh data=2,fsdp=2."""
    return _launch_cli(["llm", "eval", "--model", model, "--n-train", "32", "--n-heldout", "8",
                        "--eval-samples", "2", "--max-new-tokens", "2", "--mesh", "data=2,fsdp=2",
                        "--json", "--process-timeout", "15"], processes)


def test_eval_in_two_processes_gives_the_one_process_result(runs):
    """``coupling llm eval`` of the 2 x 2 run's final weights, in 2 processes x 2 devices and in
    1 x 4: the same held-out CE, rewards and accuracy (the sampled evaluation included); only
    process 0 prints."""
    out, logs = runs
    _ok(logs, "two")
    final = os.path.join(out["two"], "runs", "seed0", "sft_then_rl", "rl", "final")
    assert os.path.isfile(os.path.join(final, "params.safetensors")), os.listdir(out["two"])
    (rc1, one, err1), = _eval(final, 1)
    assert rc1 == 0, err1[-3000:]
    (rc_a, two, err_a), (rc_b, silent, err_b) = _eval(final, 2)
    assert rc_a == 0 and rc_b == 0, (err_a[-3000:], err_b[-3000:])
    # gloo prints "[Gloo] Rank i is connected to ... : n" lines on stdout, from several threads,
    # so a line's tail can land on a line of its own (a run of this test once failed on a stray
    # line before the JSON, most likely such a tail); the result is the JSON object between the
    # first "{" line and the last "}" line
    def result(out):
        lines = out.splitlines()
        assert "{" in lines and "}" in lines, out
        i, j = lines.index("{"), len(lines) - 1 - lines[::-1].index("}")
        return json.loads("\n".join(lines[i:j + 1]))

    assert not any(ln.startswith(("{", "}", ' "')) for ln in silent.splitlines()), silent
    a, b = result(one), result(two)
    assert set(a) == set(b) and a["heldout_rows"] == 8
    floats = [k for k, v in a.items() if isinstance(v, float)]
    assert len(floats) >= 5, a
    for k in a:
        if k in floats:
            assert abs(a[k] - b[k]) <= 1e-5 * max(abs(a[k]), 1e-2), (k, a[k], b[k])
        else:
            assert a[k] == b[k], k


def test_bad_process_flags_of_eval_are_refused_before_jax_starts(capsys, tmp_path, monkeypatch):
    from llm_check import sharding
    from toy_models.cli import main

    monkeypatch.setattr(sharding, "init_distributed",
                        lambda *a, **k: pytest.fail("jax.distributed was started"))
    monkeypatch.chdir(tmp_path)
    assert main(["llm", "eval", "--coordinator", "localhost:1", "--num-processes", "2",
                 "--process-id", "2"]) == 2
    assert "--process-id 2: expected 0 .. 1" in capsys.readouterr().err
    assert main(["llm", "eval", "--coordinator", "localhost:1", "--process-id", "0"]) == 2
    assert "--num-processes: needed with" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_sweep_in_two_processes_gives_the_one_process_sweep(tmp_path):
    """``coupling llm sweep`` (one seed, eps and beta, the exact setting: both orders) in 2
    processes x 2 devices against 1 x 4: the same rows to 1e-5; only process 0 writes and prints
    (opt-in: two more launches of a whole sweep)."""
    args = ["llm", "sweep", "--betas", "0.5", "--eps", "0.3", "--settings", "exact", "--seeds", "1",
            "--n-train", "32", "--n-heldout", "8", "--eval-samples", "2", "--base-steps", "2",
            "--sft-steps", "2", "--sft-batch", "8", "--rl-steps", "2",
            "--rl-then-sft-rl-steps", "2", "--group-size", "4", "--prompts-per-step", "4",
            "--max-new-tokens", "2", "--eval-every", "2", "--ckpt-every", "2",
            "--no-local-theory", "--no-sampled-eval", "--mesh", "data=2,fsdp=2",
            "--process-timeout", "15"]
    out = {n: str(tmp_path / n) for n in ("one", "two")}
    one = _launch_cli([*args, "--out", out["one"]], 1)
    two = _launch_cli([*args, "--out", out["two"]], 2)
    for name, res in (("one", one), ("two", two)):
        for i, (rc, _, err) in enumerate(res):
            assert rc == 0, f"{name}, process {i}: exit {rc}\n{err[-3000:]}"
    assert "sweep.md" in two[0][1] and "process 1: done" in two[1][1]
    assert not any(ln.startswith("|") for ln in two[1][1].splitlines())  # no sweep table
    rows = {}
    for name in out:
        with open(os.path.join(out[name], "rows.jsonl")) as f:
            rows[name] = sorted((json.loads(line) for line in f), key=lambda r: r["key"])
    assert [r["key"] for r in rows["one"]] == [r["key"] for r in rows["two"]]
    assert len(rows["one"]) == 2  # sft_then_rl and rl_then_sft
    worst = 0.0
    for a, b in zip(rows["one"], rows["two"]):
        for k, x in dict(_flat(a)).items():
            y = dict(_flat(b))[k]
            if isinstance(x, float):
                d = abs(x - y) / max(abs(x), 1e-2)
                worst = max(worst, d)
                assert d <= 1e-5, (k, x, y)
            else:
                assert x == y, k
    print(f"sweep 2x2 against 1x4: largest relative difference {worst:.2e}")
    assert sorted(os.listdir(out["one"])) == sorted(os.listdir(out["two"]))
