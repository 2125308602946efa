import sys
import textwrap

import pytest

from samplerbench.registry import METHODS, Registry, RegistryError


def test_builtins_registered_through_entry_points():
    for name in ("uniform", "random", "dense", "stride", "head", "oracle"):
        assert name in METHODS.names()
    assert METHODS.get("oracle").upper_bound


def test_register_get_duplicate_unknown():
    reg = Registry("things")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A
    with pytest.raises(RegistryError, match="registered twice"):

        @reg.register("a")
        class B:
            pass

    with pytest.raises(RegistryError, match="unknown things 'zzz'.*registered: a"):
        reg.get("zzz")


def test_entry_point_registers_a_method_from_another_package(tmp_path, monkeypatch):
    """A third-party distribution declares samplerbench.methods; its sampler appears."""
    pkg = tmp_path / "thirdparty_sampler.py"
    pkg.write_text(textwrap.dedent('''
        from dataclasses import dataclass
        import numpy as np
        from samplerbench.registry import Registry
        from samplerbench.sampling import Sampler, Selection
        import samplerbench.registry as r
        TARGET = r._TEST_REGISTRY

        @TARGET.register("last-frame")
        @dataclass
        class LastFrame(Sampler):
            name = "last-frame"
            def select(self, view, budget, rng):
                return Selection(np.array([view.num_candidates - 1]))
    '''))
    dist = tmp_path / "thirdparty_sampler-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-sampler\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[samplerbench.testmethods]\nlast = thirdparty_sampler\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import samplerbench.registry as r

    reg = Registry("testmethods")
    monkeypatch.setattr(r, "_TEST_REGISTRY", reg, raising=False)
    assert "last-frame" in reg.names()
    assert reg.get("last-frame").__module__ == "thirdparty_sampler"
    sys.modules.pop("thirdparty_sampler", None)
