"""Configuration: network-family sub-tables, versions, old run directories."""

import pytest

from physdiff.config import CONFIG_VERSION, config_from_dict, dump_config, load_config
from physdiff.errors import PhysdiffError

VERSION_1 = """# a config.toml written before version 2: no version key, family keys flat in [model]
[data]
dataset = "moons"
[diffusion]
prediction = "eps"
[model]
arch = "auto"
width = 48
depth = 2
channels = 16
padding = "circular"
[train]
steps = 10
"""


def test_version_1_layout_loads_into_sub_tables(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(VERSION_1)
    cfg = load_config(path)
    assert (cfg.model.mlp.width, cfg.model.mlp.depth) == (48, 2)
    assert (cfg.model.unet.channels, cfg.model.unet.padding) == (16, "circular")
    assert cfg.diffusion.prediction == "eps" and cfg.data.kind == "toy"  # kind resolved from the dataset
    text = dump_config(cfg)
    assert text.splitlines()[1] == f"version = {CONFIG_VERSION}" and "[model.mlp]" in text and "[model.unet]" in text
    again = tmp_path / "again.toml"
    again.write_text(text)
    assert load_config(again) == cfg  # written configs round-trip


def test_family_keys_by_either_name_and_clear_errors():
    assert config_from_dict({}, {"model.width": 7}).model.mlp.width == 7
    assert config_from_dict({}, {"model.mlp.width": 9}).model.mlp.width == 9
    assert config_from_dict({}).with_overrides({"model.depth": 5}).model.mlp.depth == 5
    with pytest.raises(PhysdiffError, match=r"model\.width and model\.mlp\.width are both given"):
        config_from_dict({"model": {"width": 1, "mlp": {"width": 2}}})
    with pytest.raises(PhysdiffError, match=r"unknown config key model.unet.chanels \(did you mean 'channels'\?\)"):
        config_from_dict({"model": {"unet": {"chanels": 2}}})
    with pytest.raises(PhysdiffError, match="config version = 99 is not supported"):
        config_from_dict({"version": 99})
    with pytest.raises(PhysdiffError, match=r"data\.dataset = \[\] has type list"):  # found by the fuzz test
        config_from_dict({"data": {"dataset": []}})


def test_lattice_defaults_merge_table_by_table():
    cfg = config_from_dict({"data": {"dataset": "phi4"}, "model": {"unet": {"channels": 8}}})
    assert cfg.model.unet.channels == 8 and cfg.model.unet.padding == "circular"  # the other defaults stay
    assert cfg.data.kind == "lattice" and cfg.model.mlp.width == 128


def test_lattice_width_follows_the_number_of_sites():
    """A lattice MLP is at least twice as wide as the field (GPU study in benchmarks/README.md);
    a width the user gives, in either form, wins."""
    def width(data, **over):
        return config_from_dict({"data": data}, over).model.mlp.width

    assert width({"dataset": "phi4"}) == 128  # L = 8: 64 sites
    assert width({"dataset": "phi4", "L": 16}) == 512
    assert width({"dataset": "ising", "L": 64}) == 2048  # capped
    assert width({"dataset": "phi4", "L": 16}, **{"model.mlp.width": 96}) == 96
    assert config_from_dict({"data": {"dataset": "phi4", "L": 16}, "model": {"width": 64}}).model.mlp.width == 64
    assert width({"dataset": "spiral"}) == config_from_dict({}).model.mlp.width


def test_the_low_modes_default_per_lattice_size_and_old_runs_read_none():
    """model.local.modes: 1 for a local lattice run from L = 32 on, 0 below and for other data; a
    config of version <= 6 (written before the key) reads 0 whatever its size, so its weights load;
    a value the user gives wins, and one that aliases on the lattice is refused in one line."""
    def cfg(L, **extra):
        return config_from_dict({"data": {"dataset": "phi4"}, "theory": {"L": L}, **extra})

    assert cfg(32).model.local.modes == 1 and cfg(64).model.local.modes == 1
    assert cfg(16).model.local.modes == 0 and cfg(8).model.local.modes == 0
    assert config_from_dict({"data": {"dataset": "spiral"}}).model.local.modes == 0
    assert cfg(16, model={"local": {"modes": 2}}).model.local.modes == 2
    assert cfg(32, model={"local": {"modes": 0}}).model.local.modes == 0
    assert cfg(32, version=6).model.local.modes == 0 and cfg(32, version=7).model.local.modes == 1
    assert cfg(32, version=6, model={"local": {"modes": 1}}).model.local.modes == 1
    with pytest.raises(PhysdiffError, match=r"model.local.modes = 4 reads the momenta up to 4·2π/L, which alias on "
                                            r"L = 8; allowed: modes <= 3"):
        cfg(8, model={"local": {"modes": 4}})


def test_couplings_without_a_range_are_refused_but_old_runs_that_stored_them_load():
    """data.couplings applies to a coupling-conditioned run only: given beside a single coupling it
    is refused (stored and ignored would be silence); a config of version <= 7, which stored the key
    unused, reads the default so that the run still loads."""
    raw = {"data": {"dataset": "phi4", "couplings": 3}, "theory": {"L": 8}}
    with pytest.raises(PhysdiffError, match=r"data.couplings = 3 applies to a coupling-conditioned run"):
        config_from_dict(raw)
    assert config_from_dict({**raw, "version": 7}).data.couplings == 9
    ranged = {"data": {"dataset": "phi4", "couplings": 3, "n_train": 960},
              "theory": {"L": 8, "kappa": [0.2, 0.25]}, "version": 7}
    assert config_from_dict(ranged).data.couplings == 3
