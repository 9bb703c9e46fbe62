"""The static maps draw rare categories last (on top), larger and outlined, so that a few
samples (the demo's 10 dividend-zero divisions among 2,000) are not lost under the majority."""

from __future__ import annotations

import numpy as np

from losskernel_dist.analysis import plots


def test_rare_categories_are_drawn_last_larger_and_outlined(tmp_path):
    values = np.zeros(400, int)
    values[100:300] = 2  # two common categories, 200 each
    values[[7, 350, 399]] = 1  # a rare one: 3 of 400
    spec = plots.colour_spec(values, "categorical")
    assert [name for name, _ in spec["legend"]] == ["0 (197)", "1 (3, on top)", "2 (200)"]
    order, size, edge = plots.draw_order(spec, len(values))
    assert sorted(order.tolist()) == list(range(400))
    assert sorted(order[-3:].tolist()) == [7, 350, 399]
    assert np.all(size[-3:] == plots.RARE_SIZE) and np.all(size[:-3] == 1)
    assert np.all(edge[-3:] > 0) and np.all(edge[:-3] == 0)
    common = values[order[:-3]]
    assert 0.3 < np.mean(common[:200] == 0) < 0.7  # common categories interleaved, not stacked
    path = plots.scatter_2d(np.random.default_rng(0).normal(size=(400, 2)), spec, "map",
                            "value", tmp_path / "map.png")
    assert path.stat().st_size > 1000


def test_equal_categories_are_none_rare_and_continuous_values_keep_a_random_order():
    assert not plots.rare_categories(np.r_[np.zeros(50, int), np.ones(50, int)]).any()
    spec = plots.colour_spec(np.linspace(0, 1, 100), "continuous")
    order, size, _ = plots.draw_order(spec, 100)
    assert np.all(size == 1) and not np.array_equal(order, np.arange(100))
