"""llama_nb.gpu (Chapter 7): device and dtype resolution, FLOP/MFU accounting, autocast and loss scaling on the
CPU, per-rank batch shares. The GPU itself is mocked: these tests run anywhere."""

import json
import math
import warnings
from pathlib import Path

import ladder
import pytest
import torch
from helpers import QUIET, TINY_128, tiny_config
from ladder import climb_ladder

from llama_nb.config import PRESETS, TrainConfig, preset_configs, resolve_device
from llama_nb.gpu import (
    DistInfo,
    GPURuntime,
    all_reduce_mean,
    autocast_context,
    distributed,
    flops_per_token,
    make_grad_scaler,
    matmul_parameters,
    mfu,
    peak_bf16_flops,
    rank_slice,
    resolve_dtype,
    time_steps,
)
from llama_nb.loop import TrainResult
from llama_nb.model import Llama, LlamaConfig, count_parameters, parameter_breakdown
from llama_nb.optim import configure_optimizer, train_step


@pytest.fixture
def gpu(monkeypatch):
    "Pretend there are two CUDA GPUs with native bf16 (an A100, say)."
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


# --- devices --------------------------------------------------------------------------------------------------


def test_auto_is_cuda_when_present_else_cpu(monkeypatch, gpu):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")  # auto is the default


def test_missing_or_unknown_devices_are_clear_errors(monkeypatch, gpu):
    with pytest.raises(ValueError, match=r"'cuda:2' does not exist: this machine has 2 CUDA device"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="Unknown device 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available here: use --device cpu"):
        resolve_device("cuda")


def test_mps_only_on_request_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cpu")  # auto never picks MPS
    with pytest.warns(UserWarning, match="MPS .* experimental"):
        assert resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")


# --- dtypes ---------------------------------------------------------------------------------------------------


