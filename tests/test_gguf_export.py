"""Chapter 9.2: a GGUF file written by `write_gguf` reads back (Chapter 8's reader and transformers) to the model it
describes; a missing RoPE permutation, a foreign tokenizer, rows that do not split into blocks and a failing write
are caught; the command line writes the same bytes."""

import copy

import gguf
import pytest
import torch
from helpers import randomise, two_layer_config
from tokenizers import pre_tokenizers

import llama_nb.gguf_export as export
from llama_nb.checkpoint import save_checkpoint
from llama_nb.core import sha256_of
from llama_nb.gguf_export import GGUFExportError, main, quantized_copy, write_gguf
from llama_nb.gguf_format import read_gguf
from llama_nb.gguf_model import load_gguf, tokenizer_from_gguf
from llama_nb.model import Llama


def _model(**overrides) -> Llama:
    torch.manual_seed(0)
    return randomise(Llama(two_layer_config(**overrides)), seed=1).eval()


def _ids(data, n: int = 64) -> torch.Tensor:
    return data.val_ids[: 2 * n].reshape(2, n)


def _max_diff(a: Llama, b, x: torch.Tensor) -> float:
    with torch.no_grad():
        theirs = b(x)  # ours return (logits, loss), transformers' an output with .logits
        return (a(x)[0] - (theirs.logits if hasattr(theirs, "logits") else theirs[0])).abs().max().item()


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_1"])
@pytest.mark.parametrize("shape", [{}, {"n_heads": 4, "n_kv_heads": 1, "tie_embeddings": False}])
def test_our_reader_gives_back_the_model_the_file_describes(tmp_path, data, qtype, shape):
    model = _model(max_seq_len=64, **shape)
    path = write_gguf(model, data.tokenizer, tmp_path / "m.gguf", qtype)
    loaded = load_gguf(path)
    assert loaded.config.n_kv_heads == model.config.n_kv_heads
    assert loaded.config.tie_embeddings == model.config.tie_embeddings
    assert _max_diff(loaded, quantized_copy(model, qtype), _ids(data)) < 1e-5
    if qtype != "F32":
        assert _max_diff(loaded, model, _ids(data)) > 1e-5  # the quantization is real: the reference matters


def test_without_the_rope_permutation_the_logits_differ(tmp_path, data, monkeypatch):
    model = _model(max_seq_len=64)
    monkeypatch.setattr(export, "permute_hf_to_meta", lambda w, n_heads: w)  # the bug: rows left in HF's order
    path = write_gguf(model, data.tokenizer, tmp_path / "m.gguf", "F32")
    assert _max_diff(load_gguf(path), model, _ids(data)) > 1e-2


def test_the_metadata_and_tokenizer_read_back(tmp_path, data):
    model = _model(max_seq_len=64)
    reader = read_gguf(write_gguf(model, data.tokenizer, tmp_path / "m.gguf", "Q4_1", embedding_type="Q8_0"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["token_embd.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q4_1"
    assert types["blk.1.ffn_norm.weight"] == "F32" and "output.weight" not in types
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert reader.fields["tokenizer.ggml.add_bos_token"].contents() is False
    text = "ROMEO:\nBut soft, what light through yonder window breaks? 1234 ,.;\n\n"
    ours = data.tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer_from_gguf(reader).encode(text, add_special_tokens=False).ids == ours


@pytest.mark.slow
def test_transformers_reads_the_file_to_the_same_logits_and_tokens(tmp_path, data, splits):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = _model(max_seq_len=64, n_heads=4, n_kv_heads=2)
    path = write_gguf(model, data.tokenizer, tmp_path / "m.gguf", "Q8_0")
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name).eval()
    assert _max_diff(load_gguf(path), hf, _ids(data)) < 1e-4
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    text = splits[1][:20_000]
    assert hf_tok(text, add_special_tokens=False).input_ids == data.tokenizer.encode(text, add_special_tokens=False).ids


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, data, monkeypatch):
    path = write_gguf(_model(), data.tokenizer, tmp_path / "m.gguf", "Q8_0")
    before = sha256_of(path)

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_gguf(_model(), data.tokenizer, path, "Q4_1")
    assert sha256_of(path) == before and [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_bad_input_is_refused_before_any_file_is_written(tmp_path, data, tokenizer):
    path = tmp_path / "m.gguf"
    cases = [
        (lambda: write_gguf(_model(), tokenizer, path), ["2,048 tokens", "vocab_size is 512"]),
        (
            lambda: write_gguf(_model(dim=48), data.tokenizer, path),
            ["token_embd.weight", "LlamaConfig.dim = 48", "F16 or F32"],
        ),
        (lambda: write_gguf(_model(), data.tokenizer, path, "Q3_X"), ["qtype 'Q3_X'", "Q8_0"]),
        (lambda: write_gguf(_model(), data.tokenizer, path, embedding_type="bf16"), ["embedding_type 'bf16'"]),
    ]
    foreign = copy.deepcopy(data.tokenizer)
    foreign.pre_tokenizer = pre_tokenizers.Whitespace()
    cases.append((lambda: write_gguf(_model(), foreign, path), ["not Chapter 1's byte-level BPE", "Whitespace"]))
    broken = _model()
    with torch.no_grad():
        broken.layers[1].attention.wv.weight[0, 0] = float("nan")
    cases.append((lambda: write_gguf(broken, data.tokenizer, path), ["blk.1.attn_v.weight", "NaN"]))
    for attempt, words in cases:
        with pytest.raises(GGUFExportError) as e:
            attempt()
        assert all(word in str(e.value) for word in words), str(e.value)
    assert list(tmp_path.iterdir()) == []
    assert load_gguf(write_gguf(_model(dim=48), data.tokenizer, path, "F16")).config.dim == 48  # F16 has no blocks


def test_the_command_line_writes_the_same_file(tmp_path, data, capsys):
    model = _model()
    save_checkpoint(tmp_path / "run", model, step=1, tokenizer=data.tokenizer)
    assert main([str(tmp_path / "run"), str(tmp_path / "cli.gguf"), "--type", "Q4_1"]) == 0
    assert "Q4_1" in capsys.readouterr().out
    assert sha256_of(tmp_path / "cli.gguf") == sha256_of(
        write_gguf(model, data.tokenizer, tmp_path / "api.gguf", "Q4_1")
    )
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "x.gguf")]) == 1
    assert "llama-nb-gguf: error:" in capsys.readouterr().err and not (tmp_path / "x.gguf").exists()
