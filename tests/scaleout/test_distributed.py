"""Environment -> distributed plan, per fake cluster; per-process data shards on fake meshes."""

import types

import jax
import numpy as np
import pytest

from r1jax import distributed as dist
from r1jax import multihost as mh

SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "3",
    "SLURM_NTASKS": "4",
    "SLURM_LOCALID": "1",
    "SLURM_STEP_NODELIST": "gpu[017-018]",
}


def test_no_cluster_environment_is_single_process():
    plan = dist.detect_plan(None, {"HOME": "/root"})
    assert plan.source == "single" and not plan.is_distributed


def test_explicit_environment():
    env = {"R1JAX_COORDINATOR": "127.0.0.1:1234", "R1JAX_NUM_PROCESSES": "2"}
    plan = dist.detect_plan(None, env | {"R1JAX_PROCESS_ID": "1"})
    assert plan == dist.Plan("explicit", "127.0.0.1:1234", 2, 1)
    assert plan.initialize_kwargs() == dict(
        coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1
    )


def test_explicit_config_beats_environment_and_takes_device_ids():
    cfg = dict(coordinator="10.0.0.1:99", num_processes=4, process_id=0, local_device_ids=[2, 3])
    plan = dist.detect_plan(cfg, SLURM | {"R1JAX_PROCESS_ID": "3"})
    assert plan == dist.Plan("explicit", "10.0.0.1:99", 4, 0, (2, 3))


@pytest.mark.parametrize(
    "env, match",
    [
        ({"R1JAX_COORDINATOR": "h:1", "R1JAX_NUM_PROCESSES": "2"}, "process_id"),
        ({"R1JAX_COORDINATOR": "h", "R1JAX_NUM_PROCESSES": "2", "R1JAX_PROCESS_ID": "0"}, "host"),
        ({"R1JAX_COORDINATOR": "h:1", "R1JAX_NUM_PROCESSES": "2", "R1JAX_PROCESS_ID": "2"}, "in"),
    ],
)
def test_incomplete_or_bad_explicit_setup_is_an_error(env, match):
    with pytest.raises(ValueError, match=match):
        dist.detect_plan(None, env)


@pytest.mark.parametrize(
    "nodelist, host",
    [
        ("node001", "node001"),
        ("node001,host2", "node001"),
        ("node[001-015],host2", "node001"),
        ("node[007,009-015]", "node007"),
        ("a-b-c[3]", "a-b-c3"),
    ],
)
def test_first_slurm_host(nodelist, host):
    assert dist.first_slurm_host(nodelist) == host


def test_slurm_one_process_per_gpu_sees_its_local_gpu():
    plan = dist.detect_plan(None, SLURM | {"SLURM_STEP_NUM_NODES": "2"})
    port = 4242 % 4096 + 65535 - 4095
    assert plan == dist.Plan("slurm", f"gpu017:{port}", 4, 3, (1,))


def test_slurm_gpu_already_bound_per_task_is_not_restricted_again():
    env = SLURM | {"SLURM_STEP_NUM_NODES": "2", "CUDA_VISIBLE_DEVICES": "1"}
    assert dist.detect_plan(None, env).local_device_ids is None


def test_slurm_one_process_per_node_sees_all_gpus_and_port_override():
    env = SLURM | {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_STEP_NUM_NODES": "2"}
    plan = dist.detect_plan(None, env | {"R1JAX_COORDINATOR_PORT": "5555"})
    assert plan == dist.Plan("slurm", "gpu017:5555", 2, 1, None)


def test_slurm_falls_back_to_the_job_nodelist():
    env = {k: v for k, v in SLURM.items() if k != "SLURM_STEP_NODELIST"}
    env |= {"SLURM_JOB_NODELIST": "cn[5-6]", "SLURM_JOB_NUM_NODES": "4", "SLURM_NTASKS": "4"}
    assert dist.detect_plan(None, env).coordinator_address.startswith("cn5:")


def test_xpk_gpu_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "w-0-0.w", "JAX_COORDINATOR_PORT": "6002"}
    plan = dist.detect_plan(None, env | {"NNODES": "2", "NODE_RANK": "1"})
    assert plan == dist.Plan("xpk", "w-0-0.w:6002", 2, 1)


def test_jobset_rank_and_coordinator_dns_name():
    env = {"JOBSET_NAME": "r1", "REPLICATED_JOB_NAME": "workers", "JOB_COMPLETION_INDEX": "1"}
    env |= {"JOB_INDEX": "1", "R1JAX_PROCESSES_PER_JOB": "2", "R1JAX_NUM_PROCESSES": "4"}
    plan = dist.detect_plan(None, env)
    assert plan == dist.Plan("jobset", "r1-workers-0-0.r1:8476", 4, 3)


def test_jobset_without_process_count_is_an_error():
    with pytest.raises(ValueError, match="R1JAX_NUM_PROCESSES"):
        dist.detect_plan(None, {"JOBSET_NAME": "r1", "JOB_COMPLETION_INDEX": "0"})


def test_tpu_vm_initialises_without_arguments():
    plan = dist.detect_plan(None, {}, tpu_vm=True)
    assert plan.auto and plan.is_distributed and plan.initialize_kwargs() == {}
    assert dist.detect_plan(None, {"TPU_WORKER_HOSTNAMES": "a,b"}).source == "tpu"


