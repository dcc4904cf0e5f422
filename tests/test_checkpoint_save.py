"""Saving replicated arrays: small ones are written whole by one replica, large ones still in
parallel slices by every replica, and both restore to the saved values."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vjax import checkpoint


def test_only_large_replicated_arrays_are_sliced_across_replicas(tmp_path, monkeypatch):
    from orbax.checkpoint._src.serialization import replica_slices

    sliced = []
    data = replica_slices.ReplicaSlice.data

    def recording_data(self):
        if self.slice_args is not None:
            sliced.append(tuple(self.unsliced_data.shape))
        return data(self)

    monkeypatch.setattr(replica_slices.ReplicaSlice, "data", recording_data)
    replicated = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec())
    # 8 replicas: the large array's slices are 1 MiB each, the small one's 512 bytes.
    large_shape = (8, checkpoint.REPLICA_PARALLEL_MIN_SLICE_BYTES // 4)
    state = {
        "small": jax.device_put(jnp.arange(1024, dtype=jnp.float32), replicated),
        "large": jax.device_put(jnp.ones(large_shape, jnp.float32) * 3, replicated),
    }
    manager = checkpoint.make_manager(str(tmp_path), max_to_keep=1)
    checkpoint.save(manager, 1, state, {"note": "replicated"})
    manager.wait_until_finished()

    assert jax.device_count() == 8
    assert set(sliced) == {large_shape}  # every replica wrote a slice of the large array only
    target = checkpoint.abstract_like(state, jax.tree.map(lambda x: x.sharding, state))
    restored, step = checkpoint.restore_latest(manager, target)
    assert step == 1
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
