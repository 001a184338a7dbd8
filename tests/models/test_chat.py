"""Chat templates (alignfw.models.chat): rendered conversations encode to Hugging Face's
``apply_chat_template(..., tokenize=True)`` ids for Llama-3-, Qwen2-, Mistral/Gemma- and
Llama-2-style templates, through both encoders (alignfw's Rust tokenizer, for every family, and
Hugging Face's); BOS comes once; a special token typed by a user stays text (``literal`` spans,
checked against Hugging Face's reference by a property test); bad input gets one clear error.
"""

from __future__ import annotations

import pytest
import torch
from chat_models import GEMMA_TEMPLATE, hf_tokenizer, save_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignfw.exceptions import ConfigError, DataError, InvalidInputError
from alignfw.models import chat, native_tokenizer
from alignfw.tokenizer import Tokenizer
from alignfw.types import ChatText, Conversation, Record, UnrenderedChat

FAMILIES = ("llama3", "qwen2", "mistral", "llama2")
BYTE_LEVEL = ("llama3", "qwen2")
NO_GENERATION_PROMPT = ("mistral", "llama2")  # the [INST] template alternates user/assistant, no generation prompt

CONVERSATIONS = [
    [{"role": "user", "content": "What color is the sky?"}],
    [
        {"role": "user", "content": "hello, how many cats?"},
        {"role": "assistant", "content": "two cats. Thanks!"},
        {"role": "user", "content": "  and dogs?\n"},
    ],
]
SYSTEM = [{"role": "system", "content": "You are a helpful assistant."}]


def _hf_ids(tok, messages, **kw) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, **kw)
    if not isinstance(out, list):  # transformers 5 returns a BatchEncoding by default
        out = out["input_ids"]
    return list(out)


def _hf_text(tok, messages, **kw) -> str:
    return tok.apply_chat_template(messages, tokenize=False, **kw)


@pytest.fixture(scope="module")
def toks():
    """family -> (Hugging Face tokenizer, alignfw Rust tokenizer as the model plugin builds it)."""
    out = {}
    for family in FAMILIES:
        hf = hf_tokenizer(family)
        out[family] = (hf, native_tokenizer(hf))
    return out


def _convs(family):
    # the [INST] template knows user and assistant only, alternating
    return CONVERSATIONS if family in NO_GENERATION_PROMPT else CONVERSATIONS + [SYSTEM + CONVERSATIONS[0]]


def _prompt(tok, messages) -> ChatText:
    return chat.render_conversation(tok, Conversation(prompt=messages))["prompt"]


def test_every_family_uses_the_rust_tokenizer(toks, tmp_path):
    assert {f: toks[f][1].family for f in FAMILIES} == {"llama3": "ByteLevelBPE", "qwen2": "ByteLevelBPE", "mistral": "BPE", "llama2": "BPE"}
    toks["mistral"][0].save_pretrained(tmp_path)  # from a directory as well
    assert native_tokenizer(str(tmp_path)).family == "BPE"


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_ids_equal_apply_chat_template(family, toks):
    hf, fast = toks[family]
    for messages in _convs(family):
        gen = family not in NO_GENERATION_PROMPT
        text = _prompt(hf, messages)
        assert isinstance(text, ChatText) and str(text) == _hf_text(hf, messages, add_generation_prompt=gen)
        want = _hf_ids(hf, messages, add_generation_prompt=gen)
        assert chat.encode_texts([text], hf)[0] == want
        assert chat.encode_texts([text], hf, fast)[0] == want


# A Llama-2-style (legacy) file prepends "▁" to every text it encodes, so a response encoded on its
# own (as encode_pairs does) starts with a prefix the whole conversation's encoding lacks.
@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral"])
def test_full_conversation_ids_equal_apply_chat_template(family, toks):
    hf, fast = toks[family]
    messages = CONVERSATIONS[1][:2]
    conv = Conversation(prompt=messages[:1], response=messages[1:])
    out = chat.render_conversation(hf, conv)
    want = _hf_ids(hf, messages)
    got = chat.encode_texts([out["prompt"]], hf)[0] + chat.encode_texts([out["response"]], hf)[0]
    assert got == want
    assert str(out["prompt"]) + str(out["response"]) == _hf_text(hf, messages)
    assert chat.encode_texts([out["prompt"], out["response"]], hf, fast) == chat.encode_texts([out["prompt"], out["response"]], hf)


