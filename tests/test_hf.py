"""llama_nb.hf (Chapter 5.4): Hugging Face's format, and llama_nb's Llama is Hugging Face's Llama.

Saving and loading a directory (config.json, model.safetensors), the state-dict and config mappings with their
errors; then transformers itself: the same weights give the same logits, caches and generations. transformers is
a test dependency of the book, not a runtime one.
"""

import dataclasses
import json

import pytest
import torch
import transformers
from helpers import SMALL, randomise, small_model

from llama_nb.hf import (
    config_from_hf_dict,
    config_to_hf_dict,
    from_hf_state_dict,
    load_hf_pretrained,
    save_hf_pretrained,
    to_hf_state_dict,
    transformers_twin,
)
from llama_nb.model import Llama, LlamaConfig
from llama_nb.rope import permute_hf_to_meta
from llama_nb.sampling import generate

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

CONFIGS = {
    "mha-tied": dict(vocab_size=128, dim=64, n_layers=2, n_heads=4),
    "mha-untied": dict(vocab_size=100, dim=32, n_layers=1, n_heads=2, tie_embeddings=False),
    "gqa-untied": dict(vocab_size=200, dim=64, n_layers=3, n_heads=8, n_kv_heads=2, tie_embeddings=False),
    "gqa-tied-theta": dict(vocab_size=150, dim=96, n_layers=2, n_heads=6, n_kv_heads=3, rope_theta=500000.0),
    "mqa-tied": dict(vocab_size=96, dim=48, n_layers=2, n_heads=6, n_kv_heads=1, norm_eps=1e-6),
    "mqa-untied-hidden": dict(
        vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=1, hidden_dim=100, tie_embeddings=False
    ),
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


# --- save / load, and the mappings ---------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [dict(), dict(n_kv_heads=2, tie_embeddings=False, rope_theta=5e5)])
def test_hf_directory_round_trip(tmp_path, overrides):
    model = randomise(small_model(**overrides))
    out = save_hf_pretrained(model, tmp_path / "m", eos_token_id=3)
    assert out == tmp_path / "m"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temporary directory removed
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["architectures"] == ["LlamaForCausalLM"] and hf_cfg["eos_token_id"] == 3
    back = load_hf_pretrained(out).eval()
    assert back.config == model.config
    x = ids_for(model.config, B=2, T=12)
    with torch.no_grad():
        assert torch.equal(back(x)[0], model(x)[0])
    # saving again over the same directory replaces the files and leaves other files alone
    (out / "tokenizer.json").write_text("{}")
    save_hf_pretrained(randomise(small_model(**overrides), seed=1), out)
    assert (out / "tokenizer.json").exists()
    assert not torch.equal(load_hf_pretrained(out).tok_embeddings.weight, model.tok_embeddings.weight)


def test_state_dict_mapping_round_trip():
    model = randomise(small_model(n_kv_heads=1, tie_embeddings=False))
    sd = to_hf_state_dict(model)
    assert "model.layers.1.self_attn.k_proj.weight" in sd and "lm_head.weight" in sd
    assert sd["model.layers.0.post_attention_layernorm.weight"] is not None
    back = from_hf_state_dict(sd, model.config)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_from_hf_state_dict_errors():
    model = small_model()
    sd = to_hf_state_dict(model)
    with pytest.raises(ValueError, match="missing .*q_proj"):
        from_hf_state_dict({k: v for k, v in sd.items() if "layers.1.self_attn.q_proj" not in k}, model.config)
    with pytest.raises(ValueError, match="unexpected .*bias"):
        from_hf_state_dict({**sd, "model.layers.0.self_attn.q_proj.bias": torch.zeros(32)}, model.config)
    with pytest.raises(ValueError, match="shape"):
        from_hf_state_dict(sd, LlamaConfig(**{**SMALL, "vocab_size": 98}))
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        from_hf_state_dict({**sd, "lm_head.weight": torch.zeros(97, 32)}, model.config)
    # old checkpoints also store the RoPE frequencies: ignored
    from_hf_state_dict({**sd, "model.layers.0.self_attn.rotary_emb.inv_freq": torch.zeros(4)}, model.config)


def test_config_mapping_round_trip_and_unsupported_options():
    cfg = LlamaConfig(**{**SMALL, "n_kv_heads": 2, "rope_theta": 5e5, "norm_eps": 1e-6, "tie_embeddings": False})
    d = config_to_hf_dict(cfg)
    assert (d["hidden_size"], d["intermediate_size"], d["num_key_value_heads"]) == (32, cfg.hidden_dim, 2)
    assert d["rope_parameters"]["rope_theta"] == 5e5 and d["tie_word_embeddings"] is False
    back = config_from_hf_dict(json.loads(json.dumps(d)))
    assert back == dataclasses.replace(cfg, multiple_of=back.multiple_of)
    # transformers 4.x style: rope_theta at top level, rope_scaling null
    old = {k: v for k, v in d.items() if k != "rope_parameters"} | {"rope_scaling": None}
    assert config_from_hf_dict(old).rope_theta == 5e5
    # Hugging Face defaults for missing keys: no tying, eps 1e-6, MHA
    minimal = {
        k: d[k] for k in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"]
    }
    m = config_from_hf_dict(minimal)
    assert (m.tie_embeddings, m.norm_eps, m.n_kv_heads, m.max_seq_len) == (False, 1e-6, 4, 2048)
    for change, match in [
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}}, "rope_parameters"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"head_dim": 16}, "head_dim"),
        ({"architectures": ["MistralForCausalLM"]}, "architecture"),
        ({"model_type": "mistral"}, "model_type"),
    ]:
        with pytest.raises(ValueError, match=match):
            config_from_hf_dict({**d, **change})
    with pytest.raises(ValueError, match="missing"):
        config_from_hf_dict({"hidden_size": 32})


def test_load_hf_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_hf_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf_dict(LlamaConfig(**SMALL))))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no model.safetensors .*pickles"):
        load_hf_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text()) | {"rope_scaling": {"rope_type": "dynamic"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rope_scaling"):
        load_hf_pretrained(tmp_path)


def test_save_refuses_a_file_as_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        save_hf_pretrained(small_model(), tmp_path / "f")


# --- the same model as transformers' --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_logits_as_transformers(name):
    ours = our_model(name)
    hf = transformers_twin(ours)  # load_state_dict is strict: every tensor has a counterpart
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
    out = hf.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False, pad_token_id=0
    )
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
    hf = transformers_twin(ours)
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
    hf = transformers_twin(ours)
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
    hf = transformers_twin(ours)
    for layer in ours.layers:
        layer.ffn_norm = layer.attention_norm
    assert max_diff(ours, hf, ids_for(ours.config)) > 1e-2


def test_comparison_detects_meta_rope_layout():
    "q/k weights left in Meta's interleaved layout give different logits: they must be permuted."
    ours = our_model("gqa-untied")
    hf = transformers_twin(ours)
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
