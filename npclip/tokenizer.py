"""CLIP's tokenizer: byte-level BPE, token for token as transformers' CLIPTokenizer (5.24) makes it.

    text -> split off special tokens written in the text ("<|endoftext|>")
         -> normalise: NFC, runs of whitespace -> " ", lowercase
         -> pre-tokenise: CLIP's regex cuts words, digits and punctuation runs; whitespace is dropped
         -> each word's UTF-8 bytes as printable characters (GPT-2's byte-to-unicode table)
         -> BPE: merge the lowest-ranked adjacent pair until none is left; "</w>" marks a word's end
         -> ids, between <|startoftext|> (49406) and <|endoftext|> (49407); truncate, pad with 49407

``CLIPTokenizer()`` works offline with the merge list shipped in npclip/data, building the vocabulary
as openai/CLIP's simple_tokenizer.py does. ``CLIPTokenizer.from_pretrained(dir)`` reads tokenizer.json,
or vocab.json + merges.txt. ``tok.explain(text)`` returns every intermediate step.
docs/preprocessing.md tells the details, and where the Unicode tables below come from.
"""

from __future__ import annotations

import gzip
import json
import os
import unicodedata
import warnings
from dataclasses import dataclass, field

import numpy as np
import regex

from .hub import HUB_KWARGS
from .hub import read_json as _read_json

BPE_PATH = os.path.join(os.path.dirname(__file__), "data", "bpe_simple_vocab_16e6.txt.gz")
N_MERGES = 49152 - 256 - 2  # openai/CLIP simple_tokenizer.py: merges[1:49152-256-2+1]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 77  # CLIP's text positions
LARGE_INTEGER = int(1e20)  # above this, transformers' model_max_length means "no limit" (it writes int(1e30))
END_OF_WORD = "</w>"
VOCAB_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


# ----------------------------------------------------------------------------------------------
# Unicode as tokenizers 0.23 sees it. Python's own tables are of another Unicode version (14.0
# in Python 3.11); these small tables close the gap so that every code point is treated alike
# (tests/test_tokenizer.py checks all 1,112,064 of them against tokenizers).


def _char_class(ranges: str) -> str:
    """'0558 058B-058C' -> the regex class body '\\U00000558\\U0000058B-\\U0000058C'."""
    parts = (r.split("-") for r in ranges.split())
    return "".join("-".join(f"\\U{int(cp, 16):08X}" for cp in p) for p in parts)


# Oniguruma in tokenizers knows Unicode 16.0; the regex module knows 18.0. These letters and
# numbers came with 17.0 and 18.0, so tokenizers counts them as neither (they join punctuation runs).
_LETTERS_AFTER_16 = (
    "0558 058B-058C 088F 0C5C 0CDC 208F 209D-209F A7CE-A7CF A7D2 A7D4 A7DD A7E2 A7F1 AB6C-AB6D 107BB-107BF "
    "10940-10959 10EC5-10EC7 10ED9-10EEE 11B0A 11DB0-11DDB 11DF1 16EA0-16EB8 16EBB-16ED3 16FF2-16FF3 "
    "187F8-187FF 18CD6-18CDA 18D09-18D20 18D80-18DF2 18E00-19191 191A0-191D2 1B123-1B128 1B168 1D6A6 "
    "1DF1F-1DF24 1DF2B-1DF81 1DF90-1DF96 1DFCD-1DFFF 1E6C0-1E6DE 1E6E0-1E6E2 1E6E4-1E6E5 1E6E7-1E6ED "
    "1E6F0-1E6F4 1E6FE-1E6FF 2B73A-2B73F 2B81E 2CEA2-2CEAD 323B0-33479 3D000-3FC3F"
)
_NUMBERS_AFTER_16 = "11DE0-11DE9 1246F 12475-1247F 12550-12686 16FF4-16FF6"
LETTER = rf"[\p{{L}}--[{_char_class(_LETTERS_AFTER_16)}]]"
NUMBER = rf"[\p{{N}}--[{_char_class(_NUMBERS_AFTER_16)}]]"