def test_bf16_needs_native_support_on_cuda(monkeypatch, gpu):
    cuda = torch.device("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on a GPU
        assert resolve_dtype("bfloat16", cuda) == torch.bfloat16
        assert resolve_dtype("float16", cuda) == torch.float16
        assert resolve_dtype("float32", cuda) == torch.float32
    asked = {}

    def t4(including_emulation=True):  # a T4 (compute capability 7.5) can only emulate bf16
        asked["including_emulation"] = including_emulation
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", t4)
    with pytest.raises(
        ValueError,
        match=r"bf16 requested on a GPU without bf16 support \(compute capability < "
        r"8.0\): use --dtype float16 or float32",
    ):
        resolve_dtype("bfloat16", cuda)
    assert asked == {"including_emulation": False}  # emulation does not count as support
    assert resolve_dtype("float16", cuda) == torch.float16


def test_half_precision_on_cpu_warns_and_unknown_dtypes_fail():
    cpu = torch.device("cpu")
    with pytest.warns(UserWarning, match="slower than float32"):
        assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16, got 'fp8'"):
        resolve_dtype("fp8", cpu)
    with pytest.raises(ValueError, match="TrainConfig: dtype must be one of"):
        TrainConfig(dtype="half")
    with pytest.raises(ValueError, match="TrainConfig: compile must be True or False"):
        TrainConfig(compile="yes")


def test_train_config_defaults_and_gpu_preset():
    tc = TrainConfig()
    assert (tc.device, tc.dtype, tc.compile) == ("auto", "float32", False)
    gpu = PRESETS["gpu"]["train"]
    assert gpu["dtype"] == "bfloat16" and gpu["compile"] is True and gpu["time_budget_s"] == 300.0


def test_grad_scaler_only_for_float16():
    assert isinstance(make_grad_scaler(torch.device("cpu"), torch.float16), torch.amp.GradScaler)
    assert make_grad_scaler(torch.device("cpu"), torch.bfloat16) is None
    assert make_grad_scaler(torch.device("cpu"), torch.float32) is None


# --- FLOPs and MFU --------------------------------------------------------------------------------------------


def test_flops_per_token_by_hand():
    c = LlamaConfig(vocab_size=100, dim=8, n_layers=2, n_heads=2, hidden_dim=16, max_seq_len=64)
    n = 2 * (4 * 8 * 8 + 3 * 8 * 16) + 100 * 8  # layers x (wq wk wv wo + w1 w3 w2) + tied output matrix
    assert matmul_parameters(c) == n == 2080
    assert flops_per_token(c, 32) == 6 * 2080 + 12 * 2 * 32 * 8 == 18624
    assert flops_per_token(c, 64) - flops_per_token(c, 32) == 12 * 2 * 32 * 8  # the attention term grows with T


@pytest.mark.parametrize("kwargs", [dict(), dict(tie_embeddings=False), dict(n_kv_heads=2, n_heads=4)])
def test_matmul_parameters_against_count_parameters(kwargs):
    c = LlamaConfig(**{**dict(vocab_size=300, dim=32, n_layers=3, n_heads=4), **kwargs})
    b = parameter_breakdown(c)
    lookup_only = 0 if c.tie_embeddings else c.vocab_size * c.dim  # an untied input embedding is a lookup
    assert matmul_parameters(c) == count_parameters(c) - b["norms"] - lookup_only
    assert count_parameters(c) == Llama(c).num_parameters()


def test_gpu_preset_flops_and_mfu():
    c = LlamaConfig(**PRESETS["gpu"]["model"], max_seq_len=256)
    assert c.hidden_dim == 1024
    n = 6 * (4 * 384 * 384 + 3 * 384 * 1024) + 2048 * 384
    assert flops_per_token(c, 256) == 6 * n + 12 * 6 * 256 * 384
    expected = flops_per_token(c, 256) * 1e6 / 989e12
    assert mfu(c, 256, 1e6, 989e12) == pytest.approx(expected)
    assert mfu(c, 256, 1e6, 989e12, n_gpus=4) == pytest.approx(expected / 4)


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100-PCIE-40GB", 312e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", None),
        ("Tesla T4", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_flops_table(name, peak):
    assert peak_bf16_flops(name) == peak


def test_time_steps_counts_warmup_and_timed_calls():
    calls = []
    seconds = time_steps(lambda: calls.append(1), n_steps=5, n_warmup=2)
    assert len(calls) == 7 and seconds >= 0


# --- autocast and loss scaling on the CPU ---------------------------------------------------------------------


def _losses(amp_dtype, steps=3, scaler=None, init=None):
    torch.manual_seed(0)
    model = Llama(TINY_128)
    if init is not None:
        model.load_state_dict(init)
    opt = configure_optimizer(model, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    batch = lambda: (torch.randint(128, (4, 16), generator=gen), torch.randint(128, (4, 16), generator=gen))
    losses = [train_step(model, opt, batch, 1e-2, amp_dtype=amp_dtype, scaler=scaler)[0] for _ in range(steps)]
    return losses, model


def test_bf16_autocast_on_cpu_trains_close_to_float32():
    ref, _ = _losses(torch.float32)
    bf16, model = _losses(torch.bfloat16)
    assert all(math.isfinite(v) for v in bf16)
    assert max(abs(a - b) for a, b in zip(ref, bf16)) < 0.05  # bf16 rounding, not a different computation
    assert bf16 != ref  # autocast did change the arithmetic
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    with autocast_context("cpu", torch.bfloat16):
        logits, _ = model(torch.zeros(1, 4, dtype=torch.long))
    assert logits.dtype == torch.float32  # the model returns float32 logits for the loss


def test_float16_with_grad_scaler_on_cpu():
    ref, _ = _losses(torch.float32)
    scaler = torch.amp.GradScaler("cpu")
    fp16, _ = _losses(torch.float16, scaler=scaler)
    assert max(abs(a - b) for a, b in zip(ref, fp16)) < 0.005  # float16 rounding (about 5e-4 here)
    assert scaler.get_scale() == 65536.0  # no overflow, so the scale never changed


def _sgd_step(amp_dtype, scaler=None, grad_clip=0.0):
    "One train_step with SGD at lr 1 (the update is minus the clipped gradient): its (loss, norm) and the weights."
    torch.manual_seed(0)
    model = Llama(TINY_128)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(0)
    batch = lambda: (torch.randint(128, (4, 16), generator=gen), torch.randint(128, (4, 16), generator=gen))
    out = train_step(
        model, opt, batch, 1.0, grad_accum_steps=2, grad_clip=grad_clip, amp_dtype=amp_dtype, scaler=scaler
    )
    return out, model.state_dict()


def test_grad_scaler_gradients_are_unscaled_before_the_norm_and_the_clipping():
    """The loss is multiplied by 65536 for the backward pass; the reported norm, the clipping and the update must
    see the true gradients (scaler.unscale_ before clip_grad_norm_). Adam would hide a wrong scale, SGD does not."""
    torch.manual_seed(0)
    start = Llama(TINY_128).state_dict()
    (_, norm32), _ = _sgd_step(torch.float32)
    scaler = torch.amp.GradScaler("cpu")
    (_, norm16), _ = _sgd_step(torch.float16, scaler)
    assert scaler.get_scale() == 65536.0  # the loss was scaled, and nothing overflowed
    assert norm16 == pytest.approx(norm32, rel=1e-4)  # float16 rounding only (about 3e-6 here)
    clip = 0.5 * norm32
    _, w32 = _sgd_step(torch.float32, grad_clip=clip)
    _, w16 = _sgd_step(torch.float16, torch.amp.GradScaler("cpu"), grad_clip=clip)

    def length(a, b):  # of the difference of two weight sets (the tied output matrix is the embedding: once)
        return math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in start if k != "output.weight"))

    assert length(w16, start) == pytest.approx(clip, rel=1e-4)  # the update was clipped to half the true norm
    assert length(w16, w32) < 1e-2 * clip  # and points where float32's does (float16 rounding: about 4e-4 here)


