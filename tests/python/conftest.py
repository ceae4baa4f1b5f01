import numpy as np
import pytest

from hf_extra import HF_FILES, HF_REASON, SKIP_HF

collect_ignore = HF_FILES if SKIP_HF else []


def pytest_configure(config):
    config.addinivalue_line("markers", f"hf: {HF_REASON}")


def pytest_report_header(config):
    if SKIP_HF:
        return f"turbokv: the [hf] extra is not installed: {', '.join(HF_FILES)} and the tests marked hf are skipped"
    return None


def pytest_collection_modifyitems(config, items):
    if SKIP_HF:
        for item in items:
            if item.get_closest_marker("hf"):
                item.add_marker(pytest.mark.skip(reason=HF_REASON))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
