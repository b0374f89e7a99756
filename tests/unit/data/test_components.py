"""Connected components in rounds of large-star / small-star steps, each step run per document range as
its tasks do (components.py), against scipy over the whole graph: every node gets its component's
smallest node, however the nodes are split, on chains (the worst case for label propagation), stars,
cycles and random graphs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from longmix.data.dedup.components import MAX_ROUNDS, star_step
from longmix.formats.routed import range_bounds


def _rounds(a: np.ndarray, b: np.ndarray, n: int, ranges: int) -> tuple[dict[int, int], int]:
    """Labels and rounds, each step computed range by range from the edges touching that range only."""
    bounds = range_bounds(n, ranges)
    for rnd in range(MAX_ROUNDS):
        for large in (True, False):
            out = []
            for r in range(ranges):
                lo, hi = int(bounds[r]), int(bounds[r + 1])
                touching = ((a >= lo) & (a < hi)) | ((b >= lo) & (b < hi))
                out.append(star_step(a[touching], b[touching], lo, hi, large))
            if large and sum(o[4] for o in out) == 0:
                return {int(u): int(m) for o in out for u, m in zip(o[2], o[3], strict=True)}, rnd + 1
            a, b = np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])
    raise AssertionError("no convergence")


def _scipy(a: np.ndarray, b: np.ndarray, n: int) -> dict[int, int]:
    _, lab = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    smallest = {}
    for node, c in enumerate(lab.tolist()):
        smallest.setdefault(c, node)
    touched = set(a.tolist()) | set(b.tolist())
    return {node: smallest[c] for node, c in enumerate(lab.tolist()) if node in touched}


def _graphs():
    rng = np.random.default_rng(5)
    n = 400
    chain = rng.permutation(n)  # one path through every node, in random order: diameter n - 1
    yield "chain", chain[1:], chain[:-1], n
    yield "star", np.full(n - 1, 17), np.delete(np.arange(n), 17), n
    cycle = rng.permutation(120)
    yield "cycle", cycle, np.roll(cycle, 1), n
    a, b = rng.integers(0, n, 300), rng.integers(0, n, 300)
    yield "random", a[a != b], b[a != b], n
    yield "empty", np.zeros(0, np.int64), np.zeros(0, np.int64), n


@pytest.mark.parametrize("ranges", [1, 3, 16, 400])
def test_star_rounds_give_the_smallest_node_of_each_component(ranges):
    for name, a, b, n in _graphs():
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        labels, rounds = _rounds(a, b, n, ranges)
        assert labels == _scipy(a, b, n), (name, ranges)
        assert rounds <= 2 * int(np.log2(n)) ** 2, (name, rounds)
        if name == "chain":
            assert rounds >= 3  # a chain takes several rounds: the test exercises them


def test_star_step_reports_non_stars():
    # 0 - 5 - 3: node 5 has a smaller neighbour (0) and another (3): not yet a star
    a, b = np.array([5, 5]), np.array([0, 3])
    *_, not_star = star_step(a, b, 0, 10, large=True)
    assert not_star == 1
    x, y, nodes, m, not_star = star_step(np.array([5, 3]), np.array([0, 0]), 0, 10, large=True)
    assert not_star == 0 and dict(zip(nodes.tolist(), m.tolist(), strict=True)) == {0: 0, 3: 0, 5: 0}
