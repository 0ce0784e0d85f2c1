"""CLIPTokenizer against transformers' CLIPTokenizer (5.24): ids, masks and decoded text, exactly.

The reference is built offline from the merge file shipped in npclip/data, written out as
vocab.json + merges.txt by the recipe of openai/CLIP's simple_tokenizer.py (re-typed here, so
that the reference does not lean on npclip's own loader).
"""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest

from _checkpoints import openai_vocab, write_bpe_files
from conftest import reference
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npclip import tokenizer as T
from npclip.tokenizer import BatchEncoding, CLIPTokenizer

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])




# ----------------------------------------------------------------------------------------------
# The corpus

WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
              "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
NOT_WHITESPACE = "\u180e\u200b\u200c\u200d\u2060\ufeff"

CORPUS = [
    # plain captions
    "a photo of a cat", "a photo of a dog", "A Photo Of A Cat.", "two cats sleeping on a red sofa",
    "an astronaut riding a horse on the moon, digital art, trending on artstation",
    # empty and blank
    "", " ", "  \n\t  ", "  hello   world  ", "\n\nleading and trailing\n\n",
    # accents, combining marks, NFC/NFD pairs
    "café", "cafe\u0301", "naïve", "nai\u0308ve", "Ångström", "A\u030angstro\u0308m", "résumé", "Crème brûlée",
    "São Paulo", "Zürich", "ḱṷṓn", unicodedata.normalize("NFD", "ḱṷṓn"), "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "\u0301leading mark", "a\u0315\u0301b", "a\u0301\u0315b", "e\u0301\u0323", "e\u0323\u0301",
    "한국어", unicodedata.normalize("NFD", "한국어"), "\u1100\u1161\u11a8", ">\u0338", "=\u0338",
    "<|endoftext|>\u0338", "Ω ohm \u2126", "Å angstrom \u212b",
    # casing that differs between Python and Rust
    "ΟΔΟΣ ΣΑΣ", "ΣΊΣΥΦΟΣ", "İstanbul ıi", "straße STRASSE ẞ", "ǅǈǋ ǲ", "ﬁne ﬂow ﬃ",
    # CJK, other scripts
    "日本語のテキスト", "中文测试，标点。", "한국어 텍스트", "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ", "Привет, мир!",
    "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Tiếng Việt có dấu",
    "𝓯𝓪𝓷𝓬𝔂 𝕞𝕒𝕥𝕙", "Ⓐⓑⓒ ①②③", "ᚠᚢᚦᚨᚱᚲ", "𐍈 gothic", "\U00016ea0\U00016ebb beria", "𞤀𞤢 adlam",
    # emoji, ZWJ sequences, flags, keycaps, skin tones
    "👍", "I ❤️ NY", "👨\u200d👩\u200d👧\u200d👦 family", "🏳️\u200d🌈", "👩🏽\u200d💻 coder", "🇯🇵🇫🇷🇺🇸",
    "#️⃣ 1️⃣", "😀😃😄😁", "cat🐱dog🐶",
    # every whitespace kind, and look-alikes that are not whitespace
    "x".join(WHITESPACE), "y".join(NOT_WHITESPACE), "a\u00a0b\u3000c\u2028d",
    # HTML entities and markup
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;q&quot; &#39;s &nbsp;", "<div class=\"x\">hi</div>", "a &amp;&amp; b",
    # special tokens written in the text
    "<|endoftext|>", "<|startoftext|>", "a<|endoftext|>b", "x<|endoftext|>!", "<|ENDOFTEXT|>", "x<|ENDOFTEXT|>!",
    "<|endoftext|><|endoftext|>", "< |endoftext| >", "<|endoftext|", "<|startoftext|>hello<|endoftext|>",
    " <|endoftext|> ", "<|EndOfText|> <|StartOfText|>", "<|endoftext|>'s",
    # contractions, in capitals too
    "DON'T", "I'M", "YOU'RE WE'VE SHE'LL HE'D IT'S", "don't can't won't", "rock'n'roll", "O'Neil's",
    "it’s curly", "'''", "''s", "'S 'T 'RE", "'", "a'b'c'd",
    # numbers
    "1234567890", "3.14159", "1,000,000", "٣٤٥ ۱۲۳", "½ ² Ⅻ ⅷ", "10^-3 1e-9", "0x1F 0b1010", "2024-01-01T12:00:00Z",
    # punctuation runs
    "!!!???...", "--->", "¿Qué? ¡Sí!", "«quotes» “smart” ‘single’", "(((nested)))", "$$$ @#%^&*", "~`|\\",
    "....", "—–-", "a.b.c", "hello.world!!!",
    # code
    "def f(x):\n    return x**2  # square", "for (int i = 0; i < n; ++i) { a[i] = b[i]; }",
    "SELECT * FROM t WHERE id=1;", "https://example.com/path?q=1&r=2#frag", "user@example.com",
    "print('hello, world')", "λx.x+1", "if a != b && c >= d:",
    # control characters and odd code points
    "\x00\x01\x7f", "tab\there", "\ue000 private use", "\U0010ffff end", "\u0378 unassigned",
    # far beyond 77 tokens
    "word " * 200, "a" * 500, "supercalifragilisticexpialidocious " * 10,
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut "
    "aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse.",
]

