"""Time loading a Kaggle CSV twice: the first parse fills the cache, the second reads it.

    python benchmarks/cache_load.py [CSV]   (default ../shared/data/kaggle-fkd/proxy_training.csv.gz)
"""
import sys
import time
from pathlib import Path

from cnnvision.data.kaggle import load_kaggle

path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data" / "kaggle-fkd" / "proxy_training.csv.gz")
for label in ("first load (parse, or cache if already parsed)", "cached load"):
    start = time.perf_counter()
    data = load_kaggle(path)
    print(f"{label}: {time.perf_counter() - start:.3f} s for {len(data)} faces")
