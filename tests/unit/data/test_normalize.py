from longmix.data.ingest.normalize import content_hash, normalize_text


def test_nfc_controls_and_newlines():
    decomposed = "e\u0301te\u0301"  # é written as e + combining accent
    assert normalize_text(decomposed) == "\u00e9t\u00e9"
    assert normalize_text("a\x00b\x07c\x1bd\x7f") == "abcd"
    assert normalize_text("one\r\ntwo\rthree\u2028four\x85five\x0csix") == "one\ntwo\nthree\nfour\nfive\nsix"
    assert normalize_text("tab\tkept\nnewline kept") == "tab\tkept\nnewline kept"


def test_content_hash_is_stable():
    # A fixed value: ids must not change across runs, machines or versions.
    assert content_hash("hello world") == "df8d09e93f874900a99b8775cc15b6c7"
    assert content_hash("hello world") != content_hash("hello world ")