# Capitals whose lowercase came with Unicode 14-17, as (first, last, offset to the lowercase):
# tokenizers' Rust (Unicode 17) lowercases them; Python's str.lower() only from a version that knows them.
_NEW_CASE_PAIRS = (
    (0x1C89, 0x1C89, 1), (0x2C2F, 0x2C2F, 48), (0xA7C0, 0xA7C0, 1), (0xA7CB, 0xA7CB, -42343),
    (0xA7CC, 0xA7CC, 1), (0xA7CE, 0xA7CE, 1), (0xA7D0, 0xA7D0, 1), (0xA7D2, 0xA7D2, 1), (0xA7D4, 0xA7D4, 1),
    (0xA7D6, 0xA7D6, 1), (0xA7D8, 0xA7D8, 1), (0xA7DA, 0xA7DA, 1), (0xA7DC, 0xA7DC, -42561),
    (0x10570, 0x1057A, 39), (0x1057C, 0x1058A, 39), (0x1058C, 0x10592, 39), (0x10594, 0x10595, 39),
    (0x10D50, 0x10D65, 32), (0x16EA0, 0x16EB8, 27),
)
_LOWER_NEW = {c: chr(c + d) for first, last, d in _NEW_CASE_PAIRS for c in range(first, last + 1)}

# tokenizers' NFC uses Unicode 9.0 tables: these combining marks and composition parts of Unicode
# 10-18 are plain characters to it, so the text is normalised in the stretches between them.
_NFC_UNKNOWN = (
    "05C8-05C9 07FD 0897-089F 08CA-08D3 09FE 0C3C 0D3B-0D3C 0EBA 1715 1ABF-1AF0 1DF6-1DFA A82C 105C9 105D2 "
    "105DA 105E4 10D24-10D27 10D69-10D6D 10EAB-10EAC 10ECB-10ECF 10EF0-10EFB 10EFD-10EFF 10F46-10F50 "
    "10F82-10F85 11070 1133B 11382-11385 1138B 1138E 11390-11391 113B8 113BB 113C2 113C5 113C7-113C9 "
    "113CE-113D0 1145E 11839-1183A 11930 11935 11938 1193D-1193E 11943 119E0 11A34 11A47 11A99 11D42 "
    "11D44-11D45 11D97 11F41-11F42 1611E-16129 1612F 16D63 16D67-16D6A 16FF0-16FF1 1D127-1D128 "
    "1D250-1D252 1D25B-1D25C 1D25F 1D280-1D281 1E08F 1E130-1E136 1E2AE 1E2EC-1E2EF 1E4EC-1E4EF "
    "1E5EE-1E5EF 1E6E3 1E6E6 1E6EE-1E6EF 1E6F5"
)
_NFC_SPLIT = regex.compile(f"([{_char_class(_NFC_UNKNOWN)}])")


def nfc(text: str) -> str:
    """Unicode NFC as tokenizers' normalizers.NFC() does it (Unicode 9.0 tables)."""
    if text.isascii():
        return text
    parts = _NFC_SPLIT.split(text)  # odd positions: the marks NFC leaves where they are
    return "".join(p if i % 2 else unicodedata.normalize("NFC", p) for i, p in enumerate(parts))


def lowercase(text: str) -> str:
    """Each character's lowercase, as Rust's char::to_lowercase (normalizers.Lowercase()).

    Character by character: "Σ" becomes "σ" even at a word's end, where str.lower() writes "ς".
    """
    return text.replace("\u03a3", "\u03c3").lower().translate(_LOWER_NEW)


# ----------------------------------------------------------------------------------------------
# Normalise and pre-tokenise

_WHITESPACE = regex.compile(r"\s+")

# transformers' CLIPTokenizer: pre_tokenizers.Split(this, behavior="removed", invert=True).
PATTERN = regex.compile(
    rf"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|{LETTER}+|{NUMBER}|[^\s{LETTER}{NUMBER}]+",
    regex.V1,
)

