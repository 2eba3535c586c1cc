"""Alternate ``cnnvision benchmark`` with the Keras peer (../shared/peers/keras_basiccnn.py) in
one run and print both figures and their ratios.

    python benchmarks/compare_keras.py [--rounds 3] [--keras-python /tmp/keras-peer/bin/python]

The peer needs its own environment (see the peer's docstring). Each round runs ours, then
Keras, each in a fresh process on the otherwise idle machine; the medians are compared.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "keras_basiccnn.py"


AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--net", default="basic_cnn")
    ap.add_argument("--keras-python", default="/tmp/keras-peer/bin/python")
    ap.add_argument("--precision", default=None, help="ours: auto | fp32 | bf16 (default: the train default)")
    ap.add_argument("--avx2", action="store_true",
                    help="emulate a CPU without AVX-512 and BF16: both tools limited to AVX2 code (oneDNN's "
                         "ONEDNN_MAX_CPU_ISA, torch's ATEN_CPU_CAPABILITY); use with --precision fp32")
    ap.add_argument("--json", help="write the summary here")
    a = ap.parse_args()
    if not PEER.exists():
        sys.exit(f"{PEER}: the Keras peer is not here")
    ours_cmd = [sys.executable, "-m", "cnnvision", "benchmark", "--net", a.net, "--batch-size", str(a.batch_size),
                "--steps", str(a.steps)] + (["--precision", a.precision] if a.precision else [])
    keras_cmd = [a.keras_python, str(PEER), "--steps", str(a.steps), "--batch-size", str(a.batch_size)]
    ours, keras = [], []
    for r in range(a.rounds):
        env = AVX2 if a.avx2 else None
        ours.append(run_json(ours_cmd, env))
        keras.append(run_json(keras_cmd, env))
        print(f"round {r + 1}: cnnvision {ours[-1]['train_examples_per_sec']:.0f} train / "
              f"{ours[-1]['infer_examples_per_sec']:.0f} infer; keras {keras[-1]['train_examples_per_sec']:.0f} / "
              f"{keras[-1]['infer_examples_per_sec']:.0f} examples/sec", flush=True)
    summary = {}
    for key in ("train_examples_per_sec", "infer_examples_per_sec"):
        mine = statistics.median(o[key] for o in ours)
        theirs = statistics.median(k[key] for k in keras)
        summary[key] = {"cnnvision": mine, "keras": theirs, "ratio": round(mine / theirs, 2)}
    print(json.dumps(summary, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps({"rounds": a.rounds, "ours": ours, "keras": keras, **summary}, indent=2))


if __name__ == "__main__":
    main()
