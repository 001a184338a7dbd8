"""CausalLM.encode_pairs: the layout score() relies on, and log-probs equal to a plain forward."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny():
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    model = build_hf_model(HFModelConfig())
    model.lm.eval()
    return model


def test_encode_pairs_layout(tiny):
    tok = tiny.tokenizer
    prompts, responses = ["translate: cat =", "translate: big red dog ="], [" nyan vauv mago", " el"]
    gen = tiny.encode_pairs(prompts, responses)
    P = gen.prompt_len
    assert P == max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        r_ids = tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        # prompt left-padded, response right-padded, response_mask exactly over the response + EOS
        assert gen.sequences[i, P - len(p_ids) : P].tolist() == p_ids
        assert gen.attention_mask[i, : P - len(p_ids)].sum() == 0
        assert gen.response_ids[i, : len(r_ids)].tolist() == r_ids
        assert gen.response_mask[i].tolist() == [1] * len(r_ids) + [0] * (gen.response_mask.shape[1] - len(r_ids))
        assert gen.attention_mask[i, P:].tolist() == gen.response_mask[i].tolist()
    assert gen.responses == responses


def test_score_of_encoded_pairs_matches_an_unpadded_forward(tiny):
    prompts, responses = ["translate: cat =", "translate: big red dog sees ="], [" nyan", " mago roka vauv miru"]
    gen = tiny.encode_pairs(prompts, responses)
    with torch.no_grad():
        lp = tiny.score(gen)["logprobs"]  # (b, R)
    tok = tiny.tokenizer
    for i, (p, r) in enumerate(zip(prompts, responses)):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        r_ids = tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([p_ids + r_ids])
        with torch.no_grad():
            logits = tiny.lm(input_ids=ids).logits[0].float()  # (T, V)
        want = torch.log_softmax(logits[len(p_ids) - 1 : -1], -1).gather(1, torch.tensor(r_ids)[:, None])[:, 0]
        torch.testing.assert_close(lp[i, : len(r_ids)], want, rtol=1e-4, atol=1e-5)  # padding changes nothing
        assert torch.all(lp[i, len(r_ids) :] == 0)


def test_encode_pairs_rejects_mismatched_lengths(tiny):
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        tiny.encode_pairs(["a", "b"], ["c"])
