"""Thick slabs (MIP / MinIP / average) on oblique planes through the compiled sampler, against a
straightforward numpy reference: every slab sample's voxel coordinates from the stack's own per-slice
patient-to-voxel map, trilinear from its 8 voxels in float64, ``fill`` outside the volume; on small random
volumes, untilted and gantry-tilted. Also: the slab's step along the normal (one voxel along the axis the
normal crosses fastest), and the numpy fallback when the compiled sampler fails on first use (numba's own
``NUMBA_DISABLE_JIT`` switch, in a child process).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from viewer.core.geometry import affine_sampler
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane, crosshair_plane, rotate_vector, standard_plane
from viewer.core.geometry.reslice import Slab, SlabMode, _Sampler, reslice, slab_offsets, slab_step
from viewer.core.geometry.stack import StackGeometry

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (24, 40, 48)  # slices, rows, columns
PIXEL = 0.7
SLICE = 1.5
EDGE = 1e-3  # voxel units: points this close outside the outer voxel centres count as on them
FILL = -1024.0


def _geometry(tilt_deg: float) -> StackGeometry:
    n, rows, cols = SHAPE
    shear = math.tan(math.radians(tilt_deg)) * SLICE
    positions = np.array([(-10.0, -12.0 + k * shear, 5.0 + k * SLICE) for k in range(n)])
    return StackGeometry(
        positions=positions,
        row_dir=np.array([1.0, 0, 0]),
        col_dir=np.array([0, 1.0, 0]),
        pixel_spacing=(PIXEL, PIXEL),
        rows=rows,
        columns=cols,
    )


def _volume() -> np.ndarray:
    return np.random.default_rng(11).integers(-1000, 2000, SHAPE).astype(np.int16)


def _turned(geom: StackGeometry, degrees: float, tilt_deg: float) -> Plane:
    """Coronal turned about the slice normal, then ``tilt_deg`` about the slices' row axis (double oblique
    when both are non-zero), through the volume's centre, its grid fitted to the volume."""
    std = standard_plane(geom, Orientation.CORONAL)
    a, t = math.radians(degrees), math.radians(tilt_deg)
    row = rotate_vector(rotate_vector(std.row_dir, geom.normal, a), geom.row_dir, t)
    col = rotate_vector(rotate_vector(std.col_dir, geom.normal, a), geom.row_dir, t)
    return crosshair_plane(geom, row, col).through(geom.corners().mean(axis=0))


def _reference(
    vol: np.ndarray, geom: StackGeometry, plane: Plane, offsets: np.ndarray, mode: SlabMode
) -> tuple[np.ndarray, np.ndarray]:
    """The slab in plain numpy, and a mask of pixels none of whose samples lies within 1e-6 voxel of the
    EDGE boundary (where rounding may put a sample either side)."""
    rr, cc = np.mgrid[0 : plane.size[0], 0 : plane.size[1]]
    pts = plane.pixel_to_patient(rr, cc)
    hi = np.array(vol.shape, dtype=float) - 1
    samples = []
    clear = np.ones(plane.size, dtype=bool)
    for off in offsets:
        kji = geom.patient_to_voxel(pts + float(off) * np.asarray(plane.normal))
        outside = np.any((kji < -EDGE) | (kji > hi + EDGE), axis=-1)
        near = (np.abs(kji + EDGE) < 1e-6) | (np.abs(kji - hi - EDGE) < 1e-6)
        clear &= ~np.any(near, axis=-1)
        p = np.clip(kji, 0, hi)
        low = np.minimum(np.floor(p).astype(int), np.array(vol.shape) - 2)
        f = p - low
        value = np.zeros(plane.size)
        for dk in (0, 1):
            for dj in (0, 1):
                for di in (0, 1):
                    w = (
                        (f[..., 0] if dk else 1 - f[..., 0])
                        * (f[..., 1] if dj else 1 - f[..., 1])
                        * (f[..., 2] if di else 1 - f[..., 2])
                    )
                    value += w * vol[low[..., 0] + dk, low[..., 1] + dj, low[..., 2] + di]
        value[outside] = FILL
        samples.append(value)
    stack = np.stack(samples)
    reduced = {SlabMode.MIP: stack.max(0), SlabMode.MINIP: stack.min(0), SlabMode.AVERAGE: stack.mean(0)}
    return reduced[mode], clear


