"""Shared fixtures: a mixed-text corpus and small vocabularies trained once per session.

The corpus mixes what issue 3 lists: English prose, source code, Chinese, emoji, long whitespace
runs, digits and rare Unicode (combining marks, RTL, astral letters, letter-like numbers).
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from alignfw.tokenizer import PATTERNS, Tokenizer
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

SPECIALS = ["<|endoftext|>", "<|pad|>"]


def _words(text: str) -> list[str]:
    return text.split()


_ENGLISH = _words(
    "the of and to in is was he for it with as his on be at by had are but from or have an they "
    "which one you were her all she there would their we him been has when who will more no if out "
    "so said what up its about into than them can only other new some could time these two may then "
    "do first any my now such like our over man me even most made after also did many before must "
    "don't it's we'll they're I've you'd she'll THE Quick Brown FOX"
)
_CODE = [
    "def encode(self, text: str) -> list[int]:\n        return self._native.encode(text)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n}\n",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name;\n",
    '<div class="x">&nbsp;</div>\n',
    "if x != None and y == 0x1F: print(f'{x!r:>10}')\n",
]
_CHINESE = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该由"
_EMOJI = ["😀", "🎉", "👩‍💻", "🇫🇷", "❤️", "🤖", "🔥", "✨", "👍🏽"]
_RARE = [
    "naïve",
    "café",
    "Ångström",
    "e\u0301",
    "\u0915\u094d\u0937",
    "שָׁלוֹם",
    "مرحبا",
    "ǅemal",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\u2160\u2161\u2162",
    "½¾",
    "٣٤٥",
    "\u200d",
    "\ufeff",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\u0085",
    "ſ",
    "'S",
    "'LL",
    "Ⅻ",
    "𐍈",
    "\U0001d7d8",
    "\u0345",
    "\t\t",
    "\r\n",
]


def make_text(rng: random.Random, n_lines: int) -> str:
    """Deterministic mixed text of about ``n_lines`` lines."""
    lines = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.45:
            words = [rng.choice(_ENGLISH) for _ in range(rng.randint(3, 18))]
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), str(rng.randint(0, 10 ** rng.randint(1, 9))))
            line = " ".join(words) + rng.choice([".", ",", "!", "?", ";", ""])
        elif kind < 0.65:
            line = rng.choice(_CODE).rstrip("\n")
        elif kind < 0.8:
            line = "".join(rng.choice(_CHINESE) for _ in range(rng.randint(4, 30)))
            line += rng.choice(["。", "，", "！", ""])
        elif kind < 0.88:
            line = " ".join(rng.choice(_EMOJI + _ENGLISH) for _ in range(rng.randint(2, 10)))
        elif kind < 0.95:
            line = (
                rng.choice(_ENGLISH) + " " * rng.randint(2, 40) + rng.choice(_RARE) + "\t" * rng.randint(0, 3)
            )
        else:
            line = "".join(rng.choice(_RARE) for _ in range(rng.randint(2, 12)))
        lines.append(line)
        if rng.random() < 0.1:
            lines.append(" " * rng.randint(0, 8))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(train.txt, heldout.txt)``, ~250 kB and ~60 kB."""
    d = tmp_path_factory.mktemp("corpus")
    train, heldout = d / "train.txt", d / "heldout.txt"
    train.write_text(make_text(random.Random(1), 4000), encoding="utf-8")
    heldout.write_text(make_text(random.Random(2), 1000), encoding="utf-8")
    return train, heldout


def hf_trainer_tokenizer(pattern: str) -> HFTokenizer:
    """An untrained HF tokenizer with the pre-tokenizer alignfw uses for ``pattern``."""
    tok = HFTokenizer(models.BPE())
    if pattern == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PATTERNS[pattern]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    return tok


def hf_train(files: list[Path], pattern: str, vocab_size: int, min_frequency: int) -> HFTokenizer:
    """Hugging Face's BPE trainer at alignfw's settings (byte-level initial alphabet)."""
    tok = hf_trainer_tokenizer(pattern)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(f) for f in files], trainer)
    return tok


@pytest.fixture(scope="session")
def trained(corpus_files: tuple[Path, Path]) -> dict[str, Tokenizer]:
    """alignfw tokenizers trained on the corpus, one per known pattern (vocab 2000)."""
    train, _ = corpus_files
    return {
        p: Tokenizer.train([train], 2000, min_frequency=2, special_tokens=SPECIALS, pattern=p)
        for p in ("gpt2", "llama3", "qwen2")
    }


@pytest.fixture(scope="session")
def hf_of(trained: dict[str, Tokenizer]) -> dict[str, HFTokenizer]:
    """Hugging Face tokenizers loaded from alignfw's saved ``tokenizer.json`` files."""
    return {p: HFTokenizer.from_str(t.to_json()) for p, t in trained.items()}


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """The module's helpers, for test modules (``--import-mode=importlib`` cannot import conftest)."""
    return SimpleNamespace(SPECIALS=SPECIALS, hf_train=hf_train, make_text=make_text)