def test_mode_off_and_forced_mode():
    assert dist.detect_plan({"mode": "off"}, SLURM).source == "single"
    assert dist.detect_plan({"mode": "tpu"}, SLURM).source == "tpu"
    with pytest.raises(ValueError, match="environment is not set"):
        dist.detect_plan({"mode": "slurm"}, {})
    with pytest.raises(ValueError, match="mode"):
        dist.detect_plan({"mode": "mpi"}, {})


def test_initialize_is_a_no_op_for_one_process():
    plan = dist.initialize({"distributed": {"mode": "auto"}}, env={})
    assert plan.source == "single"


# ------------------------------------------------------------------------ data shards


def fake_mesh(shape, names, procs_per_device):
    devs = np.array(
        [types.SimpleNamespace(id=i, process_index=p) for i, p in enumerate(procs_per_device)]
    ).reshape(shape)
    return types.SimpleNamespace(
        devices=devs, axis_names=names, shape=dict(zip(names, shape, strict=True))
    )


def test_data_shard_two_processes_split_the_batch():
    mesh = fake_mesh((4, 2, 1), ("data", "fsdp", "tensor"), [0] * 4 + [1] * 4)
    assert mh.data_shard(mesh, process_index=0) == mh.DataShard(0, 2)
    assert mh.data_shard(mesh, process_index=1) == mh.DataShard(1, 2)
    assert mh.data_shard(mesh, process_index=1).rows(16) == slice(8, 16)


def test_data_shard_tensor_axis_across_hosts_shares_rows():
    # data=2 over hosts pairs, tensor=2 spans processes 0/1 and 2/3.
    mesh = fake_mesh((2, 1, 2), ("data", "fsdp", "tensor"), [0, 1, 2, 3])
    shards = [mh.data_shard(mesh, process_index=p) for p in range(4)]
    assert shards == [mh.DataShard(0, 2)] * 2 + [mh.DataShard(1, 2)] * 2


def test_shard_owners_keep_one_process_per_shared_shard():
    # tensor=2 spans processes 0/1 and 2/3: shards 0, 0, 1, 1 -> keep processes 0 and 2
    mesh = fake_mesh((2, 1, 2), ("data", "fsdp", "tensor"), [0, 1, 2, 3])
    assert mh.shard_owners(mesh) == [0, 2]
    mesh = fake_mesh((4, 2, 1), ("data", "fsdp", "tensor"), [0] * 4 + [1] * 4)
    assert mh.shard_owners(mesh) == [0, 1]
    mesh = fake_mesh((1, 1, 8), ("data", "fsdp", "tensor"), [0] * 4 + [1] * 4)
    assert mh.shard_owners(mesh) == [0]  # one shard, held by both


def test_batch_feed_splits_by_data_shard_and_names_the_field():
    mesh = fake_mesh((2, 1, 2), ("data", "fsdp", "tensor"), [0, 1, 2, 3])
    assert mh.batch_feed(mesh, 8, "config.train.batch_size") in (
        mh.DataShard(0, 2),
        mh.DataShard(1, 2),
    )
    with pytest.raises(ValueError, match="config.train.batch_size=7 must be a multiple of 2"):
        mh.batch_feed(mesh, 7, "config.train.batch_size")


def test_data_shard_rejects_interleaved_devices():
    mesh = fake_mesh((4, 1, 1), ("data", "fsdp", "tensor"), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="contiguous"):
        mh.data_shard(mesh, process_index=0)


def test_host_local_to_global_single_process_is_the_batch():
    import jax

    from r1jax.sharding import make_mesh

    mesh = make_mesh({"data": -1})
    batch = {"tokens": np.arange(32).reshape(8, 4)}
    out = mh.host_local_to_global(batch, mesh)
    assert out["tokens"].shape == (8, 4)
    assert len(out["tokens"].sharding.device_set) == len(jax.devices())
    np.testing.assert_array_equal(np.asarray(out["tokens"]), batch["tokens"])


def test_data_shard_rows_inverts_host_local_to_global():
    from r1jax.sharding import make_mesh

    mesh = make_mesh({"data": -1, "fsdp": 2})
    x = np.arange(48, dtype=np.float32).reshape(16, 3)
    back = mh.data_shard_rows(mh.host_local_to_global(x, mesh), mesh)
    np.testing.assert_array_equal(back, x)  # one process holds every row, each once
    odd = np.arange(15, dtype=np.float32).reshape(5, 3)  # splits over no axis: replicated
    np.testing.assert_array_equal(mh.data_shard_rows(mh.host_local_to_global(odd, mesh), mesh), odd)


def _fake_array(x, row_blocks):
    """A stand-in global array whose addressable shards hold the given row slices of ``x``."""
    shards = [
        types.SimpleNamespace(index=(block, slice(None)), data=x[block]) for block in row_blocks
    ]
    return types.SimpleNamespace(shape=x.shape, dtype=x.dtype, addressable_shards=shards)


@pytest.mark.parametrize(
    "blocks",
    [
        [slice(8, 12), slice(12, 16)],  # split over every batch shard: exactly process 1's rows
        [slice(0, 16)],  # not split (replicated): process 1 takes its half
        [slice(8, 16), slice(8, 16)],  # split over data only, replicas read once
    ],
)
def test_data_shard_rows_takes_this_process_block_whatever_the_split(blocks, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    mesh = fake_mesh((4, 2, 1), ("data", "fsdp", "tensor"), [0] * 4 + [1] * 4)
    x = np.arange(32).reshape(16, 2)
    np.testing.assert_array_equal(mh.data_shard_rows(_fake_array(x, blocks), mesh), x[8:16])
