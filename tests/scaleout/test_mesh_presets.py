"""Mesh presets: consistent sizes, loadable as configs, and the 8-device ones build here."""

import importlib.util
import pathlib

import pytest

from r1jax import mesh_presets
from r1jax.sharding import MeshConfig, make_mesh

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "meshes.py"


def load_config(name):
    spec = importlib.util.spec_from_file_location("meshes_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(name)


@pytest.mark.parametrize("name", sorted(mesh_presets.PRESETS))
def test_preset_sizes_multiply_to_its_devices_and_config_matches(name):
    preset = mesh_presets.get(name)
    assert preset.mesh.resolve(preset.devices) == (preset.data, preset.fsdp, preset.tensor)
    config = load_config(name)
    assert MeshConfig.from_mapping(config.mesh) == preset.mesh
    assert preset.flags()[1] == f"--config.mesh.fsdp={preset.fsdp}"


@pytest.mark.parametrize("name", ["cpu-8", "v5e-8", "8xH100"])
def test_eight_device_presets_build_a_mesh_here(name):
    mesh = make_mesh(mesh_presets.get(name).mesh)
    assert dict(mesh.shape) == {"data": mesh_presets.get(name).data,
                                "fsdp": mesh_presets.get(name).fsdp, "tensor": 1}  # fmt: skip


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="v5p-64"):
        mesh_presets.get("v4-8")
