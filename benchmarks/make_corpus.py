"""Deterministic mixed-text corpus for the tokenizer benchmark.

Documents of English-like prose (Zipf-distributed words), source code, Chinese, emoji, long
whitespace runs, digits and rare Unicode, separated by blank lines. Usage::

    python benchmarks/make_corpus.py outputs/bench_bpe/corpus.txt --mb 24
"""

from __future__ import annotations

import argparse
import itertools
import random
from pathlib import Path


def _words(text: str) -> list[str]:
    return text.split()


_COMMON = _words(
    "the of and to a in is it you that he was for on are with as I his they be at one have this from or "
    "had by hot but some what there we can out other were all your when up use word how said an each she "
    "which do their time if will way about many then them would write like so these her long make thing "
    "see him two has look more day could go come did my sound no most number who over know water than "
    "call first people may down side been now find any new work part take get place made live where after "
    "back little only round man year came show every good me give our under name very through just form "
    "don't it's we'll they're I've you'd she'll can't won't"
)
_SYLLABLES = _words(
    "ka lo mi ne ru ta shi ver con ing tion pre ex al be de re un der ter ment ly est ful ous"
)
_CODE = [
    "def {f}(self, {a}: int, {b}: list[str]) -> dict[str, int]:\n    result = {{}}\n    for i, x in enumerate({b}):\n        result[x] = i * {a} + {n}\n    return result\n",
    "static int {f}(const char *{a}, size_t {b}) {{\n\tint acc = 0x{h};\n\tfor (size_t i = 0; i < {b}; ++i) {{\n\t\tacc = (acc << 5) ^ {a}[i];\n\t}}\n\treturn acc;\n}}\n",
    "pub fn {f}<T: Clone>({a}: &[T], {b}: usize) -> Vec<T> {{\n    {a}.iter().take({b}).cloned().collect::<Vec<_>>() // {n}\n}}\n",
    "SELECT {a}.id, COUNT(*) AS {b} FROM {f} {a} WHERE {a}.score >= {n} GROUP BY {a}.id;\n",
    "const {f} = async ({a}, {b}) => {{\n  const res = await fetch(`/api/${{{a}}}?limit={n}`);\n  return res.json();\n}};\n",
]
_CJK = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该"
_EMOJI = ["😀", "🎉", "👩‍💻", "🇫🇷", "❤️", "🤖", "🔥", "✨", "👍🏽", "🧪", "📈"]
_RARE = [
    "naïve",
    "café",
    "Ångström",
    "e\u0301",
    "क्ष",
    "שָׁלוֹם",
    "مرحبا",
    "ǅemal",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "ⅠⅡⅢ",
    "½¾",
    "٣٤٥",
    "\u00a0",
    "\u3000",
    "Привет",
    "Ελληνικά",
    "ﬁ",
    "𐍈𐌰",
]


_CUM: list[float] = []


def _word(rng: random.Random, lexicon: list[str]) -> str:
    # Zipf's law, P(rank r) ~ 1/r, as in natural text ("the" is ~7% of words).
    if len(_CUM) != len(lexicon):
        _CUM[:] = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(lexicon))))
    return rng.choices(lexicon, cum_weights=_CUM)[0]


def make_document(rng: random.Random, lexicon: list[str]) -> str:
    kind = rng.random()
    if kind < 0.5:
        sentences = []
        for _ in range(rng.randint(3, 40)):
            words = [_word(rng, lexicon) for _ in range(rng.randint(4, 25))]
            if rng.random() < 0.2:
                words.insert(rng.randrange(len(words)), f"{rng.randint(0, 10 ** rng.randint(1, 8)):,}")
            s = " ".join(words)
            sentences.append(s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", ";"]))
        return " ".join(sentences)
    if kind < 0.7:
        names = [_word(rng, lexicon) + rng.choice(["", "_id", "_count", "Buf", "2"]) for _ in range(3)]
        return "\n".join(
            rng.choice(_CODE).format(
                f=names[0], a=names[1], b=names[2], n=rng.randint(0, 9999), h=f"{rng.getrandbits(24):06x}"
            )
            for _ in range(rng.randint(1, 6))
        )
    if kind < 0.85:
        return "".join(
            rng.choice(_CJK) + (rng.choice("，。、") if rng.random() < 0.08 else "")
            for _ in range(rng.randint(50, 800))
        )
    if kind < 0.93:
        return " ".join(
            rng.choice(_EMOJI) if rng.random() < 0.3 else _word(rng, lexicon)
            for _ in range(rng.randint(10, 120))
        )
    parts = []
    for _ in range(rng.randint(5, 60)):
        r = rng.random()
        if r < 0.3:
            parts.append(" " * rng.randint(2, 80))
        elif r < 0.5:
            parts.append("\t" * rng.randint(1, 6) + "\n" * rng.randint(1, 3))
        elif r < 0.7:
            parts.append(str(rng.getrandbits(rng.randint(8, 128))))
        else:
            parts.append(rng.choice(_RARE))
    return "".join(parts)


def make_corpus(n_bytes: int, seed: int = 0) -> str:
    """About ``n_bytes`` of UTF-8 text, documents separated by blank lines."""
    rng = random.Random(seed)
    lexicon = _COMMON + sorted(
        {"".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(30000)}
    )
    docs, size = [], 0
    while size < n_bytes:
        d = make_document(rng, lexicon)
        docs.append(d)
        size += len(d.encode()) + 2
    return "\n\n".join(docs) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mb", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(make_corpus(int(args.mb * 2**20), args.seed), encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
