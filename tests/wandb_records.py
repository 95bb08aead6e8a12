"""The records of an offline W&B run file (RUN/wandb/offline-run-*/run-ID.wandb).

wandb 0.31 has no Python reader for its own run files (its LocalApi is still a pull request),
so the tests read one here: the file is a LevelDB log (a 7-byte W&B header, then 32 KiB blocks
of chunks, each with a 7-byte header of checksum, length and type) whose payloads are wandb's
own `Record` protobufs, parsed with wandb's own classes.
"""

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

FILE_HEADER = 7  # b":W&B", a 2-byte magic, a version byte
BLOCK = 32 * 1024
CHUNK_HEADER = 7  # crc32c (4 bytes), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, offset = [], b"", FILE_HEADER
    while offset + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK_HEADER:  # the writer pads a block's tail with zeros
            offset += left_in_block
            continue
        _, length, kind = struct.unpack_from("<IHB", data, offset)
        chunk = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            records.append(pending)
    return records


def history(path: Path) -> list[dict[str, Any]]:
    """Each `wandb.log` call's row: its keys and their values."""
    rows = []
    for payload in payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def config(path: Path) -> dict[str, Any]:
    """The run's config, as its run record and any later config records left it."""
    values: dict[str, Any] = {}
    for payload in payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        updates = {"run": record.run.config.update, "config": record.config.update}.get(kind, [])
        for item in updates:
            values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values
