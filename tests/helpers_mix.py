"""The mix plan computed the way longmix did before it ran as tasks: plan_mix over the whole corpus's lengths
(and scores) in one process; the reference the stage's plan is checked against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmix.data.mix.plan import MixPlan, plan_mix
from longmix.data.mix.stage import mix_params
from longmix.data.recipe import Recipe
from longmix.formats.ipc import read_ipc


def plan_in_one_process(recipe: Recipe) -> MixPlan:
    out = recipe.output_dir
    outputs = json.loads((out / "tokenize" / "report.json").read_text())["outputs"]
    tables = [read_ipc(out / "tokenize" / o["path"], ["source", "n_tokens"]) for o in outputs]
    src = np.concatenate([pc.index_in(t.column("source"), value_set=pa.array(recipe.source_names)).to_numpy()
                          for t in tables]).astype(np.int16)
    lens = np.concatenate([t.column("n_tokens").to_numpy() for t in tables]).astype(np.int32)
    params = mix_params(recipe)
    scores = None
    if any(s.long_select for s in params.sources):
        scored = json.loads((out / "longdep" / "report.json").read_text())["outputs"]
        t = pa.concat_tables([pq.read_table(out / "longdep" / o["path"]) for o in scored])
        scores = {c: t.column(c).to_numpy(zero_copy_only=False) for c in ("longdep_score", "longdep_share")}
    return plan_mix(src, lens, params, scores)


def assert_plan_matches_one_process(recipe: Recipe, report: dict) -> None:
    """The stage's plan.arrow counts and its report equal plan_mix's over the whole corpus."""
    want = plan_in_one_process(recipe)
    got = read_ipc(Path(recipe.output_dir) / "mix" / "plan.arrow")
    assert np.array_equal(got.column("count").to_numpy(), want.counts)
    assert report["mix"] == json.loads(json.dumps(want.report.to_dict()))
