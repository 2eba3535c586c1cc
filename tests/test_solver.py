import math
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnvision import checkpoint
from cnnvision.data.augment import AugmentConfig
from cnnvision.errors import InputError
from cnnvision.nets import KeypointNet, KeypointNetConfig
from cnnvision.solver import Solver, SolverConfig, WarmupSchedule, WeightAverage


def make_solver(faces32, out, epochs=2, **kw):
    torch.manual_seed(0)
    train = faces32.subset(range(48))
    train.augment = AugmentConfig()
    val = faces32.subset(range(48, 64))
    net = KeypointNet(KeypointNetConfig(arch="kpnet", image_size=32, width=8))
    cfg = SolverConfig(epochs=epochs, batch_size=16, warmup_steps=2, log_every=2, **kw)
    return Solver(net, train, val, cfg, out, {"note": "test"})


def test_fit_writes_a_run_folder(faces32, tmp_path, capsys):
    solver = make_solver(faces32, tmp_path / "run")
    metrics = solver.fit()
    assert set(metrics) >= {"rmse", "count"} and math.isfinite(metrics["rmse"])
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.csv", "last.pt", "best.pt", "tb"} <= files
    assert any((tmp_path / "run" / "tb").iterdir())
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    out = capsys.readouterr().out
    assert "step 2: loss = " in out and "examples/sec)" in out
    best = checkpoint.load_net(tmp_path / "run" / "best.pt")
    assert best.cfg == solver.net.cfg


def test_resume_continues_exactly(faces32, tmp_path):
    straight = make_solver(faces32, tmp_path / "a", epochs=3)
    straight.fit()
    first = make_solver(faces32, tmp_path / "b", epochs=3, max_steps=3)  # "killed" after epoch 1
    first.fit()
    assert first.epoch == 1
    resumed = make_solver(faces32, tmp_path / "b", epochs=3)
    resumed.fit(resume=True)
    assert resumed.step == straight.step
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resume")


def test_weight_average_moves_towards_the_weights_by_one_minus_decay():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(net, 0.9)
    before = {k: v.clone() for k, v in average.net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(4, 2))  # moves the batch-norm statistics and count
    average.update(step=1000)  # past the warm-up: the decay itself
    for name, mine in average.net.state_dict().items():
        theirs = net.state_dict()[name]
        expected = theirs if name.endswith("num_batches_tracked") else 0.9 * before[name] + 0.1 * theirs
        torch.testing.assert_close(mine, expected, msg=name)
    average.update(step=0)  # the first steps follow the weights closely: decay 1/10
    torch.testing.assert_close(average.net[0].weight, 0.1 * (0.9 * before["0.weight"] + 0.1 * net[0].weight)
                               + 0.9 * net[0].weight)
    with pytest.raises(InputError, match="below 1"):
        SolverConfig(ema=1.0)


def test_ema_run_keeps_the_average_and_resumes_exactly(faces32, tmp_path):
    straight = make_solver(faces32, tmp_path / "a", epochs=3, ema=0.8)
    straight.fit()
    first = make_solver(faces32, tmp_path / "b", epochs=3, ema=0.8, max_steps=3)  # "killed" after epoch 1
    first.fit()
    best = checkpoint.load(tmp_path / "b" / "best.pt")
    last = checkpoint.load(tmp_path / "b" / "last.pt")
    assert best["step"] == last["step"] == 3  # the first epoch is always the best so far
    # last.pt holds both; best.pt the average, which is what was evaluated
    for name, w in best["model"].items():
        torch.testing.assert_close(w, last["average"][name], rtol=0, atol=0)
    assert any(not torch.equal(w, last["model"][n]) for n, w in best["model"].items())
    again = make_solver(faces32, None)
    again.net.load_state_dict(best["model"])
    assert again.evaluate()["rmse"] == pytest.approx(best["metrics"]["rmse"], rel=1e-5)
    resumed = make_solver(faces32, tmp_path / "b", epochs=3, ema=0.8)
    resumed.fit(resume=True)
    for (name, a), b in zip(straight.average.net.state_dict().items(), resumed.average.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"average {name} differs after resume")


