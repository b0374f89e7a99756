"""`longmix ablate`: build each arm's data (shared upstream once), train every unfinished arm in one launch,
evaluate each arm's loss vs context, cache finished arms, and write the report."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from longmix.ablate.data import build_data
from longmix.ablate.load_time import write_load_time_checkpoint
from longmix.ablate.suite import (
    ArmSpec,
    Suite,
    arm_data_dict,
    arm_seq_lens,
    arm_sft_dict,
    arm_train_dict,
    base_data_dict,
    pretrain_dict,
    with_seq_len,
)
from longmix.core.atomic import write_json
from longmix.core.errors import UserError
from longmix.core.recipe_io import parse_model, settings_hash
from longmix.data.recipe import Recipe
from longmix.eval.evaluations.context_loss import range_keys
from longmix.train.launch import torchrun

log = logging.getLogger("longmix")


def dotted_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two recipe dumps differ (lists compare whole: a changed source list is one key)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += dotted_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def data_lineage(manifest: Path, base_recipe: dict[str, Any]) -> dict[str, Any]:
    """What the arm's manifest says it was built from, and where that differs from the suite's base recipe
    (a data recipe, or an SFT suite's sft-pack recipe)."""
    lin = json.loads(manifest.read_text())["lineage"]
    if not base_recipe:  # base.manifest: the arms train on the built mix itself, no recipe to differ from
        return {"manifest": str(manifest), "recipe_sha256": lin["recipe_sha256"], "differs_from_base": []}
    model = _sft_recipe_model() if json.loads(manifest.read_text()).get("sft") else Recipe
    ref = parse_model(model, base_recipe, "base data recipe").model_dump(mode="json")
    diff = [k for k in dotted_diff(ref, lin["recipe"]) if k not in ("name", "output")]
    return {"manifest": str(manifest), "recipe_sha256": lin["recipe_sha256"], "differs_from_base": diff}


def _sft_recipe_model() -> type:
    from longmix.data.sft.sft_settings import SftRecipe

    return SftRecipe


class AblationRunner:
    def __init__(self, suite: Suite, output: Path | None = None, nproc: int = 1, progress: bool = False) -> None:
        self.suite = suite
        self.out = output or suite.resolve(suite.output)
        self.nproc = nproc
        self.progress = progress

    def check(self) -> None:
        """Every arm's data recipe (at each of its lengths) and the base model, before anything is built."""
        from longmix.data.flow import FLOW
        from longmix.pipeline.runner import check_flow

        for arm in self.suite.arms:
            if arm.load_time:
                self._check_load_time(arm)
                continue
            if self.suite.base.sft is not None:
                self._sft_recipe(arm)
                continue
            if self.suite.base.manifest is not None:
                arm_seq_lens(self.suite, arm)  # the built mix exists and every phase is at its length
                continue
            for sl in arm_seq_lens(self.suite, arm):
                data = {**arm_data_dict(self.suite, arm, sl), "output": str(self.out / "check")}
                where = f"suite {self.suite.name}, arm {arm.name}" + (f" at seq_len {sl}" if sl else "")
                check_flow(FLOW, parse_model(Recipe, data, where), where=where)
        pre = self.suite.base.pretrain
        if pre is not None and pre.data and not all(a.from_scratch for a in self.suite.arms):
            data = {**with_seq_len(base_data_dict(self.suite, pretrain=True), pre.seq_len),
                    "output": str(self.out / "check")}
            where = f"suite {self.suite.name}, base.pretrain.data"
            check_flow(FLOW, parse_model(Recipe, data, where), where=where)
        if self.suite.base.model is not None and not all(a.from_scratch for a in self.suite.arms):
            path = self.suite.resolve(self.suite.base.model)
            if not (path / "config.json").is_file():
                raise UserError(f"base model '{path}' has no config.json (run `make demo` or give another)")
            e = self.suite.eval
            if e.longqa is not None or (e.ruler is not None and e.ruler.chat):
                from longmix.models.chat_template import require_chat_template

                require_chat_template(path, f"suite {self.suite.name}: eval.longqa / eval.ruler.chat")
        if self.suite.eval.longqa is not None:
            data = self.suite.resolve(self.suite.eval.longqa.data)
            if not data.is_file():
                raise UserError(f"suite {self.suite.name}: eval.longqa.data '{data}' not found (run `longmix "
                                "sft-data` first: it writes heldout.jsonl)")

    def _check_load_time(self, arm: ArmSpec) -> None:
        """A train: none arm's RoPE change fits the base model's config (its layer types, its kind)."""
        from transformers import AutoConfig

        from longmix.train.model import apply_rope

        assert self.suite.base.model is not None and arm.rope is not None
        path = self.suite.resolve(self.suite.base.model)
        if not (path / "config.json").is_file():
            raise UserError(f"base model '{path}' has no config.json (run `make model` or give another)")
        try:
            apply_rope(AutoConfig.from_pretrained(path, trust_remote_code=False), arm.rope,
                       arm.max_position_embeddings)
        except UserError as exc:
            raise UserError(f"suite {self.suite.name}, arm {arm.name}: {exc}") from None

    # ---- data -------------------------------------------------------------------------------------------
    def _data(self, recipe: dict[str, Any]) -> Path:
        """Arms with identical data recipes share one mix folder; different ones share the upstream."""
        folder = self.out / "data" / f"mix-{settings_hash(recipe)}"
        return build_data(recipe, folder, self.out / "data", self.progress)

    def arm_manifests(self, arm: ArmSpec) -> list[Path]:
        if self.suite.base.sft is not None:
            return [self._sft_data(arm)]
        if self.suite.base.manifest is not None:
            return [self.suite.resolve(self.suite.base.manifest)] * len(arm_seq_lens(self.suite, arm))
        return [self._data(arm_data_dict(self.suite, arm, sl)) for sl in arm_seq_lens(self.suite, arm)]

    def _sft_recipe(self, arm: ArmSpec) -> Any:
        """The arm's sft-pack recipe, checked (its files and the model's chat template too) before anything runs."""
        from longmix.data.sft.sft_build import check_sft

        recipe = arm_sft_dict(self.suite, arm)
        folder = self.out / "data" / f"sft-{settings_hash(recipe)}"
        parsed = parse_model(_sft_recipe_model(), {**recipe, "output": str(folder)},
                             f"suite {self.suite.name}, arm {arm.name}")
        check_sft(parsed)
        return parsed

    def _sft_data(self, arm: ArmSpec) -> Path:
        """Arms with identical sft-pack recipes share one folder. Packing takes seconds and is deterministic, so
        it always reruns: a regenerated long-QA file can never be trained on stale shards."""
        from longmix.data.sft.sft_build import build_sft

        recipe = self._sft_recipe(arm)
        build_sft(recipe)
        return Path(recipe.output) / "manifest.json"

    @staticmethod
    def _data_key(manifest: Path) -> str | list[str]:
        """What an arm's training depends on in its data: the recipe, and for SFT shards (rebuilt every run, from
        inputs that may have been regenerated) the shards' own hashes too."""
        m = json.loads(manifest.read_text())
        if not m.get("sft"):
            return m["lineage"]["recipe_sha256"]
        return [m["lineage"]["recipe_sha256"], *[s["sha256"] for s in m["shards"]]]

    # ---- base model ---------------------------------------------------------------------------------------
    def base_model(self) -> tuple[Path | None, dict[str, Any] | None]:
        """The checkpoint arms continue from (None when every arm starts from scratch), and the training job
        that makes it (None if it exists)."""
        if all(a.from_scratch for a in self.suite.arms):
            return None, None
        if self.suite.base.model is not None:
            path = self.suite.resolve(self.suite.base.model)
            if not (path / "config.json").is_file():
                raise UserError(f"base model '{path}' has no config.json (run `make demo` or give another)")
            return path, None
        pre = self.suite.base.pretrain
        assert pre is not None
        hf = self.out / "base" / "hf"
        if (hf / "config.json").is_file():
            return hf, None
        data = with_seq_len({**base_data_dict(self.suite, pretrain=True), "name": f"{self.suite.name}-base"},
                            pre.seq_len)
        manifest = self._data(data)
        rec = self._write_recipe(self.out / "base" / "train.yaml",
                                 pretrain_dict(self.suite, manifest, self.out / "base" / "run"))
        return hf, {"recipe": str(rec), "export": str(hf)}

    @staticmethod
    def _write_recipe(path: Path, train: dict[str, Any]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(train, sort_keys=False))
        return path

    # ---- run ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.time()
        s = self.suite
        self.check()  # a bad arm fails now, not after the base model and the other arms trained
        self.out.mkdir(parents=True, exist_ok=True)
        base_hf, base_job = self.base_model()
        base_recipe = base_data_dict(s) if s.base.data is not None or s.base.sft is not None else {}
        eval_cfg = s.eval.model_dump()
        arms: list[dict[str, Any]] = []
        if base_job:  # its own launch: arms load its export, which only exists after the launch
            self._launch([base_job])
        jobs: list[dict[str, Any]] = []
        for arm in s.arms:
            manifests = self.arm_manifests(arm)
            for seed in s.seeds:
                folder = self.out / "arms" / f"{arm.name}-s{seed}"
                if arm.load_time:  # not trained: the base with its RoPE changed, the same for every seed
                    assert base_hf is not None
                    train = {"load_time": {"base": str(base_hf), "rope": arm.rope.model_dump(),
                                           "max_position_embeddings": arm.max_position_embeddings}}
                else:
                    train = arm_train_dict(s, arm, seed, base_hf, manifests, folder / "run")
                train_key = settings_hash(train, [self._data_key(m) for m in manifests])
                key = settings_hash(train_key, eval_cfg)  # an eval-only change re-evaluates, never retrains
                self._claim(folder, train_key)
                cached = self._cached(folder, key)
                arms.append({"arm": arm, "seed": seed, "folder": folder, "key": key, "manifests": manifests,
                             "train": train, "cached": cached is not None, "result": cached})
                if cached is None and arm.load_time:
                    write_load_time_checkpoint(base_hf, folder / "hf", arm.rope, arm.max_position_embeddings)
                elif cached is None and not (folder / "hf" / "config.json").is_file():
                    rec = self._write_recipe(folder / "train.yaml", train)
                    jobs.append({"recipe": str(rec), "export": str(folder / "hf")})
        log.info("%s: %d arm runs, %d cached, %d to train, %d changed at load time only", s.name, len(arms),
                 sum(a["cached"] for a in arms), len(jobs), sum(a["arm"].load_time for a in arms))
        if jobs:
            for group in ([jobs] if s.launch == "together" else [[job] for job in jobs]):
                self._launch(group)
        results = []
        base_result = self._eval_base(base_hf) if base_hf is not None else None
        for a in arms:
            if a["result"] is None:
                a["result"] = self._finish_arm(a, base_recipe, base_result)
            results.append({**a["result"], "cached": a["cached"]})
        summary = {"suite": s.name, "description": s.description, "output": str(self.out),
                   "train_tokens": s.train_tokens, "seeds": s.seeds, "eval": eval_cfg, "base": base_result,
                   "arms": results, "seconds": round(time.time() - t0, 1),
                   "reference": s.reference or s.arms[0].name,
                   "paired_metrics": s.paired_metrics or [f"loss@{k}" for k in range_keys(s.eval.table_contexts)],
                   "findings": [f.model_dump(exclude_none=True) for f in s.findings]}
        from longmix.ablate.report import write_report

        write_report(summary, self.out / "report")
        return summary

    @staticmethod
    def _claim(folder: Path, train_key: str) -> None:
        """An arm folder trained with other settings is wiped: its checkpoints would otherwise be resumed
        (or its export reused) under the new settings."""
        marker = folder / "train_key"
        if marker.is_file() and marker.read_text().strip() != train_key:
            log.info("%s: settings changed, retraining", folder.name)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(train_key + "\n")

    def _cached(self, folder: Path, key: str) -> dict[str, Any] | None:
        path = folder / "result.json"
        if path.is_file():
            res = json.loads(path.read_text())
            if res.get("key") == key:
                return res
        return None

    def _launch(self, jobs: list[dict[str, Any]]) -> None:
        jobs_path = self.out / "jobs.json"
        write_json(jobs_path, jobs)
        rc = torchrun(["longmix.ablate.worker", str(jobs_path)], self.nproc)
        if rc:
            raise UserError(f"training the arms exited with code {rc} (see the rank logs above); rerun to resume")
        from longmix.train.export import export
        from longmix.train.recipe import load_train_recipe

        for job in jobs:
            export(load_train_recipe(job["recipe"]).output_dir, Path(job["export"]))

    def _eval(self, hf: Path, name: str, draw: int = 0) -> dict[str, Any]:
        """Every evaluation the suite's `eval:` names, through the registry: loss vs context (the section
        itself) first, its fields at the top of the result, then each task under its key."""
        from longmix.eval.evaluation import SuiteRun
        from longmix.eval.registry import suite_evaluations
        from longmix.models.loading import load_checkpoint

        e = self.suite.eval
        ctx = SuiteRun(name=name, data=[self.suite.resolve(p) for p in e.data], max_len=e.max_len, seed=e.seed + draw,
                       resolve=self.suite.resolve, progress=self.progress, draw=draw)
        loaded: Any = load_checkpoint(hf, device="cpu")
        res: dict[str, Any] = {}
        for ev in suite_evaluations():
            spec = e if ev.key is None else getattr(e, ev.key)
            if spec is None:
                continue
            if ev.on_folder:
                loaded = None  # it loads the checkpoint its own way: one model in memory at a time
            out = ev.run(hf if ev.on_folder else loaded, spec, ctx)
            if ev.key is None:
                res.update(out)
            else:
                res[ev.key] = out
        return res

    def _eval_base(self, hf: Path) -> dict[str, Any]:
        key = settings_hash(str(hf), self.suite.eval.model_dump(), (hf / "config.json").stat().st_mtime)
        path = self.out / "base" / "eval.json"
        if path.is_file() and json.loads(path.read_text()).get("key") == key:
            return json.loads(path.read_text())
        res = {"key": key, "checkpoint": str(hf), "eval": self._eval(hf, "base")}
        write_json(path, res)
        return res

    def _finish_arm(self, a: dict[str, Any], base_recipe: dict[str, Any],
                    base_result: dict[str, Any] | None) -> dict[str, Any]:
        from longmix.ablate.report import training_summary

        arm: ArmSpec = a["arm"]
        name = f"{arm.name}-s{a['seed']}"
        draw = a["seed"] if arm.load_time else 0
        if arm.load_time and arm.unchanged and draw == 0 and base_result is not None:
            # the base itself at the base's own draw: already measured (only the curve's label is the arm's)
            evaluated = {**base_result["eval"], "name": name}
        else:
            evaluated = self._eval(a["folder"] / "hf", name, draw)
        res = {"key": a["key"], "arm": arm.name, "label": arm.label or arm.name, "seed": a["seed"],
               "overrides": {"data": arm.data, "train": arm.train,
                             "phases": [p.model_dump() for p in arm.phases], "from_scratch": arm.from_scratch},
               "lineage": [data_lineage(m, base_recipe) for m in a["manifests"]],
               "training": None if arm.load_time else training_summary(a["folder"] / "run" / "metrics.jsonl"),
               "load_time": arm.rope.model_dump() if arm.load_time else None,
               # a load-time arm's seeds are its draws: the same weights, other haystacks, needles and documents
               "eval": evaluated,
               "eval_seed": self.suite.eval.seed + draw,
               "checkpoint": str(a["folder"] / "hf")}
        write_json(a["folder"] / "result.json", res)
        return res
