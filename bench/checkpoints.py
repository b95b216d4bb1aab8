"""Checkpoints made here, in the Hub's own sentence-transformers layout: the random ViT-B/32 the benchmarks time,
and the pieces the tests' tiny models are made of (a hand-built word BPE, the save)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

WORDS = ["a", "an", "the", "photo", "picture", "image", "of", "shape", "red", "green", "blue", "yellow", "circle", "square",
         "triangle"]


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A CLIP BPE vocabulary whose merges spell each word of WORDS whole; other words fall to letters."""
    vocab: dict[str, int] = {}
    merges: list[str] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for token in ("<|startoftext|>", "<|endoftext|>"):
        add(token)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
        add(ch)
        add(ch + "</w>")
    for word in WORDS:
        symbols = [*word[:-1], word[-1] + "</w>"]
        merged = symbols[0]
        for symbol in symbols[1:]:
            if f"{merged} {symbol}" not in merges:
                merges.append(f"{merged} {symbol}")
            merged += symbol
            add(merged)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


def save_sentence_transformer(model, processor, out: Path) -> Path:
    """Save a transformers CLIP as a sentence-transformers checkpoint that SentenceTransformer(out) loads."""
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        SentenceTransformer(tmp, device="cpu").save(str(out))
    return out
