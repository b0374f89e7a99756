"""RULER in chat form (`longmix eval ruler --chat`, a suite's `ruler.chat`): each prompt is transformers'
`apply_chat_template` of the task text as the user turn (generation prompt added), then RULER's answer prefix,
token for token; still sized to leave the answer budget; lm-eval's style is refused."""

from __future__ import annotations

import pytest
from helpers_train import stdlib_texts

from longmix.core.errors import UserError
from longmix.eval import ruler
from longmix.eval import ruler_templates as T
from longmix.formats.tokenizer_files import load_tokenizer
from longmix.models.chat_template import ChatTemplate, load_chat_template

ASSISTANT = "<|im_start|>assistant\n"
PREFIX = {"niah": " The special magic", "vt": " Answer: According to the chain(s)", "cwe": " Answer: The top 10",
          "fwe": " Answer: According to the coded text"}


@pytest.fixture(scope="module")
def chat(smollm2) -> ChatTemplate:
    return load_chat_template(smollm2)


@pytest.fixture(scope="module")
def tok(smollm2):
    return load_tokenizer(smollm2 / "tokenizer.json")


def test_chat_prompts_are_apply_chat_template_then_the_answer_prefix(chat, tok) -> None:
    gen = ruler.Generator(tok, bos_id=tok.token_to_id("<|endoftext|>"), haystack=stdlib_texts(200_000), chat=chat)
    plain = ruler.Generator(tok, bos_id=tok.token_to_id("<|endoftext|>"), haystack=stdlib_texts(200_000))
    samples = ruler.build_samples(gen, ruler.TASKS, [1024], [0.5], 1, 0)
    assert {s.task for s in samples} == set(ruler.TASKS)
    for s, p in zip(samples, ruler.build_samples(plain, ruler.TASKS, [1024], [0.5], 1, 0), strict=True):
        text = tok.decode(s.prompt, skip_special_tokens=False)
        head, prefix = text.rsplit(ASSISTANT, 1)
        user = head.split("<|im_start|>user\n", 1)[1].removesuffix("<|im_end|>\n")
        assert prefix.startswith(PREFIX[s.task.split("_")[0]]), (s.task, prefix)
        # the prompt is transformers' own chat-template tokens of the user turn, then the prefix's tokens
        hf = chat.tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True)
        assert s.prompt == list(hf["input_ids"]) + tok.encode(prefix, add_special_tokens=False).ids, s.task
        # the same task text as the base template's prompt (RULER's wording), only sized for the scaffolding
        base = tok.decode(p.prompt[1:])
        assert base[:60] == user[:60] and base.endswith(prefix), s.task
        assert s.answers and len(s.answers) == len(p.answers)
        # still sized as RULER sizes: the prompt plus the answer budget fits, and only just
        slack = 3 * (s.length // 32) if s.task == "fwe" else 64
        assert s.length - slack <= len(s.prompt) + T.ANSWER_TOKENS[s.task] <= s.length, (s.task, len(s.prompt))


def test_chat_form_needs_rulers_own_prompts(chat, tok) -> None:
    with pytest.raises(UserError, match="style ruler"):
        ruler.Generator(tok, None, ["x"], style="lm-eval", chat=chat)
    from longmix.eval.evaluations.ruler import RulerSpec

    with pytest.raises(ValueError, match="style ruler"):
        RulerSpec(chat=True, style="lm-eval")
    assert RulerSpec(chat=True).chat and not RulerSpec().chat


def test_ruler_cli_in_chat_form(smollm2, tmp_path, monkeypatch) -> None:
    import json

    import helpers_cli
    import typer

    from longmix.eval.evaluations import longqa
    from longmix.eval.evaluations import ruler as ruler_cli_module

    local = typer.Typer()
    local.command("ruler")(ruler_cli_module.cli)
    local.command("longqa")(longqa.cli)
    monkeypatch.setattr(helpers_cli, "app", local)
    hay = tmp_path / "hay.jsonl"
    hay.write_text("".join(json.dumps({"text": t}) + "\n" for t in stdlib_texts(60_000)))
    run = helpers_cli.cli("ruler", smollm2, "--haystack", hay, "--chat", "--lengths", "512", "--tasks",
                          "niah_single_1", "--samples", "1", "--device", "cpu", "-o", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "out" / "ruler.json").read_text())
    assert report["template"].startswith("chat")
    (result,) = report["checkpoints"][0]["results"]
    assert result["task"] == "niah_single_1" and result["output"]
