"""Chat examples: checked line by line before tokenization, tokenized exactly as transformers' apply_chat_template
with the model's own template (SmolLM2-135M-Instruct), and masked per loss mode on content, never scaffolding."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from longmix.core.errors import UserError
from longmix.data.sft.chat import chat_files, read_chat_files
from longmix.data.sft.template import encode_chats, load_chat_template

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
END = "<|im_end|>"

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of the sky?"},
     {"role": "assistant", "content": "Blue"}],
    [{"role": "user", "content": "user"}, {"role": "assistant", "content": "assistant\nsystem"},
     {"role": "user", "content": "And then? café ☕ "}, {"role": "assistant", "content": " Done, <tag> ok.\n"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "Say hi."},
     {"role": "assistant", "content": "Hi!"}],
]

@pytest.fixture(scope="module")
def smol(smollm2: Path):
    return load_chat_template(smollm2)


def _masked_text(tpl, enc) -> str:
    return tpl.tokenizer.decode(enc.ids[enc.loss_mask.astype(bool)].tolist(), skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)


def test_ids_equal_apply_chat_template(smol) -> None:
    for conv, enc in zip(CONVERSATIONS, encode_chats(smol, CONVERSATIONS, "output"), strict=True):
        want = smol.tokenizer.apply_chat_template(conv, tokenize=True)["input_ids"]
        assert enc.ids.tolist() == list(want)
        assert enc.ids.dtype == np.uint32 and enc.loss_mask.shape == enc.ids.shape


def test_output_mode_masks_the_answers_and_their_end_of_turn(smol) -> None:
    for conv, enc in zip(CONVERSATIONS, encode_chats(smol, CONVERSATIONS, "output"), strict=True):
        assert enc.loss_mask[0] == 0
        assert _masked_text(smol, enc) == "".join(m["content"] + END for m in conv if m["role"] == "assistant")


def test_input_and_output_mode_masks_every_content_not_the_scaffolding(smol) -> None:
    for conv, enc in zip(CONVERSATIONS, encode_chats(smol, CONVERSATIONS, "input_and_output"), strict=True):
        got = _masked_text(smol, enc)
        assert got == "".join(m["content"] + (END if m["role"] == "assistant" else "") for m in conv)
        assert "<|im_start|>" not in got and DEFAULT_SYSTEM not in got
    # the scaffolding is there, only unmasked: the default system prompt the template injects, the role headers
    rendered = smol.tokenizer.decode(encode_chats(smol, CONVERSATIONS[:1], "all")[0].ids.tolist())
    assert DEFAULT_SYSTEM in rendered and "<|im_start|>user\n" in rendered


def test_a_token_straddling_scaffolding_and_content_is_not_content(smol) -> None:
    """Two leading spaces after the role header's newline: the tokenizer merges the newline with the first space;
    that token is partly scaffolding, so it stays out of the mask (a token counts only when inside a content)."""
    conv = [{"role": "user", "content": "  Hi"}, {"role": "assistant", "content": "Yo"}]
    (enc,) = encode_chats(smol, [conv], "input_and_output")
    assert _masked_text(smol, enc) == " Hi" + "Yo" + END


def test_all_mode_masks_every_token_but_the_first(smol) -> None:
    (enc,) = encode_chats(smol, CONVERSATIONS[1:2], "all")
    assert enc.loss_mask[0] == 0 and enc.loss_mask[1:].all()


def test_template_hash_and_missing_template(smol, smollm2: Path, tmp_path: Path) -> None:
    assert smol.sha256 == hashlib.sha256((smollm2 / "chat_template.jinja").read_bytes()).hexdigest()
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(smollm2 / name, bare / name)
    with pytest.raises(UserError, match="no chat template") as err:
        load_chat_template(bare)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no tokenizer.json"):
        load_chat_template(tmp_path)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reads_both_shapes_and_keeps_extra_fields(tmp_path: Path) -> None:
    good = _write(tmp_path / "a.jsonl", [
        json.dumps({"id": 7, "messages": CONVERSATIONS[1], "provenance": {"doc_id": "d"}}),
        "",
        json.dumps({"instruction": "Translate.", "input": "chat", "output": "cat", "lang": "fr"}),
        json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"}),
    ])
    ex = read_chat_files(chat_files([tmp_path]), "short")
    assert [e.messages for e in ex[1:]] == [
        [{"role": "user", "content": "Translate.\n\nchat"}, {"role": "assistant", "content": "cat"}],
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]]
    assert ex[0].id == "7" and ex[0].extra == {"provenance": {"doc_id": "d"}} and ex[0].source == "short"
    assert ex[1].extra == {"lang": "fr"} and ex[2].where == f"{good}:4"


@pytest.mark.parametrize(("line", "says"), [
    ("{not json", "not JSON"),
    ('{"text": "x"}', "neither 'messages' nor 'instruction'"),
    ('[1, 2]', "a JSON list"),
    ('{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}', "role 'tool'"),
    ('{"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]}',
     "content must be a string"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant turn"),
    ('{"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}', "ends with a user"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}', "empty content"),
    ('{"instruction": "x", "output": 3}', "'output' must be a string"),
])
def test_bad_lines_are_one_line_errors_naming_file_and_line(tmp_path: Path, line: str, says: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"messages": CONVERSATIONS[0]}), line])
    with pytest.raises(UserError) as err:
        read_chat_files([path], "s")
    message = str(err.value)
    assert message.startswith(f"{path}:2: ") and says in message and "\n" not in message


def test_missing_or_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        chat_files([tmp_path / "nope.jsonl"])
    with pytest.raises(UserError, match="no .jsonl"):
        chat_files([str(tmp_path / "*.jsonl")])