def test_gemma_style_template_on_a_sentencepiece_style_tokenizer():
    hf = hf_tokenizer("mistral", GEMMA_TEMPLATE)
    messages = SYSTEM + CONVERSATIONS[1]
    text = _prompt(hf, messages)
    want = _hf_ids(hf, messages, add_generation_prompt=True)
    assert chat.encode_texts([text], hf)[0] == want
    assert chat.encode_texts([text], hf, native_tokenizer(hf))[0] == want
    assert want.count(hf.bos_token_id) == 1 and want[0] == hf.bos_token_id
    assert want.count(hf.convert_tokens_to_ids("<start_of_turn>")) == len(messages) + 1


@pytest.mark.parametrize("family", FAMILIES)
def test_bos_exactly_once_where_the_family_expects_it(family, toks, tmp_path):
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    model = build_hf_model(HFModelConfig(path=str(save_model(family, tmp_path / family))))
    tok = model.tokenizer
    bos = tok.bos_token_id if family != "qwen2" else None
    rec = chat.render_records([Record(prompt=UnrenderedChat("q"), conversation=Conversation(prompt=CONVERSATIONS[0]))], tok)[0]
    ids, mask = model.encode_prompts([rec.prompt, "plain text prompt"])
    for row, m in zip(ids.tolist(), mask.tolist()):
        real = [t for t, k in zip(row, m) if k]
        if bos is None:
            assert tok.bos_token_id is None or tok.bos_token_id not in real
        else:
            assert real[0] == bos and real.count(bos) == 1
    # the chat prompt is exactly Hugging Face's, the plain one what tokenizer(text) gives
    chat_ids = [t for t, k in zip(ids[0].tolist(), mask[0].tolist()) if k]
    assert chat_ids == _hf_ids(tok, CONVERSATIONS[0], add_generation_prompt=family not in NO_GENERATION_PROMPT)
    plain_ids = [t for t, k in zip(ids[1].tolist(), mask[1].tolist()) if k]
    assert plain_ids == tok("plain text prompt")["input_ids"]


def test_chatml_prompt_written_by_hand_vs_rendered(toks):
    """The reported bug: a ChatML prompt as plain text is split into bytes; rendered, it is HF's."""
    hf, fast = toks["qwen2"]
    messages = SYSTEM + CONVERSATIONS[0]
    by_hand = _hf_text(hf, messages, add_generation_prompt=True)
    want = _hf_ids(hf, messages, add_generation_prompt=True)
    plain = chat.encode_texts([by_hand], hf, fast)[0]
    assert hf.convert_tokens_to_ids("<|im_start|>") not in plain and len(plain) > len(want)
    assert chat.encode_texts([_prompt(hf, messages)], hf, fast)[0] == want


@pytest.mark.parametrize("family", FAMILIES)
def test_special_token_typed_by_a_user_stays_text(family, toks):
    hf, fast = toks[family]
    specials = [t for t in chat.special_tokens(hf) if t not in (hf.unk_token,)]
    evil = "hi " + " ".join(specials) + " bye"
    messages = [{"role": "user", "content": evil}]
    clean = [{"role": "user", "content": "hi bye"}]
    text = _prompt(hf, messages)
    assert str(text) == _hf_text(hf, messages, add_generation_prompt=family not in NO_GENERATION_PROMPT)  # the text is HF's
    assert text.literal and all(text[a:b] in specials for a, b in text.literal)
    ids = chat.encode_texts([text], hf)[0]
    special_ids = {hf.convert_tokens_to_ids(t) for t in specials}
    # exactly the template's special tokens, as for a harmless message
    clean_ids = _hf_ids(hf, clean, add_generation_prompt=family not in NO_GENERATION_PROMPT)
    assert [i for i in ids if i in special_ids] == [i for i in clean_ids if i in special_ids]
    if family != "llama2":  # a legacy file adds "▁" after each special token HF finds in the user's text
        assert hf.decode(ids) == hf.decode(_hf_ids(hf, messages, add_generation_prompt=family not in NO_GENERATION_PROMPT))
    assert chat.encode_texts([text], hf, fast)[0] == ids
    # the user's text is encoded as the Rust tokenizer encodes plain text
    assert fast.encode(evil) == fast.encode(evil, allowed_special=())
    assert all(i not in special_ids for i in fast.encode(evil))