def test_grad_scaler_skips_a_step_that_overflows():
    torch.manual_seed(0)
    init = Llama(TINY_128).state_dict()
    scaler = torch.amp.GradScaler("cpu", init_scale=1e38)  # loss x 1e38 overflows: the gradients are inf
    _, model = _losses(torch.float16, steps=1, scaler=scaler, init=init)
    assert all(torch.equal(p, init[k]) for k, p in model.state_dict().items())  # the step was skipped
    assert scaler.get_scale() < 1e38  # and the scale backed off


# --- data parallelism helpers ---------------------------------------------------------------------------------


def test_rank_slices_partition_the_global_batch():
    rows = torch.arange(12)
    for n in (1, 2, 3, 4, 6, 12):
        parts = [rows[rank_slice(12, r, n)] for r in range(n)]
        assert torch.equal(torch.cat(parts), rows) and len({len(p) for p in parts}) == 1
    with pytest.raises(ValueError, match="batch_size 10 is not divisible by the 4 processes"):
        rank_slice(10, 0, 4)


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed(torch.device("cpu")) as info:
        assert info == DistInfo() and info.is_main
        assert not torch.distributed.is_initialized()
        assert all_reduce_mean([1.5, 2.0], info) == [1.5, 2.0]


def test_gpu_runtime_copies_batches_from_pinned_memory(monkeypatch):
    "On CUDA a batch goes through pinned memory with non_blocking=True, so the copy never makes the CPU wait."
    calls = []

    class Pinned:
        def to(self, device, non_blocking=False):
            calls.append((device, non_blocking))
            return "on the GPU"

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: Pinned())
    assert GPURuntime(torch.device("cuda")).to_device(torch.zeros(2, 3, dtype=torch.long)) == "on the GPU"
    assert calls == [(torch.device("cuda"), True)]
    assert GPURuntime(torch.device("cpu")).to_device(torch.zeros(2)).device.type == "cpu"


def test_the_loop_moves_every_batch_through_the_runtime(data):
    "Chapter 6's loop lets the runtime place each batch (GPURuntime pins it): one call per input and target."
    from llama_nb.loop import Runtime, train

    moved = []

    class Counting(Runtime):
        def to_device(self, batch):
            moved.append(tuple(batch.shape))
            return super().to_device(batch)

    tc = TrainConfig(
        batch_size=4,
        seq_len=16,
        max_steps=3,
        warmup_steps=1,
        eval_interval=0,
        sample_tokens=0,
        device="cpu",
        grad_accum_steps=2,
    )
    train(tiny_config(), tc, data, runtime=Counting(), **QUIET)
    assert moved == [(4, 16)] * (2 * 2 * 3)  # x and y, 2 micro-batches, 3 steps


