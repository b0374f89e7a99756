"""The training recipe: YAML in, validated by pydantic, paths resolved against the recipe's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from longmix.core.recipe_io import Strict, load_with_extends, parse_model
from longmix.models.rope import SCALED_KINDS, RopeKind


class RopeConfig(Strict):
    """How to change the rotary embedding of the loaded model (applied through ``rope_parameters``).

    ``abf`` is the paper's adjusted base frequency (theta 10,000 -> 500,000); ``linear`` is position
    interpolation; ``yarn`` and ``dynamic`` (NTK) are the usual scaled variants.
    """

    kind: RopeKind = "keep"
    theta: float | None = Field(None, gt=0, description="new RoPE base (abf; optional for the others)")
    factor: float | None = Field(None, gt=0, description="context extension factor (linear, yarn, dynamic)")
    original_max_position_embeddings: int | None = Field(None, gt=0, description="yarn: pretraining length")
    layer_types: list[str] | None = Field(
        None, min_length=1, description="models whose RoPE is keyed by layer type (Gemma 3): the layer types "
        "to change (default: full_attention; the windowed local layers keep theirs)")

    @model_validator(mode="after")
    def _needs(self) -> RopeConfig:
        if self.kind == "abf" and self.theta is None:
            raise ValueError("rope kind 'abf' needs theta (e.g. 500000)")
        if self.kind in SCALED_KINDS and self.factor is None:
            raise ValueError(f"rope kind '{self.kind}' needs factor (new length / old length)")
        return self


class ModelConfig(Strict):
    path: str | None = Field(None, description="local HF checkpoint folder to continue from")
    config: dict[str, Any] | None = Field(None, description="HF config fields for a from-scratch model")
    attn_implementation: Literal["auto", "flex", "doc_sdpa", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto", description="auto: on GPU flash_attention_2 when installed, else flex (FlexAttention, one "
        "document block mask per batch); on CPU doc_sdpa (per-document SDPA)")
    trust_remote_code: bool = Field(False, description="allow a model.path folder's own code (auto_map) to run")
    activation_checkpointing: bool = False
    activation_offload: bool = Field(False, description="keep the checkpointed layer inputs in host memory")
    tiled_loss: bool = Field(False, description="logits + cross-entropy in sequence tiles (no full [seq, vocab])")
    loss_tile_tokens: int = Field(4096, gt=0, description="tokens per loss tile")
    max_position_embeddings: int | None = Field(None, gt=0, description="raise the config's limit (long runs)")
    rope: RopeConfig = RopeConfig()

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.path is None) == (self.config is None):
            raise ValueError("set exactly one of model.path (continue a checkpoint) or model.config (from scratch)")
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("model.config needs model_type (e.g. llama)")
        if self.activation_offload and not self.activation_checkpointing:
            raise ValueError("model.activation_offload offloads checkpointed activations: "
                             "set model.activation_checkpointing: true too")
        return self


class PhaseConfig(Strict):
    """One curriculum phase: train on ``manifest`` for a token budget or a number of optimizer steps."""

    manifest: str
    tokens: int | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _budget(self) -> PhaseConfig:
        if (self.tokens is None) == (self.steps is None):
            raise ValueError("a phase needs exactly one of tokens or steps")
        return self


class DataConfig(Strict):
    phases: list[PhaseConfig] = Field(min_length=1)
    doc_masking: bool = Field(True, description="no attention across packed documents; False is an ablation")
    holdout_sequences: int = Field(0, ge=0, description="sequences per phase kept out of training for eval")
    verify: bool = Field(True, description="check every shard's sha256 before training")
    loss_weighting: Literal["token", "example"] = Field(
        "token", description="the loss is a mean over the global batch's counted tokens (token) or over its "
        "examples, each example's own token mean (example: LongAlign's weighting for packed SFT)")

    @model_validator(mode="after")
    def _weighting(self) -> DataConfig:
        if self.loss_weighting == "example" and not self.doc_masking:
            raise ValueError("loss_weighting: example needs doc_masking: true (an example is a packed document)")
        return self


class BatchConfig(Strict):
    tokens_per_step: int = Field(gt=0, description="global tokens per optimizer step, held across phases")
    micro_batch_tokens: int = Field(gt=0, description="tokens each rank holds per forward pass (with sequence "
                                    "parallelism a rank holds seq_len / SP tokens of each sequence)")


class ParallelConfig(Strict):
    sequence_parallel_size: int = Field(1, ge=1, description="ranks that share one sequence (Ulysses); "
                                        "data-parallel degree = world size / this")


class OptimConfig(Strict):
    """AdamW (DeepSpeed's FusedAdam on GPU when built, torch's AdamW otherwise), one parameter group."""

    lr: float = Field(2e-5, gt=0, description="peak learning rate, reached at the end of the warmup")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW's moment decay rates (beta1, beta2)")
    eps: float = Field(1e-8, gt=0, description="AdamW's denominator term")
    weight_decay: float = Field(0.1, ge=0, description="decoupled weight decay, on every parameter "
                                "(train/model.py param_groups says why there is no no-decay group)")
    grad_clip: float = Field(1.0, ge=0, description="clip the global gradient norm to this (0: no clipping)")


class ScheduleConfig(Strict):
    """The learning-rate factor per optimizer step (train/schedule.py), over the whole run's steps."""

    warmup_steps: int = Field(2000, ge=0, description="linear warmup: step i runs at (i + 1) / warmup_steps "
                              "of optim.lr")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine: the final learning rate as a fraction of "
                                "optim.lr")
    kind: Literal["cosine", "constant"] = Field("cosine", description="after the warmup: cosine decay to "
                                                "min_lr_ratio, or constant at optim.lr")


