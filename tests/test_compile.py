"""torch.compile of the tiny model on the CPU gives the losses of eager mode (Chapter 7's --compile).

Slow: TorchInductor generates and compiles C++ for the forward and backward graphs. On 2 CPU cores that takes
about 45 s with an empty compile cache (/tmp/torchinductor_$USER) and a few seconds with a warm one."""

import shutil

import pytest
import torch
from helpers import TINY_128

from llama_nb.model import Llama
from llama_nb.optim import configure_optimizer, train_step


def _losses(compile: bool, steps: int = 3) -> list[float]:
    torch.manual_seed(0)
    model = Llama(TINY_128)
    opt = configure_optimizer(model, lr=1e-2)
    step_model = torch.compile(model) if compile else model
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(128, (4, 16), generator=gen), torch.randint(128, (4, 16), generator=gen)
    return [train_step(step_model, opt, lambda: (x, y), 1e-2)[0] for _ in range(steps)]  # one batch, learnt


@pytest.mark.slow  # TorchInductor compiles C++
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from inside torch._dynamo
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler"
)
def test_compiled_training_steps_match_eager():
    torch._dynamo.reset()
    eager, compiled = _losses(False), _losses(True)
    assert compiled == pytest.approx(eager, rel=1e-5)  # same maths; fused kernels round slightly differently
    assert eager[-1] < eager[0]  # and the steps do train
