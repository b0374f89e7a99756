"""Ablation suites: one shared base (data recipe, base model, training template, eval settings) and arms,
each overriding part of the data recipe and/or the training recipe. Everything an arm runs is built here
as plain dicts, so the arms differ from each other only in what their overrides say."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from longmix.core.errors import UserError
from longmix.core.recipe_io import Strict, deep_merge, load_with_extends, parse_model
from longmix.eval.evaluations.context_gain import GainSpec
from longmix.eval.evaluations.context_loss import ContextLossSpec
from longmix.eval.evaluations.dependency_loss import DependencySpec
from longmix.eval.evaluations.harness import HarnessSpec
from longmix.eval.evaluations.longqa import LongQASpec
from longmix.eval.evaluations.probes import ProbeSpec
from longmix.eval.evaluations.ruler import RulerSpec
from longmix.train.recipe import RopeConfig


class PhaseSpec(Strict):
    """One training phase of an arm: this share of the arm's token budget at this sequence length."""

    seq_len: int | None = Field(None, ge=16, description="default: the data recipe's seq_len")
    fraction: float = Field(1.0, gt=0, le=1)


class PretrainSpec(Strict):
    """A base model trained once from scratch on the base data at a short length, shared by every arm."""

    seq_len: int = Field(ge=16)
    tokens: int = Field(gt=0)
    data: str | None = Field(None, description="its own data recipe (relative to the suite); default base.data")
    train: dict[str, Any] = Field(description="training recipe fields (model.config, batch, optim...)")


class BaseSpec(Strict):
    data: str | None = Field(None, description="data recipe (YAML), relative to the suite")
    sft: str | None = Field(None, description="an `sft-pack` recipe (YAML), relative to the suite, instead of data: "
                            "the arms instruction-tune base.model on SFT shards")
    manifest: str | None = Field(None, description="a built mix (its manifest.json), relative to the suite, that "
                                 "every arm trains on instead of a data recipe (one phase length: the mix's)")
    model: str | None = Field(None, description="HF checkpoint to continue from (or use pretrain)")
    pretrain: PretrainSpec | None = None
    train: dict[str, Any] = Field(default_factory=dict, description="training template every arm starts from (no "
                                  "data.phases); not needed when no arm trains")

    @model_validator(mode="after")
    def _one_model(self) -> BaseSpec:
        if (self.model is None) == (self.pretrain is None):
            raise ValueError("set exactly one of base.model (a checkpoint) or base.pretrain (train one once)")
        if sum(x is not None for x in (self.data, self.sft, self.manifest)) > 1:
            raise ValueError("set one of base.data (a data recipe), base.sft (an sft-pack recipe) or base.manifest "
                             "(a built mix)")
        if self.sft is not None and self.model is None:
            raise ValueError("base.sft tunes a checkpoint: set base.model")
        return self


class FindingSpec(Strict):
    """One finding of the paper and how this suite tests it; its verdict is computed from results.json."""

    finding: str
    paper: str = Field(description="the paper's number, quoted from its tables")
    metric: str = Field(description="see longmix.ablate.verdicts, e.g. loss@1024-2048 or dep@256-2048")
    expect: Literal["lower", "higher", "similar", "not_higher", "not_lower", "increasing"]
    arm: str | None = None
    versus: str | None = Field(None, description="the reference arm of the paired difference (none: the arm's "
                               "own value against 0)")
    arms: list[str] | None = Field(None, description="expect increasing: arms in the order the metric should rise")
    margin: float = Field(0.0, ge=0, description="similar / not_higher / not_lower: the difference allowed")
    note: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> FindingSpec:
        from longmix.ablate.verdicts import check_metric_name

        check_metric_name(self.metric)
        if self.expect == "increasing":
            if not self.arms or len(self.arms) < 2:
                raise ValueError(f"finding '{self.finding}': expect increasing needs arms (two or more)")
        elif not self.arm:
            raise ValueError(f"finding '{self.finding}': needs arm (and versus, unless its value is compared to 0)")
        return self


class EvalSpec(ContextLossSpec):
    """A suite's `eval:` section: loss vs context's settings (ContextLossSpec: data, max_len, ...), then one
    optional section per task evaluation, each the settings its evaluation module declares."""

    ruler: RulerSpec | None = None
    probes: ProbeSpec | None = None
    longqa: LongQASpec | None = None
    context_gain: GainSpec | None = None
    dependency: DependencySpec | None = None
    harness: HarnessSpec | None = None


