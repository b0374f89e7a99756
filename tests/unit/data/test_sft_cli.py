"""`longmix sft-data` refuses bad input in one line (exit 2) before any model loads: no chat template, an empty
document, no input files, bad ranges, unknown recipe keys, model code in the generator folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from longmix.cli.sft import sft_data
from longmix.core.errors import UserError

app = typer.Typer()  # the command alone, as app.py mounts it: app.command("sft-data")(sft.sft_data)
app.command()(sft_data)


def refused(*args: str | Path) -> str:
    """The one-line UserError (exit 2) the command stops on."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(res.exception, UserError), (res.exception, res.output)
    assert res.exception.exit_code == 2
    message = str(res.exception)
    assert "\n" not in message.strip()
    return message


@pytest.fixture
def generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import longmix.models.loading as loading

    def no_model(*a, **k):
        raise AssertionError("the model loaded before the input was checked")

    monkeypatch.setattr(loading, "load_checkpoint", no_model)
    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<|im_end|>": 1, "w1": 2, "w2": 3, "w3": 4}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    return folder


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": "w1 w2 w3 " * 50}) + "\n" for i in range(3)))
    return path


def test_no_chat_template(generator: Path, docs: Path, tmp_path: Path) -> None:
    (generator / "chat_template.jinja").unlink()
    assert "has no chat template" in refused("-i", docs, "--generator", generator, "-o", tmp_path / "o")


def test_empty_document(generator: Path, docs: Path, tmp_path: Path) -> None:
    with open(docs, "a") as fh:
        fh.write(json.dumps({"id": "blank", "text": " \n "}) + "\n")
    assert "document 'blank'" in refused("-i", docs, "--generator", generator, "-o", tmp_path / "o")


def test_no_input_files(generator: Path, tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    assert "no input files" in refused("-i", tmp_path / "none", "--generator", generator, "-o", tmp_path / "o")


@pytest.mark.parametrize(("options", "says"), [
    (["--min-tokens", "500", "--max-tokens", "100"], "min_tokens (500) is above max_tokens"),
    (["--chunk-tokens", "900", "--target-tokens", "500"], "chunk_tokens (900) is above target_tokens"),
    (["--chunk-tokens", "2000", "--target-tokens", "4000"], "window"),
    (["--min-support", "1.5"], "min_support"),
    (["--style", "poem"], "styles"),
])
def test_bad_ranges(generator: Path, docs: Path, tmp_path: Path, options: list[str], says: str) -> None:
    assert says in refused("-i", docs, "--generator", generator, "-o", tmp_path / "o", *options)


def test_recipe_unknown_key_and_options_override(generator: Path, docs: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"input: [{docs}]\ngenerator: {generator}\noutput: {tmp_path / 'o'}\ncolour: red\n")
    assert "unknown key 'colour'" in refused(recipe)
    recipe.write_text(f"input: [{docs}]\ngenerator: {generator}\noutput: {tmp_path / 'o'}\nmin_tokens: 10\n")
    assert "min_tokens (10) is above max_tokens (5)" in refused(recipe, "--max-tokens", "5")


def test_model_code_needs_trust(generator: Path, docs: Path, tmp_path: Path) -> None:
    (generator / "config.json").write_text(json.dumps({"auto_map": {"AutoModelForCausalLM": "m.Model"}}))
    assert "--trust-remote-code" in refused("-i", docs, "--generator", generator, "-o", tmp_path / "o")