@pytest.mark.parametrize("mode", list(SlabMode))
@pytest.mark.parametrize("tilt", [0.0, 20.0], ids=["untilted", "gantry-tilted"])
@pytest.mark.parametrize(
    "turn", [(30.0, 0.0), (30.0, 20.0), (-25.0, 35.0)], ids=["oblique", "double", "double2"]
)
def test_oblique_slabs_match_a_numpy_reference(
    mode: SlabMode, tilt: float, turn: tuple[float, float]
) -> None:
    geom, vol = _geometry(tilt), _volume()
    assert geom.is_sheared == (tilt > 0)
    plane = _turned(geom, *turn)
    slab = Slab(mode, 6.0)
    offsets = slab_offsets(geom, plane, slab)
    assert len(offsets) >= 5
    compiled = _Sampler(vol, geom, FILL).compiled_slab(plane, offsets, mode)
    assert compiled is not None  # the compiled sampler is what is tested here
    got = reslice(vol, geom, plane, slab=slab, fill=FILL)
    np.testing.assert_array_equal(got.image, compiled)
    assert got.image.dtype == np.float32 and got.resampled and got.slab_samples == len(offsets)
    expected, clear = _reference(vol, geom, plane, offsets, mode)
    some_fill = expected == FILL
    assert clear.mean() > 0.99 and (~some_fill).sum() > 200
    np.testing.assert_allclose(got.image[clear], expected[clear], atol=0.01)
    # float32 volumes take the scalar blend (int16 ones the gathered one where the CPU has AVX2): same pixels
    as_float = reslice(vol.astype(np.float32), geom, plane, slab=slab, fill=FILL).image
    np.testing.assert_allclose(as_float, got.image, atol=0.01)


def test_minip_and_average_differ_from_mip_where_the_slab_varies() -> None:
    """The three folds are really different reductions of the same samples: MinIP <= average <= MIP
    everywhere, strictly inside the volume, and the average is the mean of the reference's samples."""
    geom, vol = _geometry(20.0), _volume()
    plane = _turned(geom, 30.0, 20.0)
    images = {m: reslice(vol, geom, plane, slab=Slab(m, 6.0), fill=FILL).image for m in SlabMode}
    inside = images[SlabMode.MINIP] > FILL
    assert inside.sum() > 200
    assert np.all(images[SlabMode.MINIP] <= images[SlabMode.AVERAGE] + 1e-3)
    assert np.all(images[SlabMode.AVERAGE] <= images[SlabMode.MIP] + 1e-3)
    spread = images[SlabMode.MIP][inside] - images[SlabMode.MINIP][inside]
    assert np.median(spread) > 500  # random voxels: the slab's samples differ a lot


def test_oblique_slab_step_is_one_voxel_along_the_fastest_axis() -> None:
    """One slab step advances at most one voxel along every axis and exactly one along one; a normal along
    a stack axis keeps that axis' spacing."""
    for tilt in (0.0, 20.0):
        geom = _geometry(tilt)
        plane = _turned(geom, 30.0, 20.0)
        step = slab_step(geom, plane)
        per_step = np.abs(np.linalg.inv(geom.affine)[:3, :3] @ np.asarray(plane.normal)) * step
        assert per_step.max() == pytest.approx(1.0)
        assert step >= min(PIXEL, SLICE) - 1e-9
        offsets = slab_offsets(geom, plane, Slab(SlabMode.MIP, 10.0))
        assert len(offsets) == 2 * math.floor(5.0 / step + 1e-6) + 1
    untilted = _geometry(0.0)
    assert slab_step(untilted, standard_plane(untilted, Orientation.CORONAL)) == pytest.approx(PIXEL)
    assert slab_step(untilted, standard_plane(untilted, Orientation.AXIAL)) == pytest.approx(SLICE)