class QuickSpec(Strict):
    """What `--quick` shrinks: a whole suite in a few minutes on 2 CPU cores (plumbing, not findings)."""

    train_tokens: int = Field(gt=0)
    pretrain_tokens: int | None = Field(None, gt=0)
    max_len: int = Field(512, ge=8)
    max_docs: int = Field(4, ge=1)
    table_contexts: list[int] = [64, 256, 512]
    task_lengths: list[int] = Field([512], description="RULER and probe lengths under --quick")
    task_samples: int = Field(1, ge=1, description="RULER samples / probe trials per cell under --quick")
    seq_len: int | None = Field(None, ge=16, description="every arm's training length under --quick (default: "
                                "the arms' own; a real model at 16K tokens is minutes per step on CPU)")
    dependency_data: list[str] | None = Field(None, min_length=1, description="eval.dependency's documents under "
                                              "--quick, when the suite's own are longer than its max_len")


class ArmSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    label: str | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="deep-merged into the base data recipe")
    sft: dict[str, Any] = Field(default_factory=dict, description="deep-merged into the base sft-pack recipe")
    train: dict[str, Any] | Literal["none"] = Field(
        default_factory=dict, description="deep-merged into the training template; none: not trained, the base "
        "model with `rope` applied at load time")
    rope: RopeConfig | None = Field(None, description="train: none arms: the RoPE change applied at load time")
    max_position_embeddings: int | None = Field(None, gt=0, description="train: none arms: the position limit "
                                                "(default: as a training run sets it)")
    from_scratch: bool = Field(False, description="start from base.pretrain.train's model, not the base model")
    phases: list[PhaseSpec] = Field(default_factory=lambda: [PhaseSpec()])

    @property
    def load_time(self) -> bool:
        return self.train == "none"

    @property
    def unchanged(self) -> bool:
        """A load-time arm that is the base model as shipped (RoPE kept, position limit kept)."""
        return self.load_time and self.rope is not None and self.rope.kind == "keep" and \
            self.max_position_embeddings is None

    @model_validator(mode="after")
    def _fractions(self) -> ArmSpec:
        if abs(sum(p.fraction for p in self.phases) - 1.0) > 1e-6:
            raise ValueError(f"arm {self.name}: phase fractions must sum to 1")
        if self.load_time:
            if self.rope is None:
                raise ValueError(f"arm {self.name}: train: none needs rope (the change applied at load time; "
                                 "kind: keep for the model as shipped)")
            if self.data or self.sft or self.from_scratch or len(self.phases) != 1:
                raise ValueError(f"arm {self.name}: train: none arms take no data, sft, phases or from_scratch")
        elif self.rope is not None or self.max_position_embeddings is not None:
            raise ValueError(f"arm {self.name}: rope and max_position_embeddings are for train: none arms; a "
                             "trained arm sets train.model.rope")
        return self


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    output: str = Field(description="suite folder (relative to the suite file)")
    seeds: list[int] = Field([0], min_length=1, description="training seeds; each arm runs once per seed")
    train_tokens: int = Field(gt=0, description="training tokens per arm (equal budgets)")
    base: BaseSpec
    eval: EvalSpec
    quick: QuickSpec
    arms: list[ArmSpec] = Field(min_length=1)
    launch: Literal["together", "per_arm"] = Field(
        "together", description="together: every arm run trained in one launch (start-up paid once; fits small "
        "models, as DeepSpeed does not return an engine's memory to the system between runs in one process); "
        "per_arm: one launch per arm run (a real checkpoint's engines, several GB per rank, would add up)")
    reference: str | None = Field(None, description="arm the others are paired against (default: the first)")
    paired_metrics: list[str] | None = Field(None, description="default: loss over each table range")
    findings: list[FindingSpec] = Field(default_factory=list)
    base_dir: str = Field(".", exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique")
        from longmix.ablate.verdicts import check_metric_name

        for m in self.paired_metrics or []:
            check_metric_name(m)
        known = set(names)
        if self.reference is not None and self.reference not in known:
            raise ValueError(f"reference '{self.reference}' is not an arm")
        for f in self.findings:
            if bad := sorted({a for a in [f.arm, f.versus, *(f.arms or [])] if a} - known):
                raise ValueError(f"finding '{f.finding}' names unknown arm(s) {', '.join(bad)}")
        if any(a.from_scratch for a in self.arms) and self.base.pretrain is None:
            raise ValueError("from_scratch arms need base.pretrain (its train.model is the from-scratch model)")
        trained = [a for a in self.arms if not a.load_time]
        if trained and self.base.data is None and self.base.sft is None and self.base.manifest is None:
            raise ValueError(f"arm {trained[0].name} trains: set base.data (a data recipe), base.sft (an sft-pack "
                             "recipe) or base.manifest (a built mix)")
        if trained and not self.base.train:
            raise ValueError(f"arm {trained[0].name} trains: set base.train (the training template)")
        if len(trained) < len(self.arms) and self.base.model is None:
            raise ValueError("train: none arms change a checkpoint at load time: set base.model")
        sft = self.base.sft is not None
        for a in self.arms:
            if a.sft and not sft:
                raise ValueError(f"arm {a.name}: sft overrides need base.sft (an sft-pack recipe)")
            if a.data and self.base.data is None:
                raise ValueError(f"arm {a.name}: data overrides need base.data" +
                                 ("; an SFT suite's arms override sft" if sft else ""))
            if sft and len(a.phases) != 1:
                raise ValueError(f"arm {a.name}: an SFT arm trains one phase on its SFT shards")
        return self

    def resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (Path(self.base_dir) / path).resolve()


def load_suite(path: str | Path, quick: bool = False) -> Suite:
    """Validate a suite (``extends`` honoured); with ``quick`` the budgets and eval shrink (one seed)."""
    data = load_with_extends(path)
    data["base_dir"] = str(Path(path).resolve().parent)
    suite: Suite = parse_model(Suite, data, str(path))
    if quick:
        q = suite.quick
        pre = suite.base.pretrain
        if pre is not None and q.pretrain_tokens:
            pre = pre.model_copy(update={"tokens": q.pretrain_tokens})
        arms = suite.arms if q.seq_len is None else [
            a if a.load_time else a.model_copy(update={"phases": [p.model_copy(update={"seq_len": q.seq_len})
                                                                  for p in a.phases]}) for a in suite.arms]
        suite = suite.model_copy(update={
            "seeds": suite.seeds[:1], "train_tokens": q.train_tokens, "arms": arms,
            "base": suite.base.model_copy(update={"pretrain": pre}),
            "eval": _quick_eval(suite.eval, q),
            "output": suite.output.rstrip("/") + "-quick"})
    return suite


def _quick_eval(e: EvalSpec, q: QuickSpec) -> EvalSpec:
    """The eval of a --quick run: shorter documents, fewer of them, one small length for the tasks."""
    ruler = e.ruler.model_copy(update={"lengths": q.task_lengths, "samples": q.task_samples, "depths": [0.5]}) \
        if e.ruler else None
    probes = e.probes.model_copy(update={"lengths": q.task_lengths, "trials": q.task_samples, "depths": [0.5]}) \
        if e.probes else None
    gain = e.context_gain.model_copy(update={"window": min(e.context_gain.window, q.max_len // 4),
                                             "max_docs": min(e.context_gain.max_docs, q.max_docs)}) \
        if e.context_gain else None
    dep = e.dependency.model_copy(update={"max_docs": min(e.dependency.max_docs, q.max_docs),
                                          "data": q.dependency_data or e.dependency.data}) if e.dependency else None
    # long QA keeps its own max_len: --quick's short eval.max_len would skip every long example
    longqa = e.longqa.model_copy(update={"max_examples": min(e.longqa.max_examples or q.max_docs, q.max_docs),
                                         "max_new_tokens": min(e.longqa.max_new_tokens, 16),
                                         "max_len": e.longqa.max_len or e.max_len}) if e.longqa else None
    return e.model_copy(update={"max_len": q.max_len, "max_docs": q.max_docs, "table_contexts": q.table_contexts,
                                "ruler": ruler, "probes": probes, "context_gain": gain, "dependency": dep,
                                "longqa": longqa})


def base_data_dict(suite: Suite, pretrain: bool = False) -> dict[str, Any]:
    """The base data recipe (``pretrain``: the pretraining one, when base.pretrain names its own) with
    `extends` resolved and its folder recorded, so arms can move its output; an SFT suite's sft-pack recipe."""
    if suite.base.sft is not None and not pretrain:
        return base_sft_dict(suite)
    pre = suite.base.pretrain
    path = suite.resolve(pre.data if pretrain and pre is not None and pre.data else suite.base.data)
    if not path.is_file():
        raise UserError(f"suite {suite.name}: base data recipe '{path}' not found")
    data = load_with_extends(path)
    data["base_dir"] = str(path.parent)
    return data


def base_sft_dict(suite: Suite) -> dict[str, Any]:
    """The base sft-pack recipe with `extends` resolved and its folder recorded (its paths stay relative to it)."""
    assert suite.base.sft is not None
    path = suite.resolve(suite.base.sft)
    if not path.is_file():
        raise UserError(f"suite {suite.name}: base sft-pack recipe '{path}' not found")
    data = load_with_extends(path)
    data["base_dir"] = str(path.parent)
    return data


def arm_sft_dict(suite: Suite, arm: ArmSpec) -> dict[str, Any]:
    """The sft-pack recipe of one arm (output left to the runner)."""
    return deep_merge(base_sft_dict(suite), copy.deepcopy(arm.sft))


def arm_data_dict(suite: Suite, arm: ArmSpec, seq_len: int | None) -> dict[str, Any]:
    """The data recipe of one arm at one sequence length (output left to the runner)."""
    data = deep_merge(base_data_dict(suite), copy.deepcopy(arm.data))
    data["name"] = f"{suite.name}-{arm.name}"
    if seq_len is not None:
        with_seq_len(data, seq_len)
    return data


def with_seq_len(data: dict[str, Any], seq_len: int) -> dict[str, Any]:
    """Repack a data recipe at another length. "Long" is defined relative to the packing length (its
    threshold must be a bucket edge, seq_len/8, /2 or 1x), so at a new length a threshold that is no
    longer an edge falls back to the mix's default instead of failing the build."""
    from longmix.data.mix.buckets import default_edges

    if data.get("seq_len") != seq_len:
        mix = (data.get("stages") or {}).get("mix") or {}
        if mix.get("long_min_tokens") not in (None, *default_edges(seq_len).tolist()):
            mix.pop("long_min_tokens")
    data["seq_len"] = seq_len
    return data


def arm_seq_lens(suite: Suite, arm: ArmSpec) -> list[int]:
    if arm.load_time:
        return []
    if suite.base.sft is not None:
        return [int(arm_sft_dict(suite, arm)["seq_len"])]
    if suite.base.manifest is not None:
        built = manifest_seq_len(suite)
        if bad := [p.seq_len for p in arm.phases if p.seq_len not in (None, built)]:
            raise UserError(f"arm {arm.name}: base.manifest is packed at {built} tokens; a phase at {bad[0]} "
                            "needs a data recipe (base.data)")
        return [built] * len(arm.phases)
    default = arm_data_dict(suite, arm, None).get("seq_len")
    out = []
    for p in arm.phases:
        sl = p.seq_len or default
        if sl is None:
            raise UserError(f"arm {arm.name}: no seq_len in the data recipe or the phase")
        out.append(int(sl))
    return out


def manifest_seq_len(suite: Suite) -> int:
    """The packing length of base.manifest (a one-line error when it is not a built mix)."""
    import json

    assert suite.base.manifest is not None
    path = suite.resolve(suite.base.manifest)
    try:
        return int(json.loads(path.read_text())["seq_len"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"suite {suite.name}: base.manifest '{path}' is not a built mix's manifest.json (run "
                        "`longmix build`)") from None


def _absolute_paths(train: dict[str, Any], suite: Suite) -> dict[str, Any]:
    """Suite-relative paths in a training dict made absolute: arm recipes are written elsewhere."""
    out = copy.deepcopy(train)
    if "deepspeed" in out:
        out["deepspeed"] = str(suite.resolve(out["deepspeed"]))
    if isinstance(out.get("model"), dict) and out["model"].get("path"):
        out["model"]["path"] = str(suite.resolve(out["model"]["path"]))
    return out


def arm_train_dict(suite: Suite, arm: ArmSpec, seed: int, base_model: Path | None, manifests: list[Path],
                   output: Path) -> dict[str, Any]:
    """The arm's training recipe: template <- arm overrides, phases splitting the equal token budget."""
    template = _absolute_paths(suite.base.train, suite)
    if arm.from_scratch:
        assert suite.base.pretrain is not None
        scratch = _absolute_paths(suite.base.pretrain.train, suite)
        template = deep_merge(template, {"model": scratch["model"]})
        template["model"].pop("path", None)
        template["model"].pop("rope", None)  # a fresh model has no RoPE to change
    else:
        assert base_model is not None
        template = deep_merge(template, {"model": {"path": str(base_model)}})
    train = deep_merge(template, _absolute_paths(arm.train, suite))
    tps = int(train["batch"]["tokens_per_step"])
    phases = [{"manifest": str(m), "tokens": max(tps, int(round(suite.train_tokens * p.fraction / tps)) * tps)}
              for m, p in zip(manifests, arm.phases, strict=True)]
    train["data"] = {**train.get("data", {}), "phases": phases}
    train.update(name=f"{suite.name}-{arm.name}-s{seed}", seed=seed, output=str(output))
    train["logging"] = {**train.get("logging", {}), "every_steps": 1}  # every step: FLOPs and curves summed exactly
    return train


def pretrain_dict(suite: Suite, manifest: Path, output: Path) -> dict[str, Any]:
    pre = suite.base.pretrain
    assert pre is not None
    train = _absolute_paths(pre.train, suite)
    train["data"] = {**train.get("data", {}), "phases": [{"manifest": str(manifest), "tokens": pre.tokens}]}
    train.update(name=f"{suite.name}-base", output=str(output))
    return train
