# the small run that tests/train trains, defined once there
from train.conftest import tiny_run_config  # noqa: F401