def test_loop_speed_reads_the_clock_after_the_warmup():
    "The in-loop speed leaves out the compilation steps: only read-backs at or after skip_steps count."
    from llama_nb.gpu import loop_speed

    history = {"clock": [[50, 10.0], [100, 11.0], [150, 12.0], [200, 13.5]]}  # [step, seconds of training]
    assert loop_speed(history, skip_steps=100) == (2.5 / 100, 100)
    assert loop_speed(history, skip_steps=200) is None and loop_speed({}, skip_steps=0) is None


# climb_ladder: the greedy rule and the time budget, with train_fast replaced by a table of losses (no training)
class _FakeTraining:
    """Stands in for llama_nb.gpu.train_fast: the best loss of a run is looked up from its (lr, dim, dropout), and
    each run advances a fake clock by `seconds`. Records the configurations it was asked to train."""

    def __init__(self, monkeypatch, losses: dict[tuple, float], seconds: float = 10.0):
        self.losses, self.seconds, self.now, self.calls = losses, seconds, 0.0, []
        monkeypatch.setattr(ladder, "train_fast", self)
        monkeypatch.setattr(ladder.time, "perf_counter", lambda: self.now)

    def __call__(self, config, tc, data, out_dir=None, **kwargs):
        self.calls.append((tc.lr, config.dim, config.dropout))
        self.now += self.seconds
        loss = self.losses[self.calls[-1]]
        checkpoint = None
        if out_dir is not None:  # a run directory with its best checkpoint, as train would leave it
            checkpoint = Path(out_dir) / "step_000010"
            checkpoint.mkdir(parents=True)
        return TrainResult(
            model=None,
            history={"val_nats_per_char": [loss]},
            final={"nats_per_char": loss + 0.1},
            steps=20,
            train_seconds=1.0,
            best={"step": 10, "nats_per_char": loss, "checkpoint": checkpoint},
        )


def test_ladder_keeps_a_change_only_when_it_beats_the_best_by_min_gain(monkeypatch):
    losses = {
        (3e-3, 32, 0.0): 1.55,  # the tiny preset: lr 3e-3, dim 32, dropout 0
        (1e-2, 32, 0.0): 1.50,  # a higher lr helps: kept
        (1e-2, 48, 0.0): 1.492,  # wider: 0.008 better, below the 0.01 margin: dropped
        (1e-2, 32, 0.1): 1.40,
    }  # dropout, on the recipe without the dropped width: kept
    fake = _FakeTraining(monkeypatch, losses)
    rungs = {"lr": dict(lr=1e-2), "wider": dict(dim=48), "dropout": dict(dropout=0.1)}
    messages = []
    rows, recipe = climb_ladder("tiny", rungs, lambda vocab: None, base=dict(max_steps=20), log=messages.append)
    assert fake.calls == [(3e-3, 32, 0.0), (1e-2, 32, 0.0), (1e-2, 48, 0.0), (1e-2, 32, 0.1)]
    assert recipe == dict(max_steps=20, lr=1e-2, dropout=0.1)
    assert [(r["rung"], r["kept"]) for r in rows] == [
        ("baseline", True),
        ("lr", True),
        ("wider", False),
        ("dropout", True),
    ]
    assert [r["best"] for r in rows] == [1.55, 1.50, 1.492, 1.40] and rows[1]["wall_seconds"] == 10.0
    assert "dropped" in messages[2] and "kept" in messages[3]


