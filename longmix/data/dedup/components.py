"""Connected components of the verified pairs as tasks, each holding the edges of one document range only:
the large-star / small-star rounds of Kiveris et al., "Connected Components in MapReduce and Beyond" (2014).

Why this algorithm: it works on an edge list partitioned by node, which is what the verify tasks write, and
a step needs only the edges touching its range (no shared state, no actors, so a task killed or retried on
another node just runs again); it converges in O(log^2 n) rounds whatever the graph's diameter (label
propagation needs as many rounds as the longest chain of near copies); and it ends with every component a
star around its smallest document, which is the component's label, the same for any split.

- **large-star** at node u: m = the smallest of u and its neighbours; every larger neighbour is joined to m;
- **small-star** at node u: u and every smaller neighbour are joined to m.
Both keep the components and their smallest documents. The rounds (large, then small) stop when no node
that has a smaller neighbour has any other neighbour: then every component is a star around its smallest
document, and each node's m is its label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from longmix.formats.ipc import write_ipc
from longmix.formats.routed import range_of, read_slices, slices_for, write_routed
from longmix.pipeline.stage import StageJob

EDGE_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64())])

MAX_ROUNDS = 200  # O(log^2 n): 10B documents need far fewer; more means a bug, not a big graph


def _unique_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pairs sorted by x then y, each once."""
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    keep = np.r_[True, (x[1:] != x[:-1]) | (y[1:] != y[:-1])] if len(x) else np.zeros(0, dtype=bool)
    return x[keep], y[keep]


def star_step(a: np.ndarray, b: np.ndarray, lo: int, hi: int, large: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """One large-star (or small-star) step at the nodes lo..hi-1, from every edge (a, b) touching them.

    Returns the edges it emits (x, y), the range's nodes with their m (the smallest of the node and its
    neighbours), and how many of those nodes have a smaller neighbour and another one (0 everywhere: the
    components are stars and m is each node's label)."""
    in_a, in_b = (a >= lo) & (a < hi), (b >= lo) & (b < hi)
    u, v = _unique_pairs(np.concatenate([a[in_a], b[in_b]]), np.concatenate([b[in_a], a[in_b]]))
    if not len(u):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty, 0
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    nodes, degree = u[starts], np.diff(np.r_[starts, len(u)])
    m = np.minimum(nodes, np.minimum.reduceat(v, starts))
    not_star = int(np.count_nonzero((m < nodes) & (degree > 1)))
    m_edge = np.repeat(m, degree)
    if large:
        sel = v > u
        x, y = v[sel], m_edge[sel]
    else:
        sel = (v < u) & (v != m_edge)
        moved = m < nodes
        x, y = np.concatenate([v[sel], nodes[moved]]), np.concatenate([m_edge[sel], m[moved]])
    x, y = _unique_pairs(x, y)
    return x, y, nodes, m, not_star


def route_edges(path: Path, x: np.ndarray, y: np.ndarray, bounds: np.ndarray) -> list[int]:
    """Write edges to the ranges of both their ends (once when both ends share a range)."""
    rx, ry = range_of(x, bounds), range_of(y, bounds)
    two = rx != ry
    table = pa.table({"a": np.concatenate([x, x[two]]), "b": np.concatenate([y, y[two]])})
    return write_routed(path, table, np.concatenate([rx, ry[two]]), len(bounds) - 1)


def star_task(*, files: list[str], starts: list[int], stops: list[int], lo: int, hi: int, large: bool,
              bounds: list[int], out_path: str, labels_path: str) -> dict[str, Any]:
    """A star step for one document range: the emitted edges routed to the next step's ranges, and (large
    steps) the range's nodes with their m, which are the labels once no range reports a non-star node."""
    t = read_slices(files, starts, stops, EDGE_SCHEMA)
    x, y, nodes, m, not_star = star_step(t.column("a").to_numpy(), t.column("b").to_numpy(), lo, hi, large)
    offsets = route_edges(Path(out_path), x, y, np.asarray(bounds, dtype=np.int64))
    if large:
        write_ipc(Path(labels_path), pa.table({"doc": nodes, "label": m}))
    return {"offsets": offsets, "edges_in": int(t.num_rows), "not_star": not_star, "nodes": int(len(nodes))}


def components_with_tasks(job: StageJob, edge_files: list[Path], offsets: list[list[int]], bounds: np.ndarray
                          ) -> tuple[list[Path], dict[str, Any]]:
    """Label files (doc, label = the component's smallest document), one per document range, for every
    document with a verified pair; from routed edge files. Each round is one task per range and step."""
    ranges = len(bounds) - 1
    edges_in_max = 0
    for rnd in range(MAX_ROUNDS):
        for step in ("large", "small"):
            names = [f"{rnd:03d}-{step}-{r:05d}of{ranges:05d}" for r in range(ranges)]
            tasks = []
            for r, name in enumerate(names):
                files, starts, stops = slices_for(edge_files, offsets, r)
                tasks.append(job.task(f"cc-{name}", star_task, cost=sum(stops) - sum(starts),
                                      files=[job.reads(f) for f in files], starts=starts, stops=stops,
                                      lo=int(bounds[r]), hi=int(bounds[r + 1]), large=step == "large",
                                      bounds=bounds.tolist(), out_path=job.path("components", f"edges-{name}.arrow"),
                                      labels_path=job.path("components", f"labels-{name}.arrow")))
            stats = job.run_tasks(tasks, f"components, round {rnd + 1} ({step} star)", counted=False)
            edges_in_max = max([edges_in_max, *(s["edges_in"] for s in stats)])
            if step == "large" and sum(s["not_star"] for s in stats) == 0:
                labels = [job.dir / "components" / f"labels-{name}.arrow" for name in names]
                return labels, {"component_rounds": rnd + 1, "component_edges_per_task_max": edges_in_max}
            edge_files = [job.dir / "components" / f"edges-{name}.arrow" for name in names]
            offsets = [s["offsets"] for s in stats]
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds (a bug)")
