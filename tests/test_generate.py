"""Sampling filters and generation (greedy, temperature, top-k, top-p, KV cache) of llama_nb.train_cli."""

import math

import pytest
import torch

from llama_nb.model import Llama, LlamaConfig
from llama_nb.sampling import generate, generate_text, top_k_filter, top_p_filter
from llama_nb.tokenizer import EOS_ID, train_tokenizer

NEG_INF = float("-inf")


def kept(logits: torch.Tensor) -> list[int]:
    return [i for i, v in enumerate(logits.tolist()) if v != NEG_INF]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Llama(LlamaConfig(vocab_size=300, dim=32, n_layers=2, n_heads=2, max_seq_len=24))
    with torch.no_grad():  # sharpen the random model so that greedy and sampling differ clearly
        m.tok_embeddings.weight.mul_(40)
    return m


# ------------------------------------------------------------------------------------------ filters by hand
def test_top_k_filter_on_hand_made_logits():
    logits = torch.tensor([1.0, 3.0, 2.0, 3.0, 0.0])
    assert kept(top_k_filter(logits, 1)) == [1, 3]  # a tie with the k-th is kept
    assert kept(top_k_filter(logits, 2)) == [1, 3]
    assert kept(top_k_filter(logits, 3)) == [1, 2, 3]
    assert top_k_filter(logits, 0) is logits and top_k_filter(logits, 5) is logits  # off
    out = top_k_filter(logits, 3)
    assert out[1] == 3.0 and out[2] == 2.0  # kept logits are unchanged
    rows = top_k_filter(torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]), 1)
    assert kept(rows[0]) == [2] and kept(rows[1]) == [0]  # per row


def test_top_p_filter_on_hand_made_logits():
    logits = torch.tensor([0.15, 0.05, 0.5, 0.3]).log()  # token 2: 0.5, 3: 0.3, 0: 0.15, 1: 0.05
    assert kept(top_p_filter(logits, 0.4)) == [2]
    assert kept(top_p_filter(logits, 0.6)) == [2, 3]  # 0.5 < 0.6: the token that crosses p is kept
    assert kept(top_p_filter(logits, 0.85)) == [0, 2, 3]
    assert kept(top_p_filter(logits, 0.97)) == [0, 1, 2, 3]
    assert kept(top_p_filter(logits, 1e-6)) == [2]  # never empty
    assert top_p_filter(logits, 1.0) is logits
    out = top_p_filter(logits, 0.6)
    torch.testing.assert_close(out[[2, 3]], logits[[2, 3]])
    rows = top_p_filter(torch.stack([logits, logits.flip(0)]), 0.6)
    assert kept(rows[0]) == [2, 3] and kept(rows[1]) == [0, 1]


def _buggy_top_p(logits, p):  # a classic mistake: keep tokens while the *inclusive* cumulative mass is <= p
    sorted_logits, order = torch.sort(logits, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    return logits.scatter(-1, order, sorted_logits.masked_fill(cum > p, NEG_INF))


def _buggy_top_k(logits, k):  # another: ignore ties by keeping exactly k indices
    out = torch.full_like(logits, NEG_INF)
    idx = torch.topk(logits, k).indices
    return out.scatter(-1, idx, logits[idx])


def test_the_hand_made_cases_catch_buggy_filters():
    assert kept(_buggy_top_p(torch.tensor([0.15, 0.05, 0.5, 0.3]).log(), 0.6)) != [2, 3]
    assert kept(_buggy_top_k(torch.tensor([1.0, 3.0, 2.0, 3.0, 0.0]), 1)) != [1, 3]


@pytest.mark.parametrize("seed", range(5))
def test_filters_agree_with_transformers(seed):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(seed)
    logits = torch.randn(4, 50) * 3
    for k in (1, 5, 20):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(top_k=k)(None, logits.clone()))
    for p in (0.1, 0.5, 0.9, 0.99):
        ours, theirs = top_p_filter(logits, p), TopPLogitsWarper(top_p=p)(None, logits.clone())
        assert torch.equal(ours == NEG_INF, theirs == NEG_INF)
        torch.testing.assert_close(ours[ours != NEG_INF], logits[ours != NEG_INF])


