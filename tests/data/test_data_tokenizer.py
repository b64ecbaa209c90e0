from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from vlmo_composer.data.tokenizer import (
    CLS_ID,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    VOCAB_SIZE,
    encode_text,
    get_tokenizer,
)


def test_bundled_tokenizer_builds_offline_in_a_fresh_process():
    # A fresh interpreter with the hub forced offline and every proxy pointing nowhere:
    # any download attempt would fail.
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
    )
    code = (
        "import json; from vlmo_composer.data.tokenizer import get_tokenizer; t = get_tokenizer(); "
        "print(json.dumps([type(t).__name__, len(t), t.pad_token_id, t.cls_token_id, t.sep_token_id, "
        "t.mask_token_id, t('Hello World')['input_ids']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    name, size, pad, cls, sep, mask, ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert name == "BertTokenizerFast"
    assert (
        (size, pad, cls, sep, mask)
        == (VOCAB_SIZE, PAD_ID, CLS_ID, SEP_ID, MASK_ID)
        == (30522, 0, 101, 102, 103)
    )
    assert ids == [101, 7592, 2088, 102]  # bert-base-uncased ids of "hello world"


def test_default_tokenizer_is_cached_and_lower_cases():
    assert get_tokenizer() is get_tokenizer(None)
    a = encode_text("A Man RIDING a Horse", 16)
    b = encode_text("a man riding a horse", 16)
    assert torch.equal(a["input_ids"], b["input_ids"])


def test_encode_text_pads_truncates_and_marks_word_starts():
    enc = encode_text("unbelievably tokenization", 12)
    tokens = get_tokenizer().convert_ids_to_tokens(enc["input_ids"].tolist())
    assert tokens[:9] == ["[CLS]", "un", "##bel", "##ie", "##va", "##bly", "token", "##ization", "[SEP]"]
    assert tokens[9:] == ["[PAD]"] * 3
    assert enc["input_ids"].dtype == enc["attention_mask"].dtype == torch.long
    assert enc["attention_mask"].tolist() == [1] * 9 + [0] * 3
    assert enc["word_start"].tolist()[:9] == [True, True, False, False, False, False, True, False, True]

    long = encode_text(" ".join(["word"] * 100), 40)
    assert long["input_ids"].shape == (40,)
    assert long["input_ids"][-1].item() == SEP_ID and long["attention_mask"].all()

    batch = encode_text(["one", "two words here"], 8)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["word_start"].shape == (2, 8)


def test_tokenizer_from_a_local_directory(tmp_path):
    get_tokenizer().save_pretrained(tmp_path / "tok")
    loaded = get_tokenizer(str(tmp_path / "tok"))
    assert loaded is not get_tokenizer()
    assert loaded("A photo of a CAT")["input_ids"] == get_tokenizer()("a photo of a cat")["input_ids"]