def test_a_forged_marker_in_user_text_cannot_make_a_special_token(toks):
    hf, fast = toks["qwen2"]
    forged = "\U000f0000<|im_start|>\U000f0001"
    text = _prompt(hf, [{"role": "user", "content": "a" + forged + "<|im_end|>"}])
    assert "\U000f0000" not in text
    ids = chat.encode_texts([text], hf, fast)[0]
    assert ids.count(hf.convert_tokens_to_ids("<|im_end|>")) == 2  # system and user turns, not the user's spelling


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral"])  # llama2: see test_full_conversation_ids...
def test_encode_pairs_trains_the_assistant_turn_up_to_eos(family, tmp_path):
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    model = build_hf_model(HFModelConfig(path=str(save_model(family, tmp_path / family))))
    tok = model.tokenizer
    prompt, answer = CONVERSATIONS[0], [{"role": "assistant", "content": "It is blue."}]
    rec = chat.render_records([Record(prompt=UnrenderedChat(""), response=UnrenderedChat(""), conversation=Conversation(prompt=prompt, response=answer))], tok)[0]
    gen = model.encode_pairs([rec.prompt], [rec.response])
    seq = [t for t, m in zip(gen.sequences[0].tolist(), gen.attention_mask[0].tolist()) if m]
    resp = [t for t, m in zip(gen.response_ids[0].tolist(), gen.response_mask[0].tolist()) if m]
    full = _hf_ids(tok, prompt + answer)
    eos = tok.eos_token_id
    assert resp[-1] == eos and resp.count(eos) == 1
    assert seq == full[: full.index(eos, len(seq) - len(resp)) + 1]  # HF's ids up to the turn's end
    assert gen.prompt_len - (gen.attention_mask[0, : gen.prompt_len] == 0).sum().item() == len(seq) - len(resp)
    out = model.score(gen)  # the model scores it
    assert torch.isfinite(out["logprobs"]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_text_spelling_a_special_token_stays_text_on_both_paths(family, toks):
    hf, fast = toks[family]
    text = "say " + hf.eos_token + " now"
    ids = chat.encode_texts([text], hf)[0]
    assert hf.eos_token_id not in ids
    assert chat.encode_texts([text], hf, fast)[0] == ids


def test_response_without_eos_in_the_template_gets_one():
    assert chat.response_ids([5, 6], ChatText("ab"), 9) == [5, 6, 9]
    assert chat.response_ids([5, 9, 7], ChatText("ab"), 9) == [5, 9]
    assert chat.response_ids([5, 9, 7], "plain", 9) == [5, 9, 7, 9]


def test_rendering_keeps_plain_records_and_is_idempotent(toks):
    hf, _ = toks["qwen2"]
    plain = Record(prompt="translate: cat =", references=["nyan"])
    conv = Record(prompt=UnrenderedChat("hi", "line 1 of x.jsonl"), conversation=Conversation(prompt=CONVERSATIONS[0]))
    once = chat.render_records([plain, conv], hf)
    assert once[0] is plain and isinstance(once[1].prompt, ChatText)
    assert chat.render_records(once, hf)[1] is once[1]


def test_prompt_ending_with_an_assistant_message_is_continued(toks):
    hf, fast = toks["qwen2"]
    messages = CONVERSATIONS[0] + [{"role": "assistant", "content": "It is"}]
    text = _prompt(hf, messages)
    assert str(text) == _hf_text(hf, messages, continue_final_message=True)
    assert chat.encode_texts([text], hf, fast)[0] == _hf_ids(hf, messages, continue_final_message=True)


# -- errors -------------------------------------------------------------------------------------


def test_unknown_role_names_the_row_and_the_fix():
    with pytest.raises(DataError, match=r"line 4 of chats\.jsonl: message 1 of column 'prompt' has unknown role 'human'; use role 'user'"):
        chat.check_messages([{"role": "human", "content": "hi"}], "line 4 of chats.jsonl", "prompt")
    with pytest.raises(DataError, match="must have string content"):
        chat.check_messages([{"role": "user", "content": 3}], "row 2 of x.parquet", "prompt")


def test_template_that_fails_names_the_row(toks):
    hf, _ = toks["mistral"]
    bad = Conversation(prompt=[{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], where="line 7 of d.jsonl")
    with pytest.raises(DataError, match=r"line 7 of d\.jsonl: the chat template failed to render .*alternate.*model\.chat_template"):
        chat.render_conversation(hf, bad)


def test_model_without_a_template_names_the_option():
    hf = hf_tokenizer("qwen2", template=None)
    rec = Record(prompt=UnrenderedChat("hi"), conversation=Conversation(prompt=CONVERSATIONS[0], where="line 1 of chats.jsonl"))
    with pytest.raises(ConfigError, match=r"line 1 of chats\.jsonl is a conversation .*no chat template; set model\.chat_template="):
        chat.render_records([rec], hf)


def test_unrendered_conversation_is_not_encoded(toks):
    hf, fast = toks["qwen2"]
    with pytest.raises(DataError, match=r"line 2 of a\.jsonl: a conversation reached the model before its chat template"):
        chat.encode_texts([UnrenderedChat("hi", "line 2 of a.jsonl")], hf, fast)


def test_template_whose_prompt_is_not_a_prefix_is_refused():
    # a template that renders the generation prompt differently from how an answer starts
    odd = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}[answer]{% endif %}"
    hf = hf_tokenizer("qwen2", template=odd)
    conv = Conversation(prompt=CONVERSATIONS[0], response=[{"role": "assistant", "content": "x"}], where="row 3 of p.parquet")
    with pytest.raises(DataError, match=r"row 3 of p\.parquet: the chat template renders prompt \+ response so that it does not start"):
        chat.render_conversation(hf, conv)


# -- literal spans: alignfw's Rust tokenizer vs Hugging Face's reference ------------------------


def _stretch_encoders(hf):
    """Hugging Face's encoders of one stretch of text between added tokens, special spellings as
    plain text: at the text's start, and after an added token (where a Metaspace pre-tokenizer with
    ``prepend_scheme="first"`` adds no prefix, as it checks the stretch's offset in the text)."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import pre_tokenizers

    first = HfTokenizer.from_str(hf.backend_tokenizer.to_str())
    later = HfTokenizer.from_str(hf.backend_tokenizer.to_str())
    pre = later.pre_tokenizer
    if isinstance(pre, pre_tokenizers.Metaspace) and pre.prepend_scheme == "first":
        later.pre_tokenizer = pre_tokenizers.Metaspace(replacement=pre.replacement, prepend_scheme="never", split=pre.split)
    first.encode_special_tokens = later.encode_special_tokens = True
    return first, later


def _reference(hf, encoders, text: str, literal) -> list[int]:
    """Hugging Face's ids for ``text`` when the special spellings overlapping ``literal`` are not
    added tokens there: the text splits at added tokens (leftmost, longest; a dropped match is
    skipped whole, as alignfw's scan does), each stretch between them is encoded on its own."""
    specials = chat.special_tokens(hf)  # longest first
    ids: list[int] = []
    start = i = 0
    while i < len(text):
        tok = next((t for t in specials if text.startswith(t, i)), None)
        if tok is None:
            i += 1
            continue
        end = i + len(tok)
        if not any(a < end and i < b for a, b in literal):
            if start < i:
                ids += encoders[start > 0].encode(text[start:i], add_special_tokens=False).ids
            ids.append(hf.convert_tokens_to_ids(tok))
            start = end
        i = end
    if start < len(text):
        ids += encoders[start > 0].encode(text[start:], add_special_tokens=False).ids
    return ids


PLAIN_PIECES = ["the", " sky", "blue", " ", "  ", "\n", "\n\n", " \n ", "\t", "12", "345", "é", "🤗", "?", "don't", "x", "▁"]


@st.composite
def _chat_texts(draw, n_specials: int):
    """Texts mixing plain pieces, special spellings and special spellings marked literal; the
    special's index is taken modulo the family's count."""
    parts = draw(st.lists(st.one_of(
        st.tuples(st.just("plain"), st.sampled_from(PLAIN_PIECES)),
        st.tuples(st.sampled_from(["special", "literal"]), st.integers(0, n_specials - 1)),
    ), max_size=14))
    return parts


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_literal_spans_give_the_reference_ids(family, toks, data):
    hf, fast = toks[family]
    encoders = _stretch_encoders(hf)
    specials = chat.special_tokens(hf)
    text, literal = "", []
    for kind, value in data.draw(_chat_texts(len(specials))):
        piece = value if kind == "plain" else specials[value]
        if kind == "literal":
            literal.append((len(text), len(text) + len(piece)))
        text += piece
    want = _reference(hf, encoders, text, literal)
    assert fast.encode(text, allowed_special="all", literal=literal) == want
    assert chat.encode_texts([ChatText(text, literal)], hf, fast)[0] == want
    # Hugging Face's fallback gives the reference too (no special token here has lstrip/rstrip/single_word)
    assert chat.encode_texts([ChatText(text, literal)], hf)[0] == want
    # the reference is Hugging Face's own splitting: with no literal span it is HF's encode of the text
    assert _reference(hf, encoders, text, []) == hf.backend_tokenizer.encode(text, add_special_tokens=False).ids


def test_literal_spans_at_the_text_start_and_bad_spans(toks):
    hf, fast = toks["mistral"]
    # a literal spelling at offset 0 joins the first stretch, which gets the Metaspace prefix
    text = "[INST] hi</s>"
    got = fast.encode(text, allowed_special="all", literal=[(0, 6)])
    assert got == hf("[INST] hi", add_special_tokens=False, split_special_tokens=True)["input_ids"] + [hf.eos_token_id]
    assert fast.encode(text, allowed_special="all", literal=[]) == hf(text, add_special_tokens=False)["input_ids"]
    for bad in ([(0, 99)], [(3, 2)]):
        with pytest.raises(InvalidInputError, match="literal span"):
            fast.encode(text, allowed_special="all", literal=bad)


# -- every data path: identical tensors with and without alignfw's tokenizer --------------------


@pytest.mark.parametrize("family", [*FAMILIES, "gemma"])
def test_data_paths_give_identical_tensors_with_and_without_the_rust_tokenizer(family, tmp_path):
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    if family == "gemma":  # the SentencePiece-style tokenizer with Gemma's turn template
        path = save_model("mistral", tmp_path / family, template=GEMMA_TEMPLATE)
    else:
        path = save_model(family, tmp_path / family)
    model = build_hf_model(HFModelConfig(path=str(path)))
    fast, tok = model.fast_tokenizer, model.tokenizer
    assert fast is not None
    typed = " ".join(t for t in chat.special_tokens(tok) if t != tok.unk_token)
    plain = ["What color is the sky?", "  two  spaces\n\nand lines ", f"say {typed} now", "émoji 🤗 12345", ""]
    records = [
        Record(prompt=UnrenderedChat(""), response=UnrenderedChat(""), conversation=Conversation(
            prompt=[{"role": "user", "content": user}], response=[{"role": "assistant", "content": answer}]))
        for user, answer in [("hello, how many cats?", "two cats."), (f"hi {typed}!", f"  I see {typed}\n")]
    ]
    records = chat.render_records(records, tok)
    assert any(r.prompt.literal for r in records) and any(r.response.literal for r in records)
    prompts = plain[:4] + [r.prompt for r in records]
    responses = [" blue", " no", "x", " ok", *(r.response for r in records)]

    def run():
        gen = model.encode_pairs(prompts, responses)
        pairs = [gen.sequences, gen.attention_mask, gen.response_ids, gen.response_mask, torch.tensor(gen.prompt_len)]
        return model.encode_texts(plain + prompts + responses), model.encode_prompts(prompts), pairs

    with_rust = run()
    model.fast_tokenizer = None
    try:
        with_hf = run()
    finally:
        model.fast_tokenizer = fast
    assert with_rust[0] == with_hf[0]
    for a, b in zip([*with_rust[1], *with_rust[2]], [*with_hf[1], *with_hf[2]]):
        assert torch.equal(a, b)