VARIANTS = [
    {},
    {"padding": True},
    {"padding": "longest"},
    {"padding": "max_length"},
    {"truncation": True},
    {"truncation": "longest_first", "padding": True},
    {"max_length": 10},
    {"max_length": 10, "truncation": True, "padding": "max_length"},
    {"max_length": 20, "truncation": "only_first", "padding": True},
    {"max_length": 100, "padding": "max_length"},
    {"max_length": 5, "padding": "max_length", "truncation": False},
    {"padding": True, "pad_to_multiple_of": 8},
    {"padding": "max_length", "max_length": 6, "pad_to_multiple_of": 4},
    {"max_length": 2},
    {"max_length": 1, "truncation": True},
    {"max_length": 0},
    {"add_special_tokens": False, "max_length": 5},
    {"padding": "do_not_pad", "truncation": "do_not_truncate", "max_length": 3},
    {"padding": True, "return_attention_mask": False},
]


# ----------------------------------------------------------------------------------------------
# Fixtures: the reference, built offline


@pytest.fixture(scope="session")
def vocab_dir(tmp_path_factory):
    """A directory with vocab.json and merges.txt, as the hub's openai/clip-vit-* checkpoints carry."""
    d = tmp_path_factory.mktemp("clip-tokenizer")
    write_bpe_files(d)
    return d


@pytest.fixture(scope="session")
def ref(vocab_dir):
    transformers = reference("transformers")
    transformers.logging.set_verbosity_error()  # no "sequence longer than 77" chatter
    return transformers.CLIPTokenizer.from_pretrained(str(vocab_dir), model_max_length=77)


@pytest.fixture(scope="session")
def tok():
    return CLIPTokenizer()


def assert_same_encoding(ours, theirs, texts, where=""):
    """Equal keys, types and values; on failure, name the first text and position that differ."""
    assert set(ours) == set(theirs), f"{where}: keys {sorted(ours)} != reference {sorted(theirs)}"
    for key in theirs:
        a, b = ours[key], theirs[key]
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == np.int64, f"{where}: {key} is {type(a)} {getattr(a, 'dtype', '')}"
            a, b = a.tolist(), b.tolist()
        assert type(a) is type(b), f"{where}: {key} is a {type(a).__name__}, reference a {type(b).__name__}"
        if a != b:
            rows_a, rows_b = (a, b) if a and isinstance(a[0], list) else ([a], [b])
            i = next((i for i, (x, y) in enumerate(zip(rows_a, rows_b)) if x != y), min(len(rows_a), len(rows_b)))
            x, y = rows_a[i], rows_b[i]
            j = next((j for j, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
            raise AssertionError(f"{where}: {key} of text {i} {texts[i][:60]!r} differ at position {j}: "
                                 f"{x[max(0, j - 3):j + 4]} vs reference {y[max(0, j - 3):j + 4]} "
                                 f"(lengths {len(x)} and {len(y)})")


# ----------------------------------------------------------------------------------------------
# The vocabulary


def test_bundled_vocabulary_is_openais(tok):
    vocab, merges = openai_vocab()
    assert len(tok) == tok.vocab_size == 49408
    assert tok.get_vocab() == {t: i for i, t in enumerate(vocab)}
    assert tok.bpe_ranks == {tuple(m.split()): i for i, m in enumerate(merges)}
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (49406, 49407, 49407, 49407)
    assert tok.model_max_length == 77 and tok.all_special_ids == [49406, 49407]


# ----------------------------------------------------------------------------------------------
# Ids and masks, exactly


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v) or "default")
def test_corpus_batch(tok, ref, variant):
    assert_same_encoding(tok(CORPUS, **variant), ref(CORPUS, **variant), CORPUS, str(variant))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v) or "default")
