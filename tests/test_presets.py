import pytest

from tinygpt.presets import PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_presets_leave_the_dtype_to_the_device(name):
    # bf16 named by a preset ran about 100x slower on a CPU without bf16 instructions
    assert PRESETS[name]().train.dtype == "auto"
