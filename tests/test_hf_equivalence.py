"""llama_nb's Llama is Hugging Face's Llama: the same weights give the same logits.

transformers is a test dependency of the book, not a runtime one.
"""

import pytest
import torch
from helpers import randomise

from llama_nb.hf import (
    config_from_hf_dict,
    config_to_hf_dict,
    from_hf_state_dict,
    load_hf_pretrained,
    save_hf_pretrained,
    to_hf_state_dict,
)
from llama_nb.model import Llama, LlamaConfig
from llama_nb.rope import permute_hf_to_meta
from llama_nb.sampling import generate

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

CONFIGS = {
    "mha-tied": dict(vocab_size=128, dim=64, n_layers=2, n_heads=4),
    "mha-untied": dict(vocab_size=100, dim=32, n_layers=1, n_heads=2, tie_embeddings=False),
    "gqa-untied": dict(vocab_size=200, dim=64, n_layers=3, n_heads=8, n_kv_heads=2, tie_embeddings=False),
    "gqa-tied-theta": dict(vocab_size=150, dim=96, n_layers=2, n_heads=6, n_kv_heads=3, rope_theta=500000.0),
    "mqa-tied": dict(vocab_size=96, dim=48, n_layers=2, n_heads=6, n_kv_heads=1, norm_eps=1e-6),
    "mqa-untied-hidden": dict(vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=1, hidden_dim=100,
                              tie_embeddings=False),
    "larger": dict(vocab_size=512, dim=128, n_layers=4, n_heads=8, n_kv_heads=4, max_seq_len=64),
}


def our_model(name, seed=0) -> Llama:
    torch.manual_seed(seed)
    return randomise(Llama(LlamaConfig(**{"max_seq_len": 32, **CONFIGS[name]})), seed).eval()


def hf_model_for(config: LlamaConfig):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig.from_dict(config_to_hf_dict(config))).eval()


def ids_for(config, B=2, T=20, seed=0):
    return torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def max_diff(ours, hf, x) -> float:
    with torch.no_grad():
        return (ours(x)[0] - hf(x).logits).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_logits_as_transformers(name):
    ours = our_model(name)
    hf = hf_model_for(ours.config)
    hf.load_state_dict(to_hf_state_dict(ours))  # strict: every tensor has a counterpart
    assert hf.config.tie_word_embeddings == ours.config.tie_embeddings
    assert sum(p.numel() for p in hf.parameters()) == ours.num_parameters()
    x = ids_for(ours.config)
    assert max_diff(ours, hf, x) < 1e-5
    with torch.no_grad():  # the loss too (HF shifts the labels itself)
        loss_hf = hf(x, labels=x).loss
        _, loss = ours(x[:, :-1], x[:, 1:])
    assert abs(loss.item() - loss_hf.item()) < 1e-5


@pytest.mark.parametrize("name", ["mha-tied", "gqa-untied", "mqa-tied"])
def test_transformers_model_loads_into_llama_nb(name):
    ref = our_model(name)  # only for the config
    torch.manual_seed(1)
    hf = randomise(hf_model_for(ref.config), seed=1)
    config = config_from_hf_dict(hf.config.to_dict())
    ours = from_hf_state_dict(hf.state_dict(), config).eval()
    assert max_diff(ours, hf, ids_for(config)) < 1e-5


@pytest.mark.parametrize("name", ["mha-tied", "gqa-untied"])
def test_save_hf_pretrained_loads_with_auto_model(tmp_path, name):
    ours = our_model(name)
    save_hf_pretrained(ours, tmp_path / "model")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert hf.dtype == torch.float32
    assert max_diff(ours, hf, ids_for(ours.config)) < 1e-5
    # and HF's greedy generate, with its own cache, continues a prompt with the tokens ours does
    prompt = ids_for(ours.config, B=1, T=4)
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False,
                      pad_token_id=0)
    assert out.shape == (1, 24)
    assert out[0, 4:].tolist() == generate(ours, prompt[0], 20, greedy=True, eos_id=None)


@pytest.mark.parametrize("name", ["mha-tied", "gqa-untied"])
def test_hf_save_pretrained_loads_into_llama_nb(tmp_path, name):
    torch.manual_seed(2)
    hf = randomise(hf_model_for(our_model(name).config), seed=2)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_hf_pretrained(tmp_path / "hf").eval()
    assert max_diff(ours, hf, ids_for(ours.config)) < 1e-5


def test_kv_cache_matches_transformers_cache():
    ours = our_model("gqa-untied")
    hf = hf_model_for(ours.config)
    hf.load_state_dict(to_hf_state_dict(ours))
    x = ids_for(ours.config, B=1, T=12)
    with torch.no_grad():
        cache = ours.new_cache(1)
        steps = [ours(x[:, :5], cache=cache)[0]] + [ours(x[:, t : t + 1], cache=cache)[0] for t in range(5, 12)]
        full_hf = hf(x).logits
    assert (torch.cat(steps, dim=1) - full_hf).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["gqa-untied", "mha-tied"])
def test_kv_cache_holds_the_keys_and_values_of_transformers(name):
    "Layer by layer, our cache holds what transformers' cache holds: keys rotated to their absolute positions."
    ours = our_model(name)
    hf = hf_model_for(ours.config)
    hf.load_state_dict(to_hf_state_dict(ours))
    x = ids_for(ours.config, B=2, T=12)
    with torch.no_grad():
        cache = ours.new_cache(2)
        ours(x[:, :5], cache=cache)  # a prompt, then one token at a time
        for t in range(5, 12):
            ours(x[:, t : t + 1], cache=cache)
        out = hf(x, use_cache=True)
    hf_cache = out.cache if hasattr(out, "cache") else out.past_key_values  # renamed in transformers 5
    assert cache.pos == 12 and len(hf_cache.layers) == ours.config.n_layers
    for layer, hf_layer in enumerate(hf_cache.layers):
        assert hf_layer.keys.shape == (2, ours.config.n_kv_heads, 12, ours.config.head_dim)
        torch.testing.assert_close(cache.k[layer, :, :, :12], hf_layer.keys)
        torch.testing.assert_close(cache.v[layer, :, :, :12], hf_layer.values)


def test_comparison_detects_a_shared_norm():
    "The seed's bug (one norm for attention and feed-forward) is caught when the norm gains differ."
    ours = our_model("mha-tied")
    hf = hf_model_for(ours.config)
    hf.load_state_dict(to_hf_state_dict(ours))
    for layer in ours.layers:
        layer.ffn_norm = layer.attention_norm
    assert max_diff(ours, hf, ids_for(ours.config)) > 1e-2


def test_comparison_detects_meta_rope_layout():
    "q/k weights left in Meta's interleaved layout give different logits: they must be permuted."
    ours = our_model("gqa-untied")
    hf = hf_model_for(ours.config)
    hf.load_state_dict(to_hf_state_dict(ours))
    with torch.no_grad():
        for layer in ours.layers:
            a = layer.attention
            a.wq.weight.copy_(permute_hf_to_meta(a.wq.weight, a.n_heads))
            a.wk.weight.copy_(permute_hf_to_meta(a.wk.weight, a.n_kv_heads))
    assert max_diff(ours, hf, ids_for(ours.config)) > 1e-2


def test_comparison_detects_swapped_gate_and_up():
    ours = our_model("mha-tied")
    hf = hf_model_for(ours.config)
    sd = to_hf_state_dict(ours)
    gate, up = "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"
    hf.load_state_dict({**sd, gate: sd[up], up: sd[gate]})
    assert max_diff(ours, hf, ids_for(ours.config)) > 1e-2