def test_corpus_batch_numpy(tok, ref, variant):
    """int64 arrays [B, T]; where the sequences differ in length transformers makes an object array
    of arrays, and npclip raises an error that says to pad instead (a deliberate difference)."""
    if len({len(ids) for ids in ref(CORPUS, **variant)["input_ids"]}) > 1:
        with pytest.raises(ValueError, match="padding=True"):
            tok(CORPUS, return_tensors="np", **variant)
        return
    ours, theirs = tok(CORPUS, return_tensors="np", **variant), ref(CORPUS, return_tensors="np", **variant)
    assert_same_encoding(ours, theirs, CORPUS, f"np {variant}")


def test_corpus_one_string_at_a_time(tok, ref):
    """One string gives flat lists (as transformers), and "np" gives arrays [1, T]."""
    for text in CORPUS:
        assert_same_encoding(tok(text), ref(text), [text], "single")
        assert_same_encoding(tok(text, truncation=True, padding="max_length", return_tensors="np"),
                             ref(text, truncation=True, padding="max_length", return_tensors="np"), [text], "single np")
        assert tok.encode(text) == ref.encode(text)
        assert tok.tokenize(text) == ref.tokenize(text)


def test_truncation_keeps_eos_at_the_end(tok):
    enc = tok(["word " * 200, "a cat"], padding="max_length", truncation=True, return_tensors="np")
    assert enc.input_ids.shape == (2, 77)
    assert enc.input_ids[0, -1] == 49407 and enc.attention_mask[0].all()
    assert enc.input_ids[1].tolist()[:4] == [49406, 320, 2368, 49407] and enc.attention_mask[1].sum() == 4


@FUZZ
@given(text=st.text(max_size=80))
def test_random_unicode(tok, ref, text):
    assert_same_encoding(tok(text), ref(text), [text], "fuzz")


