"""Sample store: appends survive, a torn tail is dropped and never parsed, datasets load."""

from dsc.records import ChainStep
from dsc.store import SampleStore


def _record(pid: str, chain: int, step: int) -> ChainStep:
    return ChainStep(prompt_id=pid, chain_id=chain, step=step, prompt="c", response="x", reward_response=0.0,
                     state="x", reward_state=0.0)


def test_round_trip(tmp_path):
    store = SampleStore(tmp_path)
    store.append([_record("a", 0, 0), _record("a", 1, 0)])
    store.append([_record("a", 0, 1)])
    assert [r.key for r in store.load()] == [("a", 0, 0), ("a", 1, 0), ("a", 0, 1)]
    assert store.to_dataset().num_rows == 3


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    store = SampleStore(tmp_path)
    store.append([_record("a", 0, 0), _record("a", 1, 0)])
    full = store.path.read_bytes()
    store.path.write_bytes(full + _record("a", 2, 0).to_json().encode()[:37])  # killed mid-write
    assert [r.key for r in store.load()] == [("a", 0, 0), ("a", 1, 0)]
    store.append([_record("b", 0, 0)])
    lines = store.path.read_bytes().split(b"\n")
    assert len([ln for ln in lines if ln]) == 3
    assert [r.key for r in store.load()] == [("a", 0, 0), ("a", 1, 0), ("b", 0, 0)]


def test_tail_repair_reads_backwards_past_small_windows(tmp_path):
    """The torn-tail check reads only the file's end; a record longer than its first window still
    resolves to the right line, and an intact file is left byte-identical."""
    from dsc.store import _last_line

    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "' + b"x" * 50 + b'"}\n')
    with open(path, "rb") as handle:
        start, last = _last_line(handle, path.stat().st_size, window=4)
    assert start == 9 and last == b'{"b": "' + b"x" * 50 + b'"}\n'

    store = SampleStore(tmp_path)
    store.append([_record("a", 0, 0)])
    intact = store.path.read_bytes()
    store._drop_torn_tail()
    assert store.path.read_bytes() == intact
    store.path.write_bytes(intact + b"not json\n")  # a complete line that is not a record
    store._drop_torn_tail()
    assert store.path.read_bytes() == intact
    store.path.write_bytes(b'{"torn')  # a shard that is one torn line
    store._drop_torn_tail()
    assert store.path.read_bytes() == b""
