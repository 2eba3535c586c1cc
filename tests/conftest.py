from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the parse cache of every test away from the user's ~/.cache."""
    monkeypatch.setenv("CNNVISION_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.manual_seed(0)


@pytest.fixture
def shared():
    if not SHARED.is_dir():
        pytest.skip(f"real data not present ({SHARED})")
    return SHARED


@pytest.fixture(scope="session")
def faces32():
    """Small synthetic faces (32x32 grey) for fast tests."""
    from cnnvision.data.synthetic import synthetic_faces
    return synthetic_faces(64, size=32, people=16)


@pytest.fixture(scope="session")
def faces96():
    from cnnvision.data.synthetic import synthetic_faces
    return synthetic_faces(40, size=96, people=10)
