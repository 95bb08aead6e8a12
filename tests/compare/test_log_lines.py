import logging

from tinygpt.compare.runner import log_lines_prefixed


def test_each_runs_log_lines_say_its_config_and_seed(caplog):
    """compare trains its runs one after another; their step lines say whose they are."""
    loop_log, other = logging.getLogger("tinygpt.train.loop"), logging.getLogger("urllib3")
    with caplog.at_level(logging.INFO):
        with log_lines_prefixed("hybrid-tinystories/seed-1"):
            loop_log.info("step %d | loss %.4f", 10, 1.5)
            loop_log.info("100% of the data")  # no arguments: no %-formatting either
            other.info("not ours")
        loop_log.info("step %d", 11)
    assert [record.getMessage() for record in caplog.records] == [
        "hybrid-tinystories/seed-1: step 10 | loss 1.5000",
        "hybrid-tinystories/seed-1: 100% of the data",
        "not ours",
        "step 11",
    ]
