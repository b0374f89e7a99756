"""Self-instruct long QA, the pure part: cuts and chunks (spans, seeding by document id), reply parsing, the
held-out split, the self-check, and a shard's bookkeeping with a scripted generator."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from longmix.core.errors import UserError
from longmix.data.sft.check import support, token_f1, verdict
from longmix.data.sft.longqa import (
    Document,
    complete_sentences,
    cut_document,
    is_heldout,
    parse_reply,
    read_documents,
    record,
    style_for,
)
from longmix.data.sft.settings import SftDataSettings
from longmix.data.sft.shard import Prompter, run_shard
from longmix.models.chat_template import load_chat_template

WORDS = [f"w{i}" for i in range(500)]


def word_tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(["<unk>", "<|im_start|>", "<|im_end|>", "q", "zzz", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def doc(i: int, n_words: int) -> Document:
    rng = random.Random(i)
    return Document(f"d{i}", "x.jsonl", " ".join(rng.choice(WORDS) for _ in range(n_words)))


def test_chunk_inside_cut_at_its_spans() -> None:
    tok = word_tokenizer()
    for i in range(30):
        d = doc(i, 300 + 37 * i)
        cut = cut_document(tok, d, target_tokens=200, chunk_tokens=50, seed=3, question=0)
        assert cut.text in d.text and cut.n_tokens == 200
        enc = tok.encode(cut.text, add_special_tokens=False)
        a, b = cut.chunk_tokens
        assert 0 <= a < b <= cut.n_tokens and b - a == 50
        assert cut.chunk == " ".join(enc.tokens[a:b])  # the char span is exactly the token span
        assert cut.chunk_chars == (enc.offsets[a][0], enc.offsets[b - 1][1])
        assert 0 < cut.depth < 1


def test_short_document_is_not_cut_and_chunk_clamps() -> None:
    tok = word_tokenizer()
    d = doc(1, 30)
    cut = cut_document(tok, d, target_tokens=200, chunk_tokens=50, seed=0, question=0)
    assert cut.text == d.text and cut.chunk_tokens == (0, 30)


def test_choices_depend_on_seed_and_id_not_on_order() -> None:
    tok = word_tokenizer()
    d = doc(5, 800)
    a = cut_document(tok, d, 300, 60, seed=1, question=0)
    assert cut_document(tok, d, 300, 60, seed=1, question=0) == a
    assert cut_document(tok, Document("d5", "other.jsonl", d.text), 300, 60, 1, 0) == a
    assert {cut_document(tok, d, 300, 60, seed=s, question=0).chunk_chars for s in range(8)} != {a.chunk_chars}
    styles = ["factual", "summary", "where"]
    assert {style_for(styles, 0, "d5", k) for k in range(3)} == set(styles)  # a document's questions take turns


def test_parse_reply_strict() -> None:
    assert parse_reply("factual", " What is w1?\nAnswer: It is w2.") == ("What is w1?", "It is w2.")
    assert parse_reply("where", " What is w1?\n\nAnswer: w2\n") == ("What is w1?", "w2")
    assert parse_reply("factual", " What is w1? The answer is w2.") is None
    assert parse_reply("factual", " \nAnswer: w2") is None
    assert parse_reply("factual", " Q?\nAnswer: a\n\nQuestion: again?\nAnswer: b") == ("Q?", "a")  # the first pair
    assert parse_reply("factual", " Why is\nw1 here?\n\nAnswer: w2.") == ("Why is w1 here?", "w2.")
    assert parse_reply("factual", " Q?\nAnswer:") is None
    assert parse_reply("factual", " Q?\nAnswer: a\nAnswer: b") is None
    assert parse_reply("summary", " The passage says w1.") == ("Summarize the passage in one or two sentences.",
                                                               "The passage says w1.")
    assert parse_reply("summary", "   ") is None


def test_cut_off_answers_go_back_to_their_last_sentence() -> None:
    assert complete_sentences('It is "w1." Then w2 is') == 'It is "w1."'
    assert complete_sentences("Use str.format() here. And the") == "Use str.format() here."
    assert complete_sentences("no sentence end at all") == ""


def test_heldout_split_is_by_document_and_near_its_fraction() -> None:
    ids = [f"doc-{i}" for i in range(2000)]
    held = [i for i in ids if is_heldout(7, i, 0.1)]
    assert 150 < len(held) < 250
    assert held == [i for i in ids if is_heldout(7, i, 0.1)]
    assert not any(is_heldout(7, i, 0.0) for i in ids)


def test_self_check_drops_an_answer_its_chunk_does_not_support() -> None:
    chunk = "The pass key of the vault is 4821. The vault opens at noon on Tuesdays."
    assert support("The vault opens at noon.", chunk) == 1.0
    made_up = support("The vault was built by Roman engineers in marble.", chunk)
    assert made_up < 0.5
    assert verdict(made_up, 1.0, 0.5, 0.2) == "unsupported"
    assert support("it is the", chunk) == 0.0  # only stopwords: supports nothing
    assert token_f1("noon on Tuesdays", "It opens at noon on Tuesdays.") == pytest.approx(0.8)  # 2 of 2, 2 of 3
    assert token_f1("noon", "midnight") == 0.0
    assert verdict(1.0, 0.1, 0.5, 0.2) == "disagrees" and verdict(1.0, 0.5, 0.5, 0.2) is None


def test_record_follows_the_contract() -> None:
    tok = word_tokenizer()
    d = doc(2, 400)
    cut = cut_document(tok, d, 200, 40, seed=0, question=0)
    r = record(d, 0, "where", cut, "Q?", "A.", 0.9, 0.7, "gen", 0)
    p = r["provenance"]
    assert r["id"] == "d2-q0" and [m["role"] for m in r["messages"]] == ["user", "assistant"]
    assert r["messages"][0]["content"].startswith(cut.text) and "Q?" in r["messages"][0]["content"]
    assert r["messages"][1]["content"].startswith("A. This is ")
    assert r["messages"][1]["content"].endswith(" of the document.")
    assert cut.text[slice(*p["chunk_chars"])] == cut.chunk and p["doc_tokens"] == 200
    assert set(p) >= {"doc_id", "source", "generator", "style", "question", "answer", "chunk_chars", "chunk_tokens",
                      "doc_chars", "doc_tokens", "depth", "check", "seed"}


def _settings(tmp_path: Path, **kw) -> SftDataSettings:
    base = dict(input=[tmp_path], generator=tmp_path, output=tmp_path / "out", min_tokens=100, max_tokens=1000,
                target_tokens=200, chunk_tokens=40, styles=["factual"], min_support=0.5, min_agreement=0.5)
    return SftDataSettings(**{**base, **kw})


class _Template:
    """Renders as a chat template would, for the word tokenizer (which a transformers template cannot load)."""

    def prompt(self, messages: list[dict[str, str]]) -> str:
        return "".join(f"<|im_start|>{m['content']}<|im_end|>" for m in messages)


def test_shard_counts_reconcile_with_every_drop_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import longmix.data.sft.shard as shard

    tok = word_tokenizer()
    prompter = Prompter(tok, _Template(), None)
    docs = [doc(0, 50), doc(1, 2000), doc(2, 400), doc(3, 400), doc(4, 400), doc(5, 400)]
    # the word tokenizer knows no "Question:"; a reply "q <answer words>" parses, anything else does not
    monkeypatch.setattr(shard, "parse_reply", lambda style, text: ("what?", text[2:]) if text[:2] == "q " else None)
    calls: list[int] = []

    def fake(prompts: list[list[int]]) -> list[list[int]]:
        calls.append(len(prompts))
        chunks = [[w for w in tok.decode(p).split() if w in WORDS] for p in prompts]
        if len(calls) == 1:  # documents 2..5: unparsable, unsupported (words the chunk lacks), then two good ones
            absent = [w for w in WORDS if w not in chunks[1]][:3]
            replies = ["zzz", "q " + " ".join(absent), "q " + chunks[2][0], "q " + chunks[3][0]]
        else:  # re-answers of documents 4 (something else: disagrees) and 5 (the same word: kept)
            other = next(w for w in WORDS if w != chunks[0][0])
            replies = [other, chunks[1][0]]
        return [tok.encode(r).ids for r in replies]

    records, counts = run_shard(docs, _settings(tmp_path), tok, prompter, fake, "gen")
    assert counts["in"] == 6 and counts["kept"] == 1 and [r["provenance"]["doc_id"] for r in records] == ["d5"]
    assert counts["dropped"] == {"too_short": 1, "too_long": 1, "unparsable": 1, "unsupported": 1, "disagrees": 1}
    assert counts["in"] == counts["kept"] + sum(counts["dropped"].values())
    assert calls == [4, 2]  # too-short/long documents never reach the model; unsupported ones skip the re-check


def test_read_documents_errors(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "x", "text": "hello"}) + "\n" +
                                      json.dumps({"id": "y", "text": "  \n"}) + "\n")
    with pytest.raises(UserError, match="document 'y' .* is empty"):
        read_documents([tmp_path / "a.jsonl"])
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "x", "text": "hi"}) + "\n" + json.dumps({"id": "x",
                                                                                              "text": "hi"}) + "\n")
    with pytest.raises(UserError, match="appears twice"):
        read_documents([tmp_path / "b.jsonl"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no input files"):
        read_documents([tmp_path / "empty"])
    with pytest.raises(UserError, match="not found"):
        read_documents([tmp_path / "nope.jsonl"])


def test_chat_template_missing_is_a_user_error(tmp_path: Path, smollm2: Path) -> None:
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2 / name, tmp_path / name)
    with pytest.raises(UserError, match="no chat template"):
        load_chat_template(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n"
                                                  "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
    text = load_chat_template(tmp_path).prompt([{"role": "user", "content": "hi"}])
    assert text == "[user] hi\n[assistant] "


def test_sections_join_into_their_documents(tmp_path: Path) -> None:
    rows = [{"id": "mod/a", "text": "A intro."}, {"id": "topic/x", "text": "X."}, {"id": "mod/a:10:f", "text": "f."},
            {"id": "mod/b:3:g", "text": "g."}, {"id": "mod/a:20:h", "text": "h."}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = read_documents([tmp_path / "d.jsonl"], section_separator=":")
    assert [(d.id, d.text) for d in docs] == [("mod/a", "A intro.\n\nf.\n\nh."), ("topic/x", "X."), ("mod/b", "g.")]
    assert len(read_documents([tmp_path / "d.jsonl"])) == 5


def test_a_builds_documents_parquet_is_an_input(tmp_path: Path, demo_corpus: Path) -> None:
    """A built flow's documents (the Parquet shards of a stage, e.g. the filter's kept documents) read like JSONL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longmix.data.ingest.texts import read_texts

    rows = [json.loads(x) for x in (demo_corpus / "docs" / "part-00000.jsonl").read_text().splitlines()[:5]]
    shard = tmp_path / "shards" / "docs" / "part-00000.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}), shard)
    docs = read_documents([tmp_path / "shards"])
    assert [(d.id, d.text) for d in docs] == [(r["id"], r["text"]) for r in rows]
    assert len(list(read_texts([shard]))) == 5