# Code points where Python's Unicode tables and tokenizers' differ, or where NFC acts.
TRICKY = sorted({chr(int(r.split("-")[0], 16)) for table in (T._LETTERS_AFTER_16, T._NUMBERS_AFTER_16,
                 T._NFC_UNKNOWN) for r in table.split()} | {chr(c) for c in T._LOWER_NEW}
                | set("aeoAEO<|>!'s 1\u0301\u0308\u0315\u0323\u0327\u0338\u0345\u1100\u1161\u11a8\uac00ΣσİẞǅΩ\u212b"
                      "\u05b0\u0f71\u0f72\u0f80\u3099\u309a\u0b47\u0b3e\u0dd9\u0dcf\u1b05\u1b35")
                | {"<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "\U00011935\U00011930", "\U000105D2\u0307"})


@FUZZ
@given(text=st.lists(st.sampled_from(TRICKY), max_size=12).map("".join))
def test_random_marks_and_table_characters(tok, ref, text):
    assert_same_encoding(tok(text), ref(text), [text], "fuzz tricky")


@FUZZ
@given(texts=st.lists(st.text(max_size=30), min_size=1, max_size=4),
       variant=st.sampled_from(VARIANTS))
def test_random_batches_and_options(tok, ref, texts, variant):
    assert_same_encoding(tok(texts, **variant), ref(texts, **variant), texts, f"fuzz {variant}")


# ----------------------------------------------------------------------------------------------
# Every code point, stage by stage


ALL_CHARS = "".join(chr(c) for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000)


def test_every_code_point_normalizes_alike(ref):
    """NFC, whitespace and lowercase of each code point (NUL between them blocks composition)."""
    text = "\x00".join(ALL_CHARS)
    ours, theirs = T.normalize(text), ref.backend_tokenizer.normalizer.normalize_str(text)
    if ours != theirs:
        i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
        raise AssertionError(f"normalize differs near {ours[i - 4:i + 4]!r} vs reference {theirs[i - 4:i + 4]!r}")


@pytest.mark.parametrize("ours, onig", [(T.LETTER, r"\p{L}"), (T.NUMBER, r"\p{N}"), (r"\s", r"\s")])
def test_every_code_point_is_classed_alike(ours, onig):
    """The regex classes of the pre-tokenizer, against tokenizers' Oniguruma on all code points."""
    tokenizers = reference("tokenizers")
    marked = regex.sub(ours, "\x00", ALL_CHARS, flags=regex.V1)
    expected = tokenizers.normalizers.Replace(tokenizers.Regex(onig), "\x00").normalize_str(ALL_CHARS)
    diff = [f"U+{ord(c):04X}" for c, a, b in zip(ALL_CHARS, marked, expected) if a != b]
    assert not diff, f"{ours[:20]}...: {len(diff)} code points classed otherwise than tokenizers: {diff[:10]}"


def test_new_case_pairs_lowercase_as_tokenizers_does():
    tokenizers = reference("tokenizers")
    lower = tokenizers.normalizers.Lowercase()
    for c, low in T._LOWER_NEW.items():
        assert lower.normalize_str(chr(c)) == low == T.lowercase(chr(c)), f"U+{c:04X}"


def test_pre_tokenizer_pieces(ref):
    text = T.normalize(" ".join(CORPUS))
    theirs = [p for p, _ in ref.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    assert [T.to_byte_chars(p) for p in T.pre_tokenize(text)] == theirs


# ----------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("skip", [False, True])
def test_decode_corpus(tok, ref, skip):
    batch = ref(CORPUS, padding=True)["input_ids"]
    assert tok.batch_decode(batch, skip_special_tokens=skip) == ref.batch_decode(batch, skip_special_tokens=skip)
    for ids in batch:
        assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    arr = np.asarray(batch)
    assert tok.batch_decode(arr, skip_special_tokens=skip) == ref.batch_decode(arr, skip_special_tokens=skip)
    assert tok.decode(arr[0], skip_special_tokens=skip) == ref.decode(arr[0], skip_special_tokens=skip)


@FUZZ
@given(ids=st.lists(st.integers(0, 49407), max_size=30), skip=st.booleans())
def test_decode_random_ids(tok, ref, ids, skip):
    """Random ids make broken UTF-8 too: replaced by U+FFFD alike."""
    assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


def test_decode_odd_inputs(tok, ref):
    assert tok.decode(320) == ref.decode(320) == "a"
    assert tok.decode([320, 99999, 321]) == ref.decode([320, 99999, 321]) == "a b"  # unknown ids skipped
    assert tok.decode([]) == ref.decode([]) == ""
    assert tok.decode([320], clean_up_tokenization_spaces=True) == "a"


# ----------------------------------------------------------------------------------------------
# Loading


def test_from_pretrained_vocab_and_merges(tok, ref, vocab_dir):
    loaded = CLIPTokenizer.from_pretrained(vocab_dir)
    assert loaded.get_vocab() == tok.get_vocab() and loaded.bpe_ranks == tok.bpe_ranks
    assert loaded.model_max_length == 77  # no tokenizer_config.json: CLIP's 77
    assert_same_encoding(loaded(CORPUS, padding=True, truncation=True), ref(CORPUS, padding=True, truncation=True),
                         CORPUS, "vocab.json + merges.txt")


def test_from_pretrained_tokenizer_json(ref, tmp_path):
    """The tokenizer.json (and tokenizer_config.json) that transformers' save_pretrained writes."""
    ref.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists() and not (tmp_path / "vocab.json").exists()
    loaded = CLIPTokenizer.from_pretrained(str(tmp_path))
    assert loaded.model_max_length == 77
    assert_same_encoding(loaded(CORPUS, padding="max_length", truncation=True),
                         ref(CORPUS, padding="max_length", truncation=True), CORPUS, "tokenizer.json")


def test_from_pretrained_configs(vocab_dir, tmp_path):
    """model_max_length from tokenizer_config.json; the sentinel int(1e30) means CLIP's 77."""
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((vocab_dir / name).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 1000000000000000019884624838656}')
    assert CLIPTokenizer.from_pretrained(tmp_path).model_max_length == 77
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 16, "unknown_key": [1, 2]}')
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": "!", "lstrip": False}}))
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert loaded.model_max_length == 16 and loaded.pad_token_id == 0  # "!" is token 0
    assert loaded("a cat", padding="max_length")["input_ids"] == [49406, 320, 2368, 49407] + [0] * 12
    assert CLIPTokenizer.from_pretrained(tmp_path, model_max_length=5).model_max_length == 5


def test_save_pretrained_round_trip(tok, ref, tmp_path):
    tok.save_pretrained(tmp_path)
    assert CLIPTokenizer.from_pretrained(tmp_path).get_vocab() == tok.get_vocab()
    transformers = reference("transformers")
    theirs = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    assert theirs.model_max_length == 77
    assert_same_encoding(theirs(CORPUS, padding=True), ref(CORPUS, padding=True), CORPUS, "saved by npclip")


# ----------------------------------------------------------------------------------------------
# The learner's view and the output object


def test_explain_shows_every_step(tok, ref):
    text = "Hello, World! It's <|endoftext|> naïve"
    steps = tok.explain(text)
    assert steps.normalized == "hello, world! it's <|endoftext|> naïve"
    assert steps.pieces == ["hello", ",", "world", "!", "it", "'s", "<|endoftext|>", "naïve"]
    assert steps.byte_pieces[-1] == "naÃ¯ve"
    assert steps.merges[0] == [("e", "l"), ("el", "l"), ("ell", "o</w>"), ("h", "ello</w>")]
    assert steps.ids == ref(text)["input_ids"] and steps.tokens == ref.convert_ids_to_tokens(steps.ids)
    for text in CORPUS[:40]:
        steps = tok.explain(text)
        assert steps.ids == tok(text)["input_ids"] and len(steps.pieces) == len(steps.merges)


def test_batch_encoding_reads_as_dict_and_attributes(tok):
    enc = tok(["a cat", "a photo of a dog"], padding=True, return_tensors="np")
    assert isinstance(enc, BatchEncoding) and set(enc) == {"input_ids", "attention_mask"}
    assert enc.input_ids is enc["input_ids"] and enc.input_ids.dtype == np.int64 and enc.input_ids.shape == (2, 7)
    assert (lambda input_ids, attention_mask: attention_mask.sum())(**enc) == 4 + 7
    with pytest.raises(AttributeError, match="pixel_values"):
        enc.pixel_values


# ----------------------------------------------------------------------------------------------
# Errors a user can act on


@pytest.mark.parametrize("bad, error, match", [
    (None, TypeError, "not NoneType"),
    (123, TypeError, "not int"),
    (b"bytes", TypeError, "not bytes"),
    (["ok", 3], TypeError, r"text\[1\] is int"),
    ([], ValueError, "empty batch"),
    ("a\ud800b", ValueError, "surrogate"),
])
def test_bad_text(tok, bad, error, match):
    with pytest.raises(error, match=match):
        tok(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"padding": "bogus"}, "padding='bogus'"),
    ({"truncation": "bogus"}, "truncation='bogus'"),
    ({"truncation": "only_second"}, "second sequence"),
    ({"max_length": -1}, "non-negative"),
    ({"return_tensors": "pt"}, "NumPy"),
    ({"padding": "max_length", "max_length": 6, "pad_to_multiple_of": 4, "truncation": True}, "multiple"),
])
def test_bad_options(tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tok(["a cat", "a dog"], **kwargs)


def test_ragged_numpy_says_to_pad(tok):
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a cat", "a photo of a dog"], return_tensors="np")


def test_padding_true_with_max_length_warns_like_transformers(tok):
    with pytest.warns(UserWarning, match="max_length is ignored"):
        tok(["a cat"], padding=True, max_length=3)


def test_decode_errors(tok):
    with pytest.raises(ValueError, match="batch_decode"):
        tok.decode([[1, 2]])
    with pytest.raises(ValueError, match="negative"):
        tok.decode([-1])


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        CLIPTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        CLIPTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordPiece"}}')
    with pytest.raises(ValueError, match="not a BPE"):
        CLIPTokenizer.from_pretrained(tmp_path)
