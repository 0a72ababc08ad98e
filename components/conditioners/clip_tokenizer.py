"""A small CLIP byte-level BPE tokenizer built by the package (no download): the 256 byte symbols
and their end-of-word forms (as in CLIP's vocabulary), one merge chain per given word so that each
word is one token, then CLIP's <|startoftext|> and <|endoftext|>. Any text still tokenizes
(unknown words fall back to bytes); a real CLIP vocabulary is loaded from a folder instead."""

from __future__ import annotations

import functools


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map of bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def vocab_and_merges(words: list[str]) -> tuple[dict[str, int], list[str]]:
    byte_symbol = bytes_to_unicode()
    symbols = list(byte_symbol.values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    seen_merges, seen_tokens = set(), set(vocab_list)  # the lists keep their order; the sets answer "in"
    for word in sorted(set(w.lower() for w in words)):
        chars = [byte_symbol[b] for b in word.encode()]
        chars[-1] += "</w>"
        left = chars[0]
        for right in chars[1:]:
            merge = f"{left} {right}"
            if merge not in seen_merges:
                merges.append(merge)
                seen_merges.add(merge)
                if left + right not in seen_tokens:
                    vocab_list.append(left + right)
                    seen_tokens.add(left + right)
            left = left + right
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


@functools.lru_cache(maxsize=4)
def _build(words: tuple[str, ...], max_length: int):
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges(list(words))
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], model_max_length=max_length)


def build_tokenizer(words: list[str], max_length: int = 77):
    """A transformers CLIPTokenizer over ``words`` (save it with ``.save_pretrained(folder)``)."""
    return _build(tuple(sorted(set(words))), max_length)


def vocab_size(words: list[str]) -> int:
    return len(vocab_and_merges(words)[0])
