"""Baby Llama from Scratch: the package exported from the book's notebooks, one module per section.

The names a user needs most are importable from here (`from llama_nb import Llama, LlamaConfig, train`); each is
imported from its module on first use, so `import llama_nb` stays light. Everything else lives in its section's
module, e.g. `llama_nb.rope.apply_rotary` (Chapter 3). This file is kept by hand; the modules are generated."""

import importlib

_PUBLIC = {  # name -> the module (the book's section) that defines it
    "LlamaNBError": "core",  # 0.1: the one error type to catch
    "load_tinyshakespeare": "data",  # 0.2
    "train_val_split": "data",
    "train_tokenizer": "tokenizer",  # 1
    "save_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "LlamaConfig": "model",  # 5.3
    "Llama": "model",
    "load_hf_pretrained": "hf",  # 5.4
    "save_hf_pretrained": "hf",
    "prepare_data": "batches",  # 6.1
    "generate": "sampling",  # 6.3
    "generate_text": "sampling",
    "save_checkpoint": "checkpoint",  # 6.4
    "load_model_from_checkpoint": "checkpoint",
    "TrainConfig": "config",  # 6.5
    "preset_configs": "config",
    "train": "loop",  # 6.6
    "load_gguf": "gguf_model",  # 8.2
    "load_pretrained_gguf": "chat",  # 8.3 (the reply itself: llama_nb.chat.chat)
    "write_gguf": "gguf_export",  # 9.2
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module 'llama_nb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