def test_ladder_reuses_the_baseline_and_skips_the_rungs_its_budget_cannot_fit(monkeypatch):
    losses = {(3e-3, 32, 0.0): 1.55, (1e-2, 32, 0.0): 1.50, (1e-2, 48, 0.0): 1.45, (1e-2, 48, 0.1): 1.40}
    fake = _FakeTraining(monkeypatch, losses, seconds=10.0)
    baseline = fake(*preset_configs("tiny"), data=None)  # made before the ladder: it costs the ladder nothing
    fake.calls.clear()
    messages = []
    rungs = {"lr": dict(lr=1e-2), "wider": dict(dim=48), "dropout": dict(dropout=0.1), "never": dict(lr=1.0)}
    rows, recipe = climb_ladder(
        "tiny", rungs, lambda vocab: None, baseline=baseline, budget_s=25.0, log=messages.append
    )
    # 0 s used: "lr" runs; 10 s used + 10 s for the slowest rung fits in 25 s: "wider" runs; 20 + 10 does not
    assert fake.calls == [(1e-2, 32, 0.0), (1e-2, 48, 0.0)]
    assert [r["rung"] for r in rows] == ["baseline", "lr", "wider"] and recipe == dict(lr=1e-2, dim=48)
    assert [m.split()[0] for m in messages if "not run" in m] == ["dropout", "never"]
    with pytest.raises(ValueError, match="budget_s"):
        climb_ladder("tiny", rungs, lambda vocab: None, baseline=baseline, budget_s=0)


def test_ladder_writes_its_rows_as_json_after_every_rung_and_keeps_only_the_best_rungs_folder(monkeypatch, tmp_path):
    losses = {(3e-3, 32, 0.0): 1.55, (1e-2, 32, 0.0): 1.50, (1e-2, 48, 0.0): 1.52, (1e-2, 32, 0.1): 1.45}
    fake = _FakeTraining(monkeypatch, losses)
    json_path, seen = tmp_path / "ladder.json", []
    real_call = fake.__call__

    def call_and_read_the_json(*args, **kwargs):  # what a reader of the file sees while each rung trains
        seen.append(json.loads(json_path.read_text())["rows"] if json_path.exists() else None)
        return real_call(*args, **kwargs)

    monkeypatch.setattr(ladder, "train_fast", call_and_read_the_json)
    rungs = {"lr": dict(lr=1e-2), "wider": dict(dim=48), "dropout": dict(dropout=0.1), "never": dict(lr=1.0)}
    rows, recipe = climb_ladder(
        "tiny",
        rungs,
        lambda vocab: None,
        out_dir=tmp_path / "runs",
        json_path=json_path,
        about={"device": "test"},
        budget_s=45.0,
        log=lambda message: None,
    )
    assert [None if s is None else [r["rung"] for r in s] for s in seen] == [
        None,
        ["baseline"],
        ["baseline", "lr"],
        ["baseline", "lr", "wider"],
    ]  # rewritten after every rung
    record = json.loads(json_path.read_text())
    assert record["complete"] is True and record["device"] == "test" and record["not_run"] == ["never"]
    assert record["recipe"] == recipe == dict(lr=1e-2, dropout=0.1) and record["min_gain"] == 0.01
    assert [r["history"]["val_nats_per_char"] for r in record["rows"]] == [[1.55], [1.50], [1.52], [1.45]]
    # only the best rung's folder is left, and only its row names a checkpoint
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["rung_03"]
    assert [r["checkpoint"] is not None for r in rows] == [False, False, False, True]
    assert Path(rows[3]["checkpoint"]).is_dir() and not list(tmp_path.glob("*.part"))


def test_ladder_compiles_afresh_only_when_the_shapes_change(monkeypatch):
    losses = {(3e-3, 32, 0.0): 1.55, (1e-2, 32, 0.0): 1.50, (1e-2, 48, 0.0): 1.52, (1e-2, 32, 0.1): 1.45}
    _FakeTraining(monkeypatch, losses)
    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(True))
    rungs = {"lr": dict(lr=1e-2), "wider": dict(dim=48), "dropout": dict(dropout=0.1)}
    climb_ladder("tiny", rungs, lambda vocab: None, base=dict(compile=True), log=lambda message: None)
    # lr: same shapes, no reset; wider: new shapes; dropout: back to dim 32 (and a new dropout), another reset
    assert len(resets) == 2
    climb_ladder("tiny", rungs, lambda vocab: None, log=lambda message: None)  # not compiled: nothing to reset
    assert len(resets) == 2
