"""Two CPU processes under torchrun train one model: rank 0 alone logs and writes the run."""
import os
import subprocess
import sys

import torch

from cnnvision import checkpoint


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29731",
           "-m", "cnnvision", "train", "--synthetic-count", "48", "--net", "basic_cnn", "--epochs", "2",
           "--batch-size", "8", "--out", str(out), "--log-every", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 processes" in proc.stdout
    assert proc.stdout.count("epoch 2:") == 1  # one process logs
    assert proc.stdout.count("step 2: loss") == 1
    state = checkpoint.load(out / "last.pt")
    # 40 training faces, 2 processes x 8 per step: 2 steps an epoch
    assert state["step"] == 4 and state["epoch"] == 2
    net = checkpoint.load_net(out / "best.pt")
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