@pytest.mark.parametrize("k", [-1, 1.5, True, "3"])
def test_top_k_filter_rejects_bad_k(k):
    with pytest.raises(ValueError, match="top_k must be an int >= 0"):
        top_k_filter(torch.zeros(5), k)


@pytest.mark.parametrize("p", [0, 0.0, -0.1, 1.5, float("nan"), True])
def test_top_p_filter_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        top_p_filter(torch.zeros(5), p)


# --------------------------------------------------------------------------------------------- generation
def _greedy_reference(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        logits, _ = model(torch.tensor([ids]))  # no cache: the whole sequence each time
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_greedy_matches_a_full_recompute_and_the_cache_changes_nothing(model):
    prompt = [5, 17, 42]
    expected = _greedy_reference(model, prompt, 12)
    assert generate(model, prompt, 12, greedy=True, eos_id=None) == expected
    assert generate(model, prompt, 12, greedy=True, eos_id=None, use_cache=False) == expected
    assert generate(model, torch.tensor(prompt), 12, greedy=True, eos_id=None) == expected  # a tensor prompt


def test_sampling_is_reproducible_with_a_seed_and_leaves_the_global_rng_alone(model):
    prompt = [5, 17, 42]
    state = torch.get_rng_state()
    a = generate(model, prompt, 15, temperature=1.5, seed=1, eos_id=None)
    b = generate(model, prompt, 15, temperature=1.5, seed=1, eos_id=None)
    c = generate(model, prompt, 15, temperature=1.5, seed=2, eos_id=None)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == b and a != c and len(a) == 15
    torch.manual_seed(3)
    d = generate(model, prompt, 15, temperature=1.5, eos_id=None)  # seed=None: the global RNG
    torch.manual_seed(3)
    assert generate(model, prompt, 15, temperature=1.5, eos_id=None) == d


class FixedLogits(torch.nn.Module):
    "A stand-in model whose next-token logits are always `logits` (V,), whatever the context."

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.config = LlamaConfig(vocab_size=len(logits), dim=8, n_layers=1, n_heads=2, max_seq_len=16)
        self.logits = torch.nn.Parameter(logits.clone(), requires_grad=False)

    def forward(self, idx, targets=None, cache=None):
        return self.logits.expand(*idx.shape, -1), None


def sampled_distribution(monkeypatch, logits, **kwargs) -> torch.Tensor:
    "The exact probabilities `generate` hands to torch.multinomial for its first token (float64)."
    seen = []

    def record(probs, num_samples, generator=None):
        seen.append(probs.detach().double().clone())
        return torch.zeros(num_samples, dtype=torch.long)

    monkeypatch.setattr(torch, "multinomial", record)
    generate(FixedLogits(logits), [1], 1, seed=0, eos_id=None, use_cache=False, **kwargs)
    assert len(seen) == 1
    return seen[0]


# The model's distribution p, in a shuffled token order: token 2: 0.5, 3: 0.3, 0: 0.15, 1: 0.05
P = torch.tensor([0.15, 0.05, 0.5, 0.3], dtype=torch.float64)


@pytest.mark.parametrize(
    "temperature, top_p, top_k, kept_tokens",
    [
        # p^(1/2) normalised: 0.379 (token 2), 0.294 (3), 0.208 (0), 0.120 (1). Above token 0 lie 0.673 < 0.7: kept.
        # Filtering p itself first would keep only tokens 2 and 3 (0.5 + 0.3 already reach 0.7).
        (2.0, 0.7, 0, [0, 2, 3]),
        # top-k 3 drops token 1 first; over the other three, 0.430, 0.334, 0.236 at T = 2: 0.764 < 0.8 lies above token
        # 0, kept (at T = 1 it would be 0.526, 0.316, 0.158: 0.842 >= 0.8, dropped)
        (2.0, 0.8, 3, [0, 2, 3]),
        # p^2 normalised: 0.685 (token 2), 0.247 (3), ...: 0.685 >= 0.6, so only token 2 (p itself would keep 2 and 3)
        (0.5, 0.6, 0, [2]),
        # top-k alone commutes with the temperature; its 2 tokens renormalised at the temperature
        (0.5, 1.0, 2, [2, 3]),
        (3.0, 1.0, 0, [0, 1, 2, 3]),
    ],
)
def test_temperature_is_applied_before_the_filters(monkeypatch, temperature, top_p, top_k, kept_tokens):
    """Chapter 6: sample from softmax(filter(logits / T)). The exact probabilities, against p^(1/T) renormalised
    over the tokens that top-k and top-p keep of the tempered distribution (worked out by hand above)."""
    expected = torch.zeros(4, dtype=torch.float64)
    expected[kept_tokens] = P[kept_tokens] ** (1 / temperature)
    expected /= expected.sum()
    probs = sampled_distribution(monkeypatch, P.log().float(), temperature=temperature, top_p=top_p, top_k=top_k)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-7)