class CheckpointConfig(Strict):
    """Checkpoints under <run>/checkpoints/step_*; a run resumes from the newest one (train/checkpoint.py)."""

    every_steps: int = Field(1000, gt=0, description="optimizer steps between checkpoints (also the default "
                             "evaluation interval); the last step is always checkpointed")
    keep_last: int = Field(2, ge=1, description="checkpoints kept in rotation (older ones are deleted; the last "
                           "finite one before a divergence is kept out of rotation)")
    trust_pickles: bool = Field(False, description="resume from checkpoint files with objects beyond DeepSpeed's "
                                "known ones (unpickled in full: only for checkpoints you wrote yourself)")


class GuardConfig(Strict):
    """When a run has diverged (train/guard.py): Megatron and NeMo stop on a NaN loss; so does longmix."""

    max_bad_steps: int = Field(3, ge=1, description="steps in a row with a non-finite loss or gradient norm "
                               "before the run stops (one can be a skipped overflow step)")
    spike_factor: float = Field(3.0, gt=1, description="warn when the loss exceeds this multiple of its median")
    spike_window: int = Field(50, ge=2, description="steps in that moving median")


class LoggingConfig(Strict):
    every_steps: int = Field(1, gt=0)
    eval_every_steps: int | None = Field(None, gt=0, description="default: at each checkpoint")
    peak_tflops: float | None = Field(None, gt=0, description="per device, for MFU; default: known GPUs")
    loss_breakdown: bool = Field(True, description="loss by source and length bucket every logged step, and by "
                                 "position band at eval (train/breakdown.py)")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="experiment trackers, as in HF Trainer (rank 0 logs; a resume continues "
        "the same run)")
    wandb_project: str = Field("longmix", description="W&B project (offline run when there is no W&B login)")
    mlflow_tracking_uri: str | None = Field(None, description="default: a SQLite store, <run>/mlflow.db")
    mlflow_experiment: str = "longmix"

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [] if v in (None, "none") else [v] if isinstance(v, str) else v


class TrainRecipe(Strict):
    name: str
    seed: int = 0
    output: str = Field(description="run folder: checkpoints, metrics.jsonl, the exported config")
    model: ModelConfig
    data: DataConfig
    batch: BatchConfig
    parallel: ParallelConfig = ParallelConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    deepspeed: str = Field(description="DeepSpeed JSON config; batch, optimizer and precision are filled in")
    deepspeed_overrides: dict[str, Any] = Field(default_factory=dict, description="merged into the JSON")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    checkpoint: CheckpointConfig = CheckpointConfig()
    guard: GuardConfig = GuardConfig()
    logging: LoggingConfig = LoggingConfig()
    base_dir: str = Field(".", description="set by the loader: the recipe's folder")

    def resolve_manifest(self, p: str) -> Path:
        """A phase's manifest as a local path: a store URI (s3://...) is staged into the node's cache first."""
        from longmix.core.storage import is_uri
        from longmix.formats.staging import stage_manifest

        return stage_manifest(p) if is_uri(p) else self.resolve(p)

    def resolve(self, p: str) -> Path:
        """A recipe path, relative to the recipe's folder unless absolute."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.output)


def load_train_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainRecipe:
    """Load and validate a training recipe (``extends: base.yaml`` honoured, as in every recipe kind);
    ``overrides`` replace top-level keys (e.g. output)."""
    data = load_with_extends(path)
    data.update(overrides or {})
    data["base_dir"] = str(Path(path).resolve().parent)
    return parse_model(TrainRecipe, data, str(path))
