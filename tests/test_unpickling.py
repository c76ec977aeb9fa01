"""The two guards against pickled code: reading a pickle's imports without running it, and a block in which
nothing can be unpickled (and after which everything is as before)."""

import collections
import io
import pickle
import zipfile

import pytest
import torch

from noisegrad.app._unpickling import UnpicklingRefused, no_unpickling, non_tensor_imports, pickle_imports


class CreatesMarker:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_imports_are_read_without_running_the_pickle(tmp_path, protocol):
    marker = tmp_path / "marker"
    data = pickle.dumps([CreatesMarker(marker), "open", CreatesMarker(marker)], protocol=protocol)
    imports = pickle_imports(data)
    assert imports and all(name.endswith(".open") for name in imports)  # the memoised second one is no new import
    assert non_tensor_imports(data) == imports
    assert not marker.exists()


def test_a_torch_save_of_tensors_imports_only_tensor_rebuilders():
    buffer = io.BytesIO()
    tensors = ((torch.ones(2), torch.zeros(3, dtype=torch.int64), torch.ones(1, dtype=torch.bfloat16)),
               {"mask": torch.ones(2, dtype=torch.bool), "nested": [torch.eye(2)]}, collections.OrderedDict(a=1))
    torch.save(tensors, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert non_tensor_imports(data) == [] and "torch._utils._rebuild_tensor_v2" in pickle_imports(data)


def test_an_import_it_cannot_resolve_is_an_error_not_a_pass():
    stack_global_of_ints = b"\x80\x04K\x01K\x02\x93."  # STACK_GLOBAL of the ints 1 and 2
    with pytest.raises(ValueError, match="cannot tell what this pickle imports"):
        pickle_imports(stack_global_of_ints)
    with pytest.raises(ValueError):
        pickle_imports(b"not a pickle")


def test_nothing_unpickles_inside_the_block_and_everything_is_restored(tmp_path):
    marker = tmp_path / "marker"
    payload, originals = pickle.dumps(CreatesMarker(marker)), (pickle.loads, pickle.Unpickler, torch.load)
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    with no_unpickling("the test"):
        for attempt in (lambda: pickle.loads(payload), lambda: pickle.load(io.BytesIO(payload)),
                        lambda: pickle.Unpickler(io.BytesIO(payload)).load(),
                        lambda: torch.load(io.BytesIO(payload), weights_only=False),
                        lambda: torch.load(io.BytesIO(buffer.getvalue())),  # default: not explicitly weights_only
                        lambda: torch.serialization.load(io.BytesIO(payload), weights_only=False)):
            with pytest.raises(UnpicklingRefused, match="the test would unpickle"):
                attempt()
        # torch's restricted unpickler (tensors and plain containers only) stays usable
        assert torch.equal(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["w"], torch.ones(2))
    assert not marker.exists()
    assert (pickle.loads, pickle.Unpickler, torch.load) == originals and torch.serialization.load is torch.load
    assert pickle.loads(pickle.dumps(3)) == 3


def test_the_block_restores_after_an_exception():
    original = pickle.loads
    with pytest.raises(KeyError):
        with no_unpickling("x"):
            raise KeyError("boom")
    assert pickle.loads is original