def test_top_k_1_and_tiny_top_p_sample_the_greedy_token(model):
    prompt = [1, 2, 3]
    greedy = generate(model, prompt, 10, greedy=True, eos_id=None)
    assert generate(model, prompt, 10, temperature=2.0, top_k=1, seed=0, eos_id=None) == greedy
    assert generate(model, prompt, 10, temperature=2.0, top_p=1e-6, seed=0, eos_id=None) == greedy
    hot = generate(model, prompt, 10, temperature=5.0, seed=0, eos_id=None)
    assert hot != greedy  # plain sampling at a high temperature does differ


def test_generation_stops_at_eos_and_at_the_context(model):
    prompt = [5, 17, 42]
    first = generate(model, prompt, 1, greedy=True)[0]
    assert generate(model, prompt, 10, greedy=True, eos_id=first) == [first]  # the EOS token is returned
    long = generate(model, prompt, 1000, greedy=True, eos_id=None)
    assert len(long) == model.config.max_seq_len - len(prompt)  # stops when prompt + new fill the context
    assert generate(model, list(range(24)), 5, greedy=True) == []  # the prompt fills it already
    assert generate(model, prompt, 0) == []
    assert EOS_ID == 3


def test_generation_restores_the_mode(model):
    model.train()
    generate(model, [1, 2], 3, greedy=True)
    assert model.training
    model.eval()
    generate(model, [1, 2], 3, greedy=True)
    assert not model.training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
        ({"temperature": math.inf}, "temperature must be a finite number > 0"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_k": -1}, "top_k"),
    ],
)
def test_generate_rejects_bad_sampling_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(model, [1, 2], 3, **kwargs)


def test_generate_rejects_bad_prompts_and_lengths(model):
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(model, [], 3)
    with pytest.raises(ValueError, match="25 tokens but the model's context \\(max_seq_len\\) is 24"):
        generate(model, [1] * 25, 3)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
        generate(model, [1], -1)
    with pytest.raises(ValueError, match=r"must be in \[0, 300\)"):
        generate(model, [1, 300], 3)
    assert generate(model, [1], 2, greedy=True, temperature=0.0, eos_id=None)  # temperature is unused by greedy


def test_generate_text_round_trip(model):
    tok = train_tokenizer("To be, or not to be: that is the question. " * 20, vocab_size=300)
    out = generate_text(model, tok, "To be", 10, greedy=True)
    assert out.startswith("To be") and len(out) > len("To be")
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text(model, tok, "", 5)


def test_top_p_at_an_exact_boundary_keeps_the_smallest_set():
    "Issue 24: four equal logits have probabilities of exactly 1/4. p = 0.5 is reached by two tokens: keep two."
    for p, n in ((0.25, 1), (0.5, 2), (0.75, 3), (0.7500001, 4)):
        assert len(kept(top_p_filter(torch.zeros(4), p))) == n, p
