"""Mesh presets: consistent sizes, loadable as configs, and the 8-device ones build here."""

import importlib.util
import pathlib

import pytest

from r1jax.config import mesh_presets, typed
from r1jax.config.flags import parse_config
from r1jax.sharding import make_mesh, mesh_shape

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "meshes.py"


def load_config(name):
    spec = importlib.util.spec_from_file_location("meshes_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(name)


@pytest.mark.parametrize("name", sorted(mesh_presets.PRESETS))
def test_preset_sizes_multiply_to_its_devices_and_config_matches(name):
    preset = mesh_presets.get(name)
    assert mesh_shape(preset.mesh, preset.devices) == (preset.data, preset.fsdp, 1, preset.tensor)
    config = load_config(name)
    mesh = typed(config).mesh
    assert (mesh.data, mesh.fsdp, mesh.tensor) == preset.axes and mesh.preset == name
    assert preset.flags() == [f"--config.mesh.preset={name}"]


def test_a_preset_is_one_override_and_conflicting_axes_are_an_error():
    config, _ = parse_config(
        ["--config=configs/grpo_tiny.py", "--config.mesh.preset=v5p-64"], command="t", default="x"
    )
    assert (typed(config).mesh.data, typed(config).mesh.fsdp) == (2, 16)
    config.mesh.fsdp = 4
    with pytest.raises(ValueError, match="set one or the other"):
        typed(config)
    config.mesh.update(fsdp=1, preset="no-such-slice")
    with pytest.raises(ValueError, match="unknown mesh preset"):
        typed(config)


@pytest.mark.parametrize("name", ["cpu-8", "v5e-8", "8xH100"])
def test_eight_device_presets_build_a_mesh_here(name):
    mesh = make_mesh(mesh_presets.get(name).mesh)
    preset = mesh_presets.get(name)
    assert dict(mesh.shape) == {"data": preset.data, "fsdp": preset.fsdp, "expert": 1, "tensor": 1}


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="v5p-64"):
        mesh_presets.get("v4-8")