# Then pre_tokenizers.ByteLevel, whose GPT-2 regex leaves CLIP's pieces whole except these two: the
# special tokens spelled in normalised text (e.g. from "<|ENDOFTEXT|>") are not special tokens.
_BYTELEVEL_SPLITS = {BOS: ["<|", "startoftext", "|>"], EOS: ["<|", "endoftext", "|>"]}


def normalize(text: str) -> str:
    """NFC, whitespace runs -> " ", lowercase (transformers: NFC(), Replace(r"\\s+", " "), Lowercase())."""
    return lowercase(_WHITESPACE.sub(" ", nfc(text)))


def pre_tokenize(normalized: str) -> list[str]:
    """The words BPE sees: the regex's matches; whitespace and anything unmatched is dropped."""
    pieces = PATTERN.findall(normalized)
    return [q for p in pieces for q in _BYTELEVEL_SPLITS.get(p, (p,))]


def bytes_to_unicode() -> dict[int, str]:
    """openai/CLIP simple_tokenizer.bytes_to_unicode: each byte as a printable character (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:  # the 68 unprintable bytes become chr(256), chr(257), ...
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}
_BYTE_TABLE = str.maketrans({chr(b): c for b, c in BYTE_ENCODER.items()})


def to_byte_chars(word: str) -> str:
    """A word's UTF-8 bytes, each as its printable character: "é" -> "Ã©"."""
    try:
        return word.encode("utf-8").decode("latin-1").translate(_BYTE_TABLE)
    except UnicodeEncodeError as e:
        raise ValueError(f"the text holds a lone surrogate {word[e.start]!r}, which UTF-8 cannot encode") from None


# ----------------------------------------------------------------------------------------------
# Byte-pair encoding


