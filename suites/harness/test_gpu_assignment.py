"""GPU assignment (fixtures/gpus.py) with a fake inventory: pure planning functions, and the file-lock
lease exercised by real concurrent processes (as pytest-xdist workers would be)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fixtures import gpus

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
EIGHT = tuple(range(8))
# the seed's launch configurations and their GPU needs


def test_inventory_from_env():
    assert gpus.inventory_from_env({}, [3, 1, 0, 2]) == (0, 1, 2, 3)
    assert gpus.inventory_from_env({"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, EIGHT) == (4, 5, 6, 7)
    assert gpus.inventory_from_env({"CUDA_VISIBLE_DEVICES": ""}, EIGHT) == ()
    assert gpus.inventory_from_env({"MINIMAX_GPU_INVENTORY": "0,1", "CUDA_VISIBLE_DEVICES": "5"}, EIGHT) == (0, 1)
    with pytest.raises(ValueError, match="UUID"):
        gpus.inventory_from_env({"CUDA_VISIBLE_DEVICES": "GPU-1234"}, [])


def test_worker_slot():
    assert gpus.worker_slot(None, None) == (0, 1)
    assert gpus.worker_slot("master", "4") == (0, 1)
    assert gpus.worker_slot("gw3", "4") == (3, 4)
    assert gpus.worker_slot("gw5", None) == (5, 6)


def test_preferred_blocks_are_disjoint_per_worker():
    a = gpus.preferred_devices(EIGHT, 4, 0, 2)
    b = gpus.preferred_devices(EIGHT, 4, 1, 2)
    assert a[:4] == [0, 1, 2, 3] and b[:4] == [4, 5, 6, 7]
    # more workers than blocks: they wrap around (and then wait on the lock, never share)
    assert gpus.preferred_devices(EIGHT, 4, 2, 4)[:4] == [0, 1, 2, 3]
    assert gpus.preferred_devices(EIGHT, 2, 3, 4)[:2] == [6, 7]
    assert sorted(gpus.preferred_devices(EIGHT, 3, 1, 2)) == list(EIGHT)


def test_choose_free():
    assert gpus.choose_free(EIGHT, 4, {0, 1}) == (2, 3, 4, 5)
    assert gpus.choose_free(EIGHT, 4, set(), [4, 5, 6, 7, 0, 1, 2, 3]) == (4, 5, 6, 7)
    assert gpus.choose_free(EIGHT, 4, {0, 1, 2, 3, 4}) is None
    assert gpus.choose_free((2, 3), 1, set(), [9, 3, 2]) == (3,)  # ids outside the inventory ignored


def test_lease_in_process(tmp_path):
    with gpus.lease(4, inventory=EIGHT, lock_dir=tmp_path, worker_id="gw1") as ids:
        assert ids == (4, 5, 6, 7)
        assert gpus.busy_devices(EIGHT, tmp_path) == {4, 5, 6, 7}
        assert "worker=gw1" in (tmp_path / "gpu5.lock").read_text()
        with pytest.raises(gpus.SelfDeadlock):
            with gpus.lease(8, inventory=EIGHT, lock_dir=tmp_path, timeout=0.1):
                pass
    assert gpus.busy_devices(EIGHT, tmp_path) == set()
    with gpus.lease(0, inventory=(), lock_dir=tmp_path) as ids:
        assert ids == ()
    with pytest.raises(gpus.NotEnoughGPUs, match="needs 8 GPUs, 4 available"):
        with gpus.lease(8, inventory=(0, 1, 2, 3), lock_dir=tmp_path):
            pass


HOLDER = textwrap.dedent('''
    import json, sys, time
    from fixtures import gpus
    n, hold, worker, lock_dir, inv = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    inventory = tuple(int(x) for x in inv.split(","))
    t0 = time.time()
    try:
        with gpus.lease(n, inventory=inventory, lock_dir=lock_dir, worker_id=worker, timeout=20, poll=0.05) as ids:
            got = time.time()
            print(json.dumps({"ids": ids, "got": got}), flush=True)
            time.sleep(hold)
            print(json.dumps({"released": time.time()}), flush=True)
    except gpus.LeaseTimeout as exc:
        print(json.dumps({"timeout": str(exc)}), flush=True)
''')


def _spawn(tmp_path, n, hold, worker, inv=EIGHT, timeout_env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(n), str(hold), worker, str(tmp_path / "locks"),
         gpus.cuda_visible_devices(inv)],
        stdout=subprocess.PIPE, text=True, env=env,
    )


def _result(proc) -> list[dict]:
    out, _ = proc.communicate(timeout=60)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_two_workers_hold_disjoint_gpus_at_once_and_eight_waits(tmp_path):
    a = _spawn(tmp_path, 4, 1.5, "gw0")
    b = _spawn(tmp_path, 4, 1.5, "gw1")
    time.sleep(0.5)
    c = _spawn(tmp_path, 8, 0.0, "gw2")
    ra, rb, rc = _result(a), _result(b), _result(c)
    assert tuple(ra[0]["ids"]) == (0, 1, 2, 3)
    assert tuple(rb[0]["ids"]) == (4, 5, 6, 7)
    # side by side: each got its GPUs before the other let go
    assert ra[0]["got"] < rb[1]["released"] and rb[0]["got"] < ra[1]["released"]
    # the dp8 lease started only after both tp4 leases ended
    assert tuple(rc[0]["ids"]) == EIGHT
    assert rc[0]["got"] >= max(ra[1]["released"], rb[1]["released"])


def test_contending_workers_never_share_a_gpu(tmp_path):
    # four workers all preferring the same block of a 4-GPU inventory (2 GPUs each)
    procs = [_spawn(tmp_path, 2, 0.4, f"gw{i}", inv=(0, 1, 2, 3)) for i in (0, 2, 4, 6)]
    results = [_result(p) for p in procs]
    spans = [(set(r[0]["ids"]), r[0]["got"], r[1]["released"]) for r in results]
    for i, (ids_i, s_i, e_i) in enumerate(spans):
        for ids_j, s_j, e_j in spans[i + 1:]:
            overlap_in_time = s_i < e_j and s_j < e_i
            assert not (overlap_in_time and ids_i & ids_j), spans


def test_a_killed_holder_releases_its_gpus(tmp_path):
    holder = _spawn(tmp_path, 8, 60, "gw0")
    first = json.loads(holder.stdout.readline())
    assert tuple(first["ids"]) == EIGHT
    assert gpus.busy_devices(EIGHT, tmp_path / "locks") == set(EIGHT)
    holder.kill()
    holder.wait(timeout=10)
    with gpus.lease(8, inventory=EIGHT, lock_dir=tmp_path / "locks", timeout=5) as ids:
        assert ids == EIGHT


def test_lease_timeout(tmp_path):
    holder = _spawn(tmp_path, 2, 60, "gw0", inv=(0, 1))
    json.loads(holder.stdout.readline())
    try:
        t0 = time.monotonic()
        with pytest.raises(gpus.LeaseTimeout, match="stayed busy"):
            with gpus.lease(1, inventory=(0, 1), lock_dir=tmp_path / "locks", timeout=0.5, poll=0.05):
                pass
        assert time.monotonic() - t0 < 5
    finally:
        holder.kill()
        holder.wait(timeout=10)
