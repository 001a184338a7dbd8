"""The Python API: batches, threads, accessors, pickling, custom regexes (issue 3, "Python API")."""

from __future__ import annotations

import collections
import gc
import pickle
import sys
import threading

import numpy as np
import pytest
from alignfw.tokenizer import PATTERNS, Tokenizer, load_tokenizer


def test_batch_equals_single_on_any_thread_count(trained, corpus_files):
    tok = trained["llama3"]
    lines = corpus_files[1].read_text(encoding="utf-8").splitlines(keepends=True)
    single = [tok.encode(x) for x in lines]
    for n in (None, 1, 2, 4):
        assert tok.encode_batch(lines, num_threads=n) == single
    ids, offsets = tok.encode_batch_flat(lines)
    assert ids.dtype == np.uint32 and offsets.dtype == np.int64 and offsets.shape == (len(lines) + 1,)
    assert [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(lines))] == single
    assert tok.decode_batch(single) == lines
    assert tok.decode(ids[offsets[1] : offsets[2]]) == lines[1]  # numpy ids decode too


def test_large_batches_equal_single_and_report_the_first_bad_text(trained):
    # Many texts on several threads, then the first failing text's error whatever the thread count.
    from alignfw.exceptions import TokenizerError

    for family in ("gpt2", "llama3"):
        tok = trained[family]
        texts = [f"row {i}: {'naïve café 北京 ' * (i % 7)}{i * 7919}" for i in range(6000)]
        single = [tok.encode(t) for t in texts]
        for n in (None, 1, 2, 3):
            assert tok.encode_batch(texts, num_threads=n) == single
    bad = [t.encode() for t in texts]
    bad[4100], bad[5500] = b"ok \xff", b"\xfe"
    for n in (1, 2, 3):
        with pytest.raises(TokenizerError, match="not valid UTF-8: invalid byte at offset 3"):
            tok.encode_batch(bad, num_threads=n)


def test_id_lists_are_not_tracked_by_the_cyclic_gc(trained):
    # Lists of ints cannot form cycles: encode and encode_batch create them untracked, so collections
    # (one every ~700 new containers) never walk the results a caller keeps.
    tok, texts = trained["gpt2"], [f"text number {i}" for i in range(2000)]
    single, batch = tok.encode(texts[7]), tok.encode_batch(texts)
    assert single == batch[7] and len(batch) == 2000
    assert not gc.is_tracked(single) and not any(gc.is_tracked(ids) for ids in batch)
    assert gc.is_tracked(batch)  # the outer list: a caller may put anything in it
    gc.collect()
    tracked = {id(o) for o in gc.get_objects()}
    assert not tracked & {id(ids) for ids in batch}
    # untracked lists are ordinary lists: mutable, freed by reference counting
    single.append(5)
    assert single[-1] == 5 and tok.decode(batch[7]) == texts[7]


def test_id_lists_own_a_reference_to_each_int(trained):
    # encode writes the reference counts of its cached ints itself (no interpreter call per id):
    # each list holds one reference per element, given back when the list goes.
    tok = trained["gpt2"]
    text = "the reference counts of the tokenizer's cached ints " * 3
    ids = tok.encode(text)
    big = max(ids)  # above 256: an ordinary (mortal) int that the tokenizer keeps
    assert big > 256
    base = sys.getrefcount(big)
    kept = [tok.encode(text) for _ in range(50)] + tok.encode_batch([text] * 50)
    assert sys.getrefcount(big) == base + 100 * ids.count(big)
    del kept
    assert sys.getrefcount(big) == base
    # A byte's id (below 257) is one of CPython's small ints: immortal from Python 3.12, whose count
    # must stay as it is; an ordinary count before.
    small = min(ids)
    assert small < 257
    base = sys.getrefcount(small)
    kept = [tok.encode(text) for _ in range(50)]
    immortal = sys.version_info >= (3, 12)
    assert sys.getrefcount(small) == base + (0 if immortal else 50 * ids.count(small))
    del kept
    assert sys.getrefcount(small) == base


def test_large_batches_fill_their_lists_on_threads_with_exact_reference_counts(trained):
    # From 2^15 ids (or the vocabulary's size), a batch's lists are filled on the threads without the
    # GIL, each counting the references it stores per id; the counts are added once the GIL is back.
    # Every int the batch holds must then count exactly its occurrences, on any thread count, and lose
    # them with the lists.
    tok = trained["gpt2"]
    texts = [f"reference {i % 97} counted on {i % 5} threads: naïve 北京 " * (1 + i % 4) for i in range(4000)]
    single = [tok.encode(t) for t in texts]
    occurrences = collections.Counter(i for ids in single for i in ids)
    assert sum(occurrences.values()) >= max(1 << 15, tok.vocab_size)
    immortal = sys.version_info >= (3, 12)
    ints = {i: next(x for ids in single for x in ids if x == i) for i in occurrences}
    mortal = [i for i in occurrences if i > 256 or not immortal]
    base = {i: sys.getrefcount(ints[i]) for i in ints}
    for n in (None, 2, 3, 1):
        batch = tok.encode_batch(texts, num_threads=n)
        assert batch == single
        assert not any(gc.is_tracked(ids) for ids in batch)
        assert all(sys.getrefcount(ints[i]) == base[i] + occurrences[i] for i in mortal), n
        assert all(sys.getrefcount(ints[i]) == base[i] for i in ints if i not in mortal), n
        del batch
        assert all(sys.getrefcount(ints[i]) == base[i] for i in ints), n