def test_resume_needs_a_run(faces32, tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        make_solver(faces32, tmp_path / "empty").fit(resume=True)


def test_early_stopping(faces32, tmp_path, capsys):
    solver = make_solver(faces32, tmp_path / "run", epochs=50, patience=1, lr=1e-9)
    solver.fit()
    assert solver.epoch < 50
    assert "early stop" in capsys.readouterr().out


def test_max_steps(faces32, tmp_path):
    solver = make_solver(faces32, None, epochs=10, max_steps=4)
    solver.fit()
    assert solver.step == 4


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers_reduce_the_loss(faces32, optimizer):
    solver = make_solver(faces32, None, optimizer=optimizer, lr=0.02 if optimizer == "sgd" else 3e-3)
    x, y = solver.train_set.batch(torch.arange(16))
    before = solver.net.loss(solver.net(x), y).item()
    for _ in range(30):
        solver.train_step(x, y)
    assert solver.net.loss(solver.net(x), y).item() < before


def test_schedules():
    cos = WarmupSchedule("cosine", 10, 100)
    assert cos(0) == pytest.approx(0.1) and cos(9) == 1.0 and cos(100) == pytest.approx(0.0)
    step = WarmupSchedule("step", 0, 100)
    assert step(10) == 1.0 and step(60) == pytest.approx(0.1) and step(80) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        WarmupSchedule("linear", 0, 10)


def test_epoch_batches_are_a_shuffle_fixed_by_the_epoch(faces32):
    solver = make_solver(faces32, None)
    solver.train_set = faces32.subset(range(33))  # 2 batches of 16, then a lone example
    chunks, _ = solver.epoch_batches()
    assert [len(c) for c in chunks] == [16, 16]  # a batch of one is dropped: batch norm needs two
    seen = torch.cat(chunks).tolist()
    assert len(set(seen)) == 32 and set(seen) <= set(range(33))
    again, _ = solver.epoch_batches()
    assert all(torch.equal(a, b) for a, b in zip(chunks, again))
    solver.epoch += 1
    assert not torch.equal(solver.epoch_batches()[0][0], chunks[0])


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"net": {}, "model": {"w": torch.ones(1)}})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"net": {}, "model": {"w": torch.zeros(1)}})
    monkeypatch.undo()
    assert checkpoint.load(path)["model"]["w"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


@pytest.mark.parametrize("content", [b"", b"hello", b"PK\x03\x04junk"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a cnnvision checkpoint"):
        checkpoint.load(path)


def test_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(InputError, match="not a cnnvision checkpoint"):
        checkpoint.load_net(path)


def test_unknown_pretrained_name():
    with pytest.raises(InputError, match="unknown pretrained model 'nope'"):
        checkpoint.load_net(pretrained="nope")


MMAPPED = """
import ctypes, sys, torch
from cnnvision.solver import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
elif sys.argv[1] == "predict":  # inference turns it on as training does
    from cnnvision.data.mnist import ClassificationDataset
    from cnnvision.nets.classify import ClassifierConfig, ClassifierNet
    from cnnvision.solver import predict
    digits = ClassificationDataset(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    predict(ClassifierNet(ClassifierConfig(arch="softmax")), digits, precision="fp32")
elif sys.argv[1] == "cli":  # so does every command, even one that stops at its input
    from cnnvision.cli import main
    assert main(["evaluate", "--pretrained", "lenet5-mnist", "--data", "no-such-file.csv"]) == 2
class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
x = torch.ones(16 * 2 ** 20)  # 64 MB, as large as a training step's biggest activations
print(libc.mallinfo2().hblkhd)  # bytes in blocks of their own from mmap, which free() hands back
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
                    or tuple(map(int, platform.libc_ver()[1].split(".")[:2])) < (2, 33), reason="glibc 2.33+ only")
def test_training_and_inference_keep_freed_memory_for_the_next_step():
    def mmapped(mode):
        done = subprocess.run([sys.executable, "-c", MMAPPED, mode], capture_output=True, text=True, check=True)
        return int(done.stdout.split()[-1])
    # by default a 64 MB block is mapped on its own (and unmapped when freed: faulted in afresh
    # at the next step); kept, it comes from the heap, which keeps it
    assert mmapped("default") >= 64 * 2 ** 20
    assert mmapped("keep") < 64 * 2 ** 20
    assert mmapped("predict") < 64 * 2 ** 20
    assert mmapped("cli") < 64 * 2 ** 20


def test_bf16_is_not_chosen_where_onednn_is_limited_to_code_without_it(monkeypatch):
    from cnnvision.solver import autocast, cpu_has_bf16
    for isa in ("AVX2", "avx512_core", "AVX512_CORE_VNNI"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert not cpu_has_bf16()
        with autocast(torch.device("cpu"), "auto"):
            assert not torch.is_autocast_enabled("cpu")  # auto means fp32 there
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
