"""The benchmark computes the same numbers in JAX and in the NumPy loop."""

from __future__ import annotations

from toy_models import bench


def test_jax_and_numpy_agree_on_a_small_run():
    res = bench.run(instances=512, repeats=1, num_x=3, num_y=4)
    assert res["max_abs_difference"] < 1e-10
    assert res["numpy_loop_instances"] == 512