def test_a_thin_bright_layer_crossed_obliquely_is_never_stepped_over() -> None:
    """A one-voxel bright layer (j = const) inside the slab: every pixel's MIP holds at least half of it
    (the sample nearest the layer is at most half a voxel from it along j)."""
    geom = _geometry(0.0)
    vol = np.zeros(SHAPE, dtype=np.int16)
    vol[:, 20, :] = 1000
    plane = _turned(geom, 30.0, 20.0)
    image = reslice(vol, geom, plane, slab=Slab(SlabMode.MIP, 8.0), fill=FILL).image
    rr, cc = np.mgrid[0 : plane.size[0], 0 : plane.size[1]]
    offsets = slab_offsets(geom, plane, Slab(SlabMode.MIP, 8.0))
    ends = [geom.patient_to_voxel(plane.pixel_to_patient(rr, cc) + o * np.asarray(plane.normal))
            for o in (offsets[0], offsets[-1])]
    hi = np.array(SHAPE) - 1
    inside = np.all([(e >= 0.01) & (e <= hi - 0.01) for e in ends], axis=(0, -1))
    crosses = (np.minimum(ends[0][..., 1], ends[1][..., 1]) <= 19.5) & (
        np.maximum(ends[0][..., 1], ends[1][..., 1]) >= 20.5
    )
    assert (inside & crosses).sum() > 100
    assert image[inside & crosses].min() >= 500 - 1e-3


def test_a_compiled_sampler_failing_on_first_use_falls_back_to_numpy_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numba's NUMBA_DISABLE_JIT switch (read when numba is imported, so in a child process) makes the
    kernel run as Python, where its compiled-only parts raise on the first call: the first reslice logs one
    warning, both reslices give the numpy path's image, nothing raises."""
    geom_args = {"tilt": 20.0, "turn": [30.0, 20.0]}
    script = f"""
import json, logging, sys
import numpy as np
sys.path.insert(0, {str(ROOT)!r})
from tests.core.test_slab_kernel import _geometry, _turned, _volume
from viewer.core.geometry.reslice import Slab, SlabMode, reslice
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
args = json.loads({json.dumps(json.dumps(geom_args))})
geom = _geometry(args["tilt"])
plane = _turned(geom, *args["turn"])
images = [reslice(_volume(), geom, plane, slab=Slab(m, 6.0), fill=-1024.0).image
          for m in (SlabMode.MIP, SlabMode.AVERAGE)]
np.save({str(tmp_path / "mip.npy")!r}, images[0])
np.save({str(tmp_path / "average.npy")!r}, images[1])
"""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stderr
    assert "Compiled oblique sampler failed on first use (NotImplementedError)" in warnings[0]
    assert "Traceback" not in done.stderr
    geom, vol = _geometry(20.0), _volume()
    plane = _turned(geom, 30.0, 20.0)
    monkeypatch.setattr(affine_sampler, "kernel", lambda: None)  # the numpy path, in this process
    for name, mode in (("mip", SlabMode.MIP), ("average", SlabMode.AVERAGE)):
        numpy_path = reslice(vol, geom, plane, slab=Slab(mode, 6.0), fill=FILL).image
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), numpy_path)


def test_the_kernel_pins_the_source_of_the_simd_module_it_inlines() -> None:
    """numba's disk cache checks affine_kernel.py's time stamp and size only: a change to affine_simd.py that
    left affine_kernel.py untouched would be served the kernel compiled from the old code (a `git pull`
    changing only affine_simd.py, say). The pinned digest makes such a change fail here until
    affine_kernel.py changes with it."""
    import hashlib

    from viewer.core.geometry import affine_kernel, affine_simd

    source = Path(affine_simd.__file__).read_text(encoding="utf-8")
    digest = hashlib.sha256("\n".join(source.splitlines()).encode()).hexdigest()
    assert digest == affine_kernel.SIMD_SOURCE_SHA256, (
        "affine_simd.py changed: set affine_kernel.SIMD_SOURCE_SHA256 to " + digest
    )