def bpe(word: str, ranks: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """openai/CLIP simple_tokenizer.bpe: -> (symbols, the merges applied in order).

    The word starts as characters, the last one carrying "</w>"; the adjacent pair with the lowest
    rank is merged everywhere, left to right, until no pair has a rank.
    """
    symbols = list(word[:-1]) + [word[-1] + END_OF_WORD]
    merges = []
    while len(symbols) > 1:
        pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:
            break
        merges.append(pair)
        symbols = _merge(symbols, pair)
    return symbols, merges


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


# ----------------------------------------------------------------------------------------------
# Where files come from




def resolve(path_or_id, filenames, **hub_kwargs) -> dict:
    """{filename: its path, or None where the checkpoint lacks it}, for a local directory, a bundled
    name or a hub id (configs and tokenizer files only are fetched; see npclip.hub.resolve_dir).
    """
    from .hub import resolve_dir

    directory = resolve_dir(path_or_id, weights=False, **hub_kwargs)
    paths = {name: os.path.join(directory, name) for name in filenames}
    return {name: path if os.path.isfile(path) else None for name, path in paths.items()}


class BatchEncoding(dict):
    """Model inputs as a dict that also reads as attributes: enc["input_ids"], enc.input_ids, model(**enc)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no {name!r} in this encoding (it has {', '.join(self)})") from None


# ----------------------------------------------------------------------------------------------
# The vocabulary: openai's merge file, vocab.json + merges.txt, or tokenizer.json


def openai_vocab_and_merges(path=BPE_PATH) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """openai/CLIP SimpleTokenizer.__init__: 256 byte symbols, their "</w>" forms, merges, 2 specials."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : N_MERGES + 1]  # line 0 is a version header
    merges = [tuple(line.split()) for line in lines]
    symbols = list(BYTE_ENCODER.values())
    tokens = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def read_merges_txt(path) -> list[tuple[str, str]]:
    """merges.txt: an optional '#version' line, then one 'a b' pair a line, in rank order."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    pairs = [tuple(line.split(" ")) for line in lines if line and not line.isspace()]
    for pair in pairs:  # a separate pass: no function call per line on the way (cold start)
        if len(pair) != 2:
            raise ValueError(f"{path}: a merge must be two symbols, not {' '.join(pair)!r}")
    return pairs


def _pair(merge, where) -> tuple[str, str]:
    pair = tuple(merge.split(" ") if isinstance(merge, str) else merge)
    if len(pair) != 2:
        raise ValueError(f"{where}: a merge must be two symbols, not {merge!r}")
    return pair


def read_tokenizer_json(path) -> tuple[dict, list, dict]:
    """tokenizer.json (the tokenizers library's file) -> (vocab, merges, {added token: id})."""
    d = _read_json(path)
    model = d.get("model") or {}
    if model.get("type", "BPE") != "BPE" or "vocab" not in model or "merges" not in model:
        raise ValueError(f"{path}: not a BPE tokenizer.json (model type {model.get('type')!r})")
    merges = [_pair(m, path) for m in model["merges"]]
    added = {t["content"]: int(t["id"]) for t in d.get("added_tokens", [])}
    return dict(model["vocab"]), merges, added


def _token_str(value):
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


# ----------------------------------------------------------------------------------------------
# Padding and truncation, as transformers' _get_padding_truncation_strategies decides them

PADDINGS = {True: "longest", "longest": "longest", "max_length": "max_length", False: None, "do_not_pad": None}
TRUNCATIONS = {True: True, "longest_first": True, "only_first": True, False: False, "do_not_truncate": False}


def strategies(padding, truncation, max_length, pad_to_multiple_of, model_max_length):
    """-> (pad: "longest" | "max_length" | None, truncate: bool, max_length)."""
    if max_length is not None and padding is False and truncation is None:
        truncation = True  # transformers: max_length alone turns truncation on
    pad = _lookup(PADDINGS, padding, "padding")
    truncate = truncation is not None and _lookup(TRUNCATIONS, truncation, "truncation")
    if padding is True and max_length is not None and not truncate:
        warnings.warn("max_length is ignored when padding=True and there is no truncation: "
                      "to pad to max_length, use padding='max_length'", stacklevel=3)
    if max_length is None and (pad == "max_length" or truncate):
        max_length = model_max_length
    if max_length is not None and (not isinstance(max_length, (int, np.integer)) or max_length < 0):
        raise ValueError(f"max_length must be a non-negative integer, not {max_length!r}")
    if truncate and pad and pad_to_multiple_of and max_length % pad_to_multiple_of:
        raise ValueError(f"truncation and padding are both on, but max_length ({max_length}) is not a "
                         f"multiple of pad_to_multiple_of ({pad_to_multiple_of})")
    return pad, truncate, max_length


def _lookup(table, value, name):
    key = value.lower() if isinstance(value, str) else value
    if isinstance(key, (bool, str)) and key in table:
        return table[key]
    if key == "only_second":
        raise ValueError("truncation='only_second' needs a second sequence, and CLIP takes one")
    choices = ", ".join(repr(k) for k in table)
    raise ValueError(f"{name}={value!r}: expected one of {choices}")


def truncate(ids: list[int], max_length: int, n_special: int) -> list[int]:
    """Keep the first max_length - n_special tokens, so that bos and eos still fit.

    tokenizers subtracts in unsigned integers: a max_length below n_special truncates nothing.
    """
    if max_length < n_special:
        return ids
    return ids[: max_length - n_special]


def pad_length(lengths, pad, max_length, pad_to_multiple_of) -> int:
    """The length every sequence is padded to (sequences already longer stay as they are)."""
    length = max(lengths) if pad == "longest" else max_length
    if pad_to_multiple_of and length % pad_to_multiple_of:
        length += pad_to_multiple_of - length % pad_to_multiple_of
    return length


# ----------------------------------------------------------------------------------------------
# The tokenizer


@dataclass
class Explanation:
    """Every step of tokenising one text (CLIPTokenizer.explain)."""

    text: str
    normalized: str  # NFC, whitespace, lowercase; special tokens written in the text kept as they are
    pieces: list[str] = field(default_factory=list)  # the pre-tokenizer's words
    byte_pieces: list[str] = field(default_factory=list)  # each word's bytes as printable characters
    merges: list[list[tuple[str, str]]] = field(default_factory=list)  # per word, the merges in order
    tokens: list[str] = field(default_factory=list)  # with <|startoftext|> and <|endoftext|>
    ids: list[int] = field(default_factory=list)


class CLIPTokenizer:
    """CLIP's tokenizer, called like transformers' CLIPTokenizer.

    tok(text or [texts], padding=False | True | "longest" | "max_length", truncation=None | bool,
        max_length=None, return_tensors=None | "np") -> BatchEncoding(input_ids, attention_mask):
    lists (a list of ints for one string, a list of lists for a batch), or int64 arrays [B, T] with "np".
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab=None, merges=None, unk_token=EOS, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                 model_max_length=MODEL_MAX_LENGTH, added_tokens=None, **kwargs):
        if (vocab is None) != (merges is None):
            raise ValueError("pass both vocab and merges, or neither (for openai's vocabulary)")
        if vocab is None:
            vocab, merges = openai_vocab_and_merges()
        self.encoder = {**vocab, **(added_tokens or {})}  # token -> id
        if not all(type(m) is tuple and len(m) == 2 for m in merges):
            merges = [_pair(m, "merges") for m in merges]
        self.bpe_ranks = dict(zip(merges, range(len(merges))))  # (a, b) -> rank
        specials = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token, "pad_token": pad_token}
        for name, token in specials.items():
            if token not in self.encoder:
                raise ValueError(f"{name} {token!r} is not in the vocabulary")
        # Matched in the raw text before normalising, as transformers' added tokens are.
        self.added_tokens = {**{t: self.encoder[t] for t in specials.values()}, **(added_tokens or {})}
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.bos_token, self.eos_token, self.unk_token, self.pad_token = bos_token, eos_token, unk_token, pad_token
        self.model_max_length = _usable_length(model_max_length)
        self.init_kwargs = kwargs  # other tokenizer_config.json keys, kept but unused
        alternatives = "|".join(regex.escape(t) for t in sorted(self.added_tokens, key=len, reverse=True))
        self._special_split = regex.compile(f"({alternatives})")
        self._cache = {}  # word -> ids

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "CLIPTokenizer":
        """Read a directory's tokenizer.json, or vocab.json + merges.txt, and tokenizer_config.json."""
        hub = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        files = resolve(pretrained_model_name_or_path, VOCAB_FILES, **hub)
        config = _special_tokens_config(files)
        if files["tokenizer.json"]:
            vocab, merges, added = read_tokenizer_json(files["tokenizer.json"])
        elif files["vocab.json"] and files["merges.txt"]:
            vocab, merges, added = _read_json(files["vocab.json"]), read_merges_txt(files["merges.txt"]), {}
        else:
            raise FileNotFoundError(f"{os.fspath(pretrained_model_name_or_path)}: no tokenizer.json, "
                                    f"nor vocab.json with merges.txt")
        return cls(vocab=vocab, merges=merges, added_tokens=added, **{**config, **kwargs})

    def save_pretrained(self, save_directory) -> None:
        """Write vocab.json, merges.txt and tokenizer_config.json (transformers reads them too)."""
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(self.encoder, f, ensure_ascii=False)
        merges = sorted(self.bpe_ranks, key=self.bpe_ranks.get)
        with open(os.path.join(save_directory, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": self.model_max_length,
                  "bos_token": self.bos_token, "eos_token": self.eos_token, "unk_token": self.unk_token,
                  "pad_token": self.pad_token}
        with open(os.path.join(save_directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)

    # -- text -> ids -----------------------------------------------------------------------------

    def __call__(self, text, *, padding=False, truncation=None, max_length=None, return_tensors=None,
                 add_special_tokens=True, pad_to_multiple_of=None, return_attention_mask=True) -> BatchEncoding:
        """Token ids and attention masks, padded and truncated as transformers does.

        The options are keyword-only: transformers' second positional argument is a text pair.
        """
        texts = _check_texts(text)
        pad, trunc, max_length = strategies(padding, truncation, max_length, pad_to_multiple_of,
                                            self.model_max_length)
        n_special = 2 if add_special_tokens else 0
        ids = [self._encode_text(t) for t in texts]
        if trunc:
            ids = [truncate(x, max_length, n_special) for x in ids]
        if add_special_tokens:
            ids = [[self.bos_token_id, *x, self.eos_token_id] for x in ids]
        mask = [[1] * len(x) for x in ids]
        if pad:
            length = pad_length([len(x) for x in ids], pad, max_length, pad_to_multiple_of)
            ids = [x + [self.pad_token_id] * (length - len(x)) for x in ids]
            mask = [m + [0] * (length - len(m)) for m in mask]
        data = {"input_ids": ids, "attention_mask": mask} if return_attention_mask else {"input_ids": ids}
        return BatchEncoding(_as_tensors(data, return_tensors, batched=not isinstance(text, str)))

    def encode(self, text: str, add_special_tokens=True) -> list[int]:
        """One text's ids, neither truncated nor padded."""
        ids = self._encode_text(_single(text))
        return [self.bos_token_id, *ids, self.eos_token_id] if add_special_tokens else ids

    def tokenize(self, text: str) -> list[str]:
        """The token strings of one text, without <|startoftext|> and <|endoftext|> around it."""
        return self.convert_ids_to_tokens(self.encode(text, add_special_tokens=False))

    def _encode_text(self, text: str) -> list[int]:
        """Special tokens found in the raw text, everything between them normalised and BPE-encoded."""
        ids = []
        for i, segment in enumerate(self._special_split.split(text)):
            if i % 2:  # a special token written in the text
                ids.append(self.added_tokens[segment])
                continue
            for word in pre_tokenize(normalize(segment)):
                ids.extend(self._word_ids(word))
        return ids

    def _word_ids(self, word: str) -> tuple[int, ...]:
        ids = self._cache.get(word)
        if ids is None:
            symbols, _ = bpe(to_byte_chars(word), self.bpe_ranks)
            ids = tuple(self.encoder.get(s, self.unk_token_id) for s in symbols)
            if len(self._cache) > 100_000:  # a bounded cache: drop it all now and then
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def explain(self, text: str) -> Explanation:
        """Every step for one text: normalised text, words, their bytes, the merges, tokens and ids."""
        steps = Explanation(text=_single(text), normalized="")
        segments = self._special_split.split(steps.text)
        steps.normalized = "".join(s if i % 2 else normalize(s) for i, s in enumerate(segments))
        for i, segment in enumerate(segments):
            words = [segment] if i % 2 else pre_tokenize(normalize(segment))
            for word in words:
                chars = word if i % 2 else to_byte_chars(word)
                symbols, merges = ([word], []) if i % 2 else bpe(chars, self.bpe_ranks)
                steps.pieces.append(word)
                steps.byte_pieces.append(chars)
                steps.merges.append(merges)
                steps.tokens.extend(symbols)
        steps.tokens = [self.bos_token, *steps.tokens, self.eos_token]
        steps.ids = self.convert_tokens_to_ids(steps.tokens)
        return steps

    # -- ids -> text -----------------------------------------------------------------------------

    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None) -> str:
        """Text from ids: bytes joined and decoded, "</w>" -> " ", stripped (transformers' CLIP decode).

        Unknown ids are skipped, as tokenizers does; clean_up_tokenization_spaces is ignored for
        BPE, as transformers 5.24 ignores it.
        """
        ids = _id_list(token_ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.all_special_ids]
        tokens = [self.decoder[i] for i in ids if i in self.decoder]
        data = b"".join(bytes(BYTE_DECODER[c] for c in t) if all(c in BYTE_DECODER for c in t)
                        else t.encode("utf-8") for t in tokens)
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ").strip()

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None) -> list[str]:
        """decode for each sequence of a batch (a list of lists, or an array [B, T])."""
        if isinstance(sequences, np.ndarray) and sequences.ndim != 2:
            raise ValueError(f"batch_decode takes a batch of sequences [B, T], not an array of shape {sequences.shape}")
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, (int, np.integer)):
            return self.decoder.get(int(ids))
        return [self.decoder.get(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.encoder.get(tokens, self.unk_token_id)
        return [self.encoder.get(t, self.unk_token_id) for t in tokens]

    # -- the vocabulary --------------------------------------------------------------------------

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder)

    def __len__(self) -> int:
        return len(self.encoder)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    @property
    def bos_token_id(self) -> int:
        return self.encoder[self.bos_token]

    @property
    def eos_token_id(self) -> int:
        return self.encoder[self.eos_token]

    @property
    def pad_token_id(self) -> int:
        return self.encoder[self.pad_token]

    @property
    def unk_token_id(self) -> int:
        return self.encoder[self.unk_token]

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(set(self.added_tokens.values()))

    @property
    def all_special_tokens(self) -> list[str]:
        return [self.decoder[i] for i in self.all_special_ids]

    def __repr__(self) -> str:
        return (f"CLIPTokenizer(vocab_size={self.vocab_size}, merges={len(self.bpe_ranks)}, "
                f"model_max_length={self.model_max_length})")


# ----------------------------------------------------------------------------------------------
# Helpers for the class


def _usable_length(n) -> int:
    """model_max_length, or CLIP's 77 where a config has none usable (transformers writes int(1e30))."""
    if n is None or isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 < n <= LARGE_INTEGER:
        return MODEL_MAX_LENGTH
    return int(n)


def _special_tokens_config(files) -> dict:
    """Special tokens and model_max_length from tokenizer_config.json and special_tokens_map.json."""
    config = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if files[name]:
            config.update(_read_json(files[name]))
    keys = ("bos_token", "eos_token", "unk_token", "pad_token")
    out = {k: _token_str(config[k]) for k in keys if isinstance(_token_str(config.get(k)), str)}
    if "model_max_length" in config:
        out["model_max_length"] = config["model_max_length"]
    return out


def _check_texts(text) -> list[str]:
    """A string -> [string]; a list or tuple of strings -> a list; anything else: a clear error."""
    if isinstance(text, str):
        return [text]
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text must be a str or a list of str, not {type(text).__name__}")
    if not text:
        raise ValueError("text is an empty batch: pass at least one string")
    for i, t in enumerate(text):
        if not isinstance(t, str):
            raise TypeError(f"text[{i}] is {type(t).__name__}, not str")
    return list(text)


def _single(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    return text


def _id_list(token_ids) -> list[int]:
    """Ids as a flat list of ints, from an int, a list, or a 1-D array."""
    if type(token_ids).__module__.startswith("torch"):
        token_ids = token_ids.detach().cpu().numpy()
    a = np.asarray(token_ids)
    if a.ndim > 1:
        raise ValueError(f"decode takes one sequence; use batch_decode for ids of shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, not {a.dtype}")
    ids = a.reshape(-1).tolist()
    if any(i < 0 for i in ids):
        raise ValueError(f"token ids cannot be negative: {min(ids)}")
    return ids


def _as_tensors(data: dict, return_tensors, batched: bool) -> dict:
    """Lists as transformers returns them (one list for one string), or int64 arrays [B, T] for 'np'."""
    if return_tensors is None:
        return data if batched else {k: v[0] for k, v in data.items()}
    if return_tensors != "np":
        raise ValueError(f"return_tensors={return_tensors!r}: npclip returns NumPy ('np') or lists (None)")
    lengths = {len(x) for x in data["input_ids"]}
    if len(lengths) > 1:
        raise ValueError(f"sequences of different lengths {sorted(lengths)} cannot make one array: "
                         f"pass padding=True (or 'max_length'), and truncation=True if needed")
    return {k: np.asarray(v, dtype=np.int64).reshape(len(v), -1) for k, v in data.items()}