def test_encode_from_a_finalizer_that_encode_set_off(trained):
    # encode fills a per-thread buffer of ids. Making its list can run a collection (at once before
    # Python 3.12, which defers it), and so a finalizer that encodes on the same thread while that
    # buffer is in use: that call gets a buffer of its own.
    tok = trained["gpt2"]
    encode, inside, seen, errors = tok.encode, [False], [], []

    class Cycle:
        def __init__(self):
            self.me = self

        def __del__(self):
            try:
                seen.append((inside[0], tok.encode("from a finalizer")))
            except BaseException as e:  # a finalizer's exception is only printed: keep it
                errors.append(e)

    expected, text = tok.encode("from a finalizer"), "the outer call " * 20
    outer = tok.encode(text)
    threshold = gc.get_threshold()
    try:
        gc.set_threshold(1)  # the next container allocated after Cycle() (encode's list) collects
        for _ in range(20):
            gc.collect()
            Cycle()
            inside[0] = True
            assert encode(text) == outer
            inside[0] = False
    finally:
        gc.set_threshold(*threshold)
    gc.collect()
    assert not errors and len(seen) == 20 and all(ids == expected for _, ids in seen)
    if sys.version_info < (3, 12):
        assert all(during for during, _ in seen)  # each finalizer ran inside encode


def test_encode_releases_the_gil(trained):
    # While one thread encodes a large text in Rust, another keeps running Python code.
    tok, text = trained["gpt2"], "lorem ipsum dolor " * 400_000
    ticks = 0
    done = threading.Event()

    def work() -> None:
        tok.encode(text)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    assert ticks > 1000


def test_accessors(trained):
    tok = trained["gpt2"]
    assert tok.special_tokens == {"<|endoftext|>": 0, "<|pad|>": 1}
    assert tok.added_tokens == tok.special_tokens
    assert tok.special_token_id("<|pad|>") == 1
    assert tok.pattern == PATTERNS["gpt2"]
    space_the = tok.token_to_id("Ġthe")
    assert space_the is not None and tok.id_to_token(space_the) == "Ġthe"
    assert tok.id_to_bytes(space_the) == b" the"
    assert tok.token_to_id("no such token") is None and tok.id_to_token(10**6) is None
    vocab = tok.get_vocab()
    assert len(vocab) == tok.vocab_size == len(tok)
    ranks = tok.mergeable_ranks()
    assert len(ranks) == tok.vocab_size - 2 and ranks[b" the"] == space_the
    assert tok.pre_tokenize("Hello  world!") == ["Hello", " ", " world", "!"]
    assert "vocab_size" in repr(tok)


def test_pickle_round_trip(trained):
    tok = trained["qwen2"]
    again = pickle.loads(pickle.dumps(tok))
    text = "Qwen2 splits digits: 12345 and 'LL contractions."
    assert again.encode(text) == tok.encode(text)


def test_custom_regex_and_train_from_iterator():
    texts = ["aaa bbb aaa bbb ccc\n" * 50, "abc abc abc\n" * 30]
    tok = Tokenizer.train_from_iterator(texts, 270, pattern=r"\w+|\s+|[^\w\s]+")
    assert tok.pattern == r"\w+|\s+|[^\w\s]+"
    assert tok.pre_tokenize("ab, cd") == ["ab", ",", " ", "cd"]
    assert tok.decode(tok.encode("aaa ccc!")) == "aaa ccc!"
    assert len(tok.encode("aaa")) == 1


def test_load_tokenizer_prefers_alignfw_for_byte_level_bpe(trained, tmp_path):
    trained["gpt2"].save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, Tokenizer)
    assert loaded.encode("hello") == trained["gpt2"].encode("hello")


def test_load_tokenizer_reads_other_families_and_falls_back_to_hf_for_the_rest(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    wp = HFTokenizer(models.WordPiece({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]").save_pretrained(tmp_path / "wp")
    loaded = load_tokenizer(tmp_path / "wp")
    assert isinstance(loaded, Tokenizer) and loaded.family == "WordPiece"
    assert loaded.encode("hello world") == [1, 2]
    # WordLevel is not implemented by alignfw: transformers serves it.
    wl = HFTokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=wl, unk_token="[UNK]").save_pretrained(tmp_path / "wl")
    loaded = load_tokenizer(tmp_path / "wl")
    assert not isinstance(loaded, Tokenizer)
    assert loaded("hello world", add_special_tokens=False)["input_ids"] == [1, 2]


def test_train_accepts_a_single_path(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("low lower lowest\n" * 20, encoding="utf-8")
    one = Tokenizer.train(corpus, 262)
    assert one.get_vocab() == Tokenizer.train([str(corpus)], 262).get_vocab()
    assert len(one.encode("lowest")) < len("lowest")
