"""Tests of parameter sweeps: grid expansion, the results store and runs on Dask clusters on 127.0.0.1."""

import copy
import csv
import hashlib
import json
import math
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr
import zarr
from distributed import LocalCluster

from hierarchy.cli import main
from hierarchy.config import ConfigError, parse_config
from hierarchy.sweeps import (
    SweepConfigError,
    SweepRunError,
    SweepStore,
    SweepStoreError,
    compute_point,
    load_sweep,
    max_local_workers,
    parse_sweep,
    run_sweep,
)
from hierarchy.provenance import git_revision
from hierarchy.sweeps import runner as runner_module
from hierarchy.sweeps.grid import canonical_config_json, config_point_id
from hierarchy.sweeps.store import (
    MANIFEST_FILE,
    POINTS_DIRECTORY,
    STATUS_ERROR,
    SUMMARY_FILE,
    TAIL_PREDICTION_MISSING,
    StoreMetadata,
)

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLES = REPOSITORY / "examples"

# A problem small enough that one point takes milliseconds once the kernels are compiled.
TINY_BASE = {
    "problem": {"d": 50, "a": 1.0, "sigma0": 0.1},
    "truncation": {"kind": "spectral_modes", "bins_per_decade": 4, "rule_order": 4, "exact_top": 4},
    "solver": {"t_end": 1e3, "n_out": 40},
}
# Attributes that measure the run time and so differ between two runs of one point.
TIMING_ATTRIBUTES = ("created", "run_seconds", "wall_seconds")
METADATA = StoreMetadata(git_revision="0" * 40, versions={"zarr": "test"})


def sweep_document(sweep: dict, base: dict | None = None) -> dict:
    return {"base": copy.deepcopy(TINY_BASE if base is None else base), "sweep": dict(sweep)}


def stored_point_paths(directory: Path) -> dict:
    """Return point id to dataset path of every visible point in a sweep directory."""
    return {path.name.removesuffix(".zarr"): path for path in (directory / POINTS_DIRECTORY).glob("*.zarr")}


def read_summary(directory: Path) -> list:
    with (directory / SUMMARY_FILE).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def hidden_files(directory: Path) -> list:
    """Return the names of hidden entries in a sweep directory and its points/, the lock file aside."""
    names = [path.name for path in directory.glob(".*") if path.name != ".sweep.lock"]
    points = directory / POINTS_DIRECTORY
    if points.is_dir():
        names.extend(path.name for path in points.glob(".*"))
    return names


def write_sweep_file(path: Path, sweep: dict, base: dict | None = None) -> Path:
    """Write a sweep document as a TOML file of quoted parameter paths and return its path."""
    lines = []
    for table, entries in (TINY_BASE if base is None else base).items():
        lines.append(f"[base.{table}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in entries.items())
    lines.append("[sweep]")
    lines.extend(f"{json.dumps(key)} = {json.dumps(value)}" for key, value in sweep.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_spectrum_file_sweep(directory: Path) -> Path:
    """Write ``data/spectrum.npy`` and ``sweep.toml``, which names it by a relative path, into ``directory``."""
    (directory / "data").mkdir(parents=True)
    np.save(directory / "data" / "spectrum.npy", np.arange(1, 31, dtype=np.float64) ** -1.5)
    base = {
        "problem": {"spectrum": "file", "spectrum_file": "data/spectrum.npy"},
        "truncation": {"kind": "exact"},
        "solver": {"t_end": 1e2, "n_out": 10},
    }
    return write_sweep_file(directory / "sweep.toml", {"problem.sigma0": [0.1, 0.2]}, base=base)


def load_point_without_timing(path: Path) -> xr.Dataset:
    dataset = xr.open_zarr(path).load()
    for name in TIMING_ATTRIBUTES:
        dataset.attrs.pop(name)
    return dataset


def assert_same_points(directory: Path, reference: Path) -> None:
    """Check that two sweep directories hold the same points with identical values, run times aside."""
    points = stored_point_paths(directory)
    reference_points = stored_point_paths(reference)
    assert sorted(points) == sorted(reference_points)
    for point_id, path in points.items():
        xr.testing.assert_identical(load_point_without_timing(path), load_point_without_timing(reference_points[point_id]))


@pytest.fixture
def local_cluster():
    """Start a two-worker Dask cluster on 127.0.0.1 for one test and shut it down afterwards."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster


# Grid expansion and validation.


def test_grid_expands_full_product():
    spec = parse_sweep(sweep_document({"problem.a": [0.5, 1.0, 1.5], "problem.seed": [0, 1]}))

    assert spec.mode == "grid"
    assert spec.parameters == ("problem.a", "problem.seed")
    assert len(spec.points) == 6
    expected = [(a, seed) for a in (0.5, 1.0, 1.5) for seed in (0, 1)]
    assert [(point.values["problem.a"], point.values["problem.seed"]) for point in spec.points] == expected
    assert [point.index for point in spec.points] == list(range(6))
    for point, (a, seed) in zip(spec.points, expected):
        assert point.config.problem.a == a
        assert point.config.problem.seed == seed
        assert point.config.problem.d == 50
        assert point.config.truncation.bins_per_decade == 4
        assert point.config.solver.t_end == 1e3


def test_zip_mode_pairs_values():
    spec = parse_sweep(
        sweep_document({"mode": "zip", "problem.a": [0.5, 1.0, 1.5], "truncation.bins_per_decade": [2, 4, 8]})
    )

    assert len(spec.points) == 3
    assert [(p.config.problem.a, p.config.truncation.bins_per_decade) for p in spec.points] == [
        (0.5, 2), (1.0, 4), (1.5, 8)
    ]


def test_zip_mode_rejects_unequal_lengths():
    with pytest.raises(SweepConfigError) as error:
        parse_sweep(sweep_document({"mode": "zip", "problem.a": [0.5, 1.0], "problem.seed": [0, 1, 2]}))
    message = str(error.value)
    assert "problem.a has 2" in message
    assert "problem.seed has 3" in message


def test_sweep_rejects_unknown_paths():
    cases = {
        "problem.alpha": "Allowed keys in [problem]",
        "model.a": "unknown parameter path",
        "problem.a.b": "unknown parameter path",
        "seed": "unknown parameter path",
    }
    for path, expected in cases.items():
        with pytest.raises(SweepConfigError) as error:
            parse_sweep(sweep_document({path: [1.0, 2.0]}))
        assert expected in str(error.value), path
        assert path in str(error.value), path


def test_invalid_point_names_point_and_field():
    document = sweep_document({"problem.a": [1.0, 2.0], "problem.sigma0": [0.1, -0.5]})

    with pytest.raises(SweepConfigError) as error:
        parse_sweep(document, source="bad.toml")

    message = str(error.value)
    assert message.startswith("bad.toml: sweep point 1 (problem.a = 1.0, problem.sigma0 = -0.5) is invalid: ")
    assert "problem.sigma0 = -0.5 is invalid" in message
    assert isinstance(error.value, ConfigError)


def test_invalid_point_type_is_reported():
    with pytest.raises(SweepConfigError) as error:
        parse_sweep(sweep_document({"truncation.kind": ["spectral_modes", 3]}))
    assert "sweep point 1 (truncation.kind = 3)" in str(error.value)
    assert "truncation.kind = 3 (int) is invalid: expected a string" in str(error.value)


def test_sweep_rejects_malformed_tables():
    cases = [
        ({"base": TINY_BASE}, "missing table [sweep]"),
        ({"base": TINY_BASE, "sweep": {}}, "lists no parameters"),
        ({"base": TINY_BASE, "sweep": {"problem.a": 1.0}}, "expected a non-empty list"),
        ({"base": TINY_BASE, "sweep": {"problem.a": []}}, "expected a non-empty list"),
        ({"base": TINY_BASE, "sweep": {"mode": "random", "problem.a": [1.0]}}, "sweep.mode = 'random' is invalid"),
        ({"base": TINY_BASE, "sweep": {"problem.a": [1.0]}, "problem": {}}, "unknown table [problem]"),
        ({"base": {**TINY_BASE, "training": {}}, "sweep": {"problem.a": [1.0]}}, "unknown table [base.training]"),
        ({"base": TINY_BASE, "sweep": {"problem.a": [1.0, 1.0]}}, "sweep points 0 and 1"),
    ]
    for document, expected in cases:
        with pytest.raises(SweepConfigError) as error:
            parse_sweep(document)
        assert expected in str(error.value)


def test_missing_required_key_can_be_swept():
    base = copy.deepcopy(TINY_BASE)
    del base["problem"]["d"]
    spec = parse_sweep(sweep_document({"problem.d": [20, 40]}, base=base))
    assert [point.config.problem.d for point in spec.points] == [20, 40]

    with pytest.raises(SweepConfigError) as error:
        parse_sweep(sweep_document({"problem.a": [1.0]}, base=base))
    assert "sweep point 0 (problem.a = 1.0) is invalid: problem.d" in str(error.value)
    assert "missing" in str(error.value)


def test_nested_sweep_tables_match_quoted_paths(tmp_path):
    quoted = tmp_path / "quoted.toml"
    quoted.write_text(
        '[base.problem]\nd = 50\na = 1.0\n[sweep]\n"problem.a" = [0.5, 1.0]\n"solver.t_end" = [1e2]\n', encoding="utf-8"
    )
    nested = tmp_path / "nested.toml"
    nested.write_text(
        "[base.problem]\nd = 50\na = 1.0\n[sweep]\nproblem.a = [0.5, 1.0]\n[sweep.solver]\nt_end = [1e2]\n",
        encoding="utf-8",
    )

    quoted_ids = [point.point_id for point in load_sweep(quoted).points]
    nested_ids = [point.point_id for point in load_sweep(nested).points]
    assert quoted_ids == nested_ids
    assert load_sweep(nested).parameters == ("problem.a", "solver.t_end")


def test_load_sweep_reports_file_problems(tmp_path):
    with pytest.raises(SweepConfigError, match="sweep file not found"):
        load_sweep(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[sweep\n", encoding="utf-8")
    with pytest.raises(SweepConfigError, match="invalid TOML"):
        load_sweep(broken)


def test_point_id_is_hash_of_canonical_config():
    spec = parse_sweep(sweep_document({"problem.a": [1.0, 1.5]}))
    point = spec.points[0]

    assert point.point_id == hashlib.sha256(point.config_json.encode("utf-8")).hexdigest()
    assert json.loads(point.config_json)["problem"]["a"] == 1.0
    assert "source" not in json.loads(point.config_json)
    assert spec.points[0].point_id != spec.points[1].point_id

    # Writing a default explicitly, or an integer for a float, gives the same configuration and id.
    explicit = copy.deepcopy(TINY_BASE)
    explicit["problem"].update(b=0, seed=0)
    explicit["solver"]["method"] = "rodas4"
    same = parse_sweep(sweep_document({"problem.a": [1, 1.5]}, base=explicit))
    assert same.points[0].point_id == point.point_id

    direct = parse_config({**copy.deepcopy(TINY_BASE), "problem": {**TINY_BASE["problem"], "a": 1.0}}, source="x.toml")
    assert config_point_id(canonical_config_json(direct)) == point.point_id


def test_point_id_handles_infinite_dimension():
    base = copy.deepcopy(TINY_BASE)
    base["problem"].update(a=1.5, init_teacher_scale=0.1)
    spec = parse_sweep(sweep_document({"problem.d": [50, math.inf]}, base=base))

    assert json.loads(spec.points[1].config_json)["problem"]["d"] == "inf"
    assert spec.points[1].config.problem.infinite
    assert spec.points[1].describe() == "problem.d = inf"


def test_example_sweep_loads():
    spec = load_sweep(EXAMPLES / "sweep_tail.toml")

    assert len(spec.points) == 12
    assert sorted({point.config.problem.a for point in spec.points}) == [0.5, 1.0, 1.5, 2.0]
    assert sorted({point.config.problem.seed for point in spec.points}) == [0, 1, 2]
    assert {point.config.problem.d for point in spec.points} == {500}
    assert {point.config.truncation.kind for point in spec.points} == {"spectral_modes"}
    assert {point.config.solver.t_end for point in spec.points} == {1e5}


def test_spectrum_file_relative_to_sweep_file(tmp_path, monkeypatch):
    sweep_directory = tmp_path / "sweeps"
    path = write_spectrum_file_sweep(sweep_directory)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    spec = load_sweep(Path("..") / "sweeps" / "sweep.toml")

    resolved = str((sweep_directory / "data" / "spectrum.npy").resolve())
    assert spec.base_directory == str(sweep_directory.resolve())
    for point in spec.points:
        assert point.document["problem"]["spectrum_file"] == resolved
        assert point.config.problem.source == resolved
        assert json.loads(point.config_json)["problem"]["source"] == resolved
    assert spec.to_dict()["base"]["problem"]["spectrum_file"] == "data/spectrum.npy"
    assert spec.to_dict()["base_directory"] == str(sweep_directory.resolve())
    assert load_sweep(path).points[0].point_id == spec.points[0].point_id


def test_invalid_sweep_runs_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SweepConfigError, match="sweep point 2"):
        run_sweep(sweep_document({"problem.a": [1.0, 2.0, -3.0]}), out, progress=False)
    assert not out.exists()


# The store, written from results computed in this process.


def test_compute_point_records_run_time_error():
    document = {
        "problem": {"d": math.inf, "a": 1.5, "init_teacher_scale": 0.1},
        "truncation": {"kind": "exact"},
        "solver": {"t_end": 1e2},
    }
    parse_config(document)  # valid as a configuration: it fails only when the exact flow is built

    result = compute_point(document)

    assert result["error"]["type"] == "ValueError"
    assert "finite dimension" in result["error"]["message"]
    assert "Traceback" in result["error"]["traceback"]
    assert "build_exact_flow" in result["error"]["traceback"]
    assert result["run_seconds"] >= 0.0
    assert "numpy" in result["versions"]


def test_store_round_trip_and_summary(tmp_path):
    spec = parse_sweep(sweep_document({"problem.a": [1.0, 2.0]}))
    results = [compute_point(point.document) for point in spec.points]

    with SweepStore(tmp_path) as store:
        store.write_manifest(spec, METADATA)
        records = [store.write_point(point, result, METADATA) for point, result in zip(spec.points, results)]
        store.write_summary(spec, records)
        read_back = [store.read_record(point) for point in spec.points]

    for record, stored, result in zip(records, read_back, results):
        assert stored.reused
        assert stored.status == record.status == "SUCCESS"
        assert stored.escape_time == record.escape_time == result["phases"]["escape_time"]
        assert stored.final_loss == record.final_loss == float(result["loss"][-1])

    dataset = xr.open_zarr(store.point_path(spec.points[1].point_id)).load()
    np.testing.assert_array_equal(dataset["t"].values, results[1]["t"])
    np.testing.assert_array_equal(dataset["m1"].values, results[1]["m1"])
    assert dataset.attrs["config"] == spec.points[1].config_json
    assert dataset.attrs["parameters"] == {"problem.a": 2.0}
    assert dataset.attrs["git_revision"] == "0" * 40
    assert dataset.attrs["stats"] == results[1]["stats"]
    assert dataset.attrs["phase_report"] == results[1]["phases"]

    rows = read_summary(tmp_path)
    assert [row["problem.a"] for row in rows] == ["1.0", "2.0"]
    assert [row["point_id"] for row in rows] == [point.point_id for point in spec.points]
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert [item["point_id"] for item in manifest["points"]] == [point.point_id for point in spec.points]


def test_store_point_of_general_model(tmp_path):
    base = {**copy.deepcopy(TINY_BASE), "model": {"student": "tanh(z)", "teacher": "tanh(z)"}}
    spec = parse_sweep(sweep_document({"problem.a": [1.0]}, base=base))
    point = spec.points[0]
    result = compute_point(point.document)
    assert result["loss_tail_prediction"] is None

    with SweepStore(tmp_path) as store:
        record = store.write_point(point, result, METADATA)
        stored = store.read_record(point)

    assert record.status == "SUCCESS"
    assert stored.status == "SUCCESS"
    dataset = xr.open_zarr(store.point_path(point.point_id)).load()
    prediction = dataset["loss_tail_prediction"]
    assert prediction.dims == ("t",)
    assert prediction.size == dataset.sizes["t"] == len(result["t"]) > 0
    assert np.isnan(prediction.values).all()
    assert prediction.attrs["comment"] == TAIL_PREDICTION_MISSING
    np.testing.assert_array_equal(dataset["loss"].values, result["loss"])


def test_store_write_failures_name_path(tmp_path):
    spec = parse_sweep(sweep_document({"problem.a": [1.0]}))
    point = spec.points[0]
    result = compute_point(point.document)

    with SweepStore(tmp_path) as store:
        for name in (MANIFEST_FILE, SUMMARY_FILE):
            (tmp_path / name).mkdir()
        with pytest.raises(SweepStoreError, match=re.escape(f"failed to write {tmp_path / MANIFEST_FILE}: ")):
            store.write_manifest(spec, METADATA)
        with pytest.raises(SweepStoreError, match=re.escape(f"failed to write {tmp_path / SUMMARY_FILE}: ")):
            store.write_summary(spec, [])
        assert hidden_files(tmp_path) == []

        # A file in place of points/ makes the dataset impossible to write.
        (tmp_path / POINTS_DIRECTORY).rmdir()
        (tmp_path / POINTS_DIRECTORY).write_text("", encoding="utf-8")
        with pytest.raises(SweepStoreError, match=re.escape(f"failed to write the dataset of point 0 to {store.point_path(point.point_id)}")):
            store.write_point(point, result, METADATA)
    assert hidden_files(tmp_path) == []


def test_store_rejects_different_sweep(tmp_path):
    spec = parse_sweep(sweep_document({"problem.a": [1.0, 2.0]}), source="first.toml")
    with SweepStore(tmp_path) as store:
        store.check_manifest(spec)
        store.write_manifest(spec, METADATA)
        store.check_manifest(spec)

        # The same points written another way, from another file, count as the same sweep.
        store.check_manifest(parse_sweep(sweep_document({"problem.a": [1, 2]}), source="elsewhere/same.toml"))

        cases = {
            "other values": (sweep_document({"problem.a": [1.0, 3.0]}), "(2 stored, 2 requested, 1 requested points not stored)"),
            "fewer points": (sweep_document({"problem.a": [1.0]}), "(2 stored, 1 requested, 0 requested points not stored)"),
            "other order": (sweep_document({"problem.a": [2.0, 1.0]}), "(2 stored, 2 requested, 0 requested points not stored)"),
            "other parameter": (sweep_document({"problem.seed": [0, 1]}), "it sweeps problem.a and second.toml sweeps problem.seed"),
        }
        for case, (document, expected) in cases.items():
            with pytest.raises(SweepStoreError) as error:
                store.check_manifest(parse_sweep(document, source="second.toml"))
            message = str(error.value)
            assert message.startswith(f"{tmp_path} contains a different sweep, from first.toml: "), case
            assert expected in message, case
            assert f"choose another output directory (--out) or remove {tmp_path}" in message, case

        (tmp_path / MANIFEST_FILE).write_text("[]", encoding="utf-8")
        with pytest.raises(SweepStoreError, match="is not a sweep manifest"):
            store.check_manifest(spec)
        (tmp_path / MANIFEST_FILE).unlink()
        (tmp_path / MANIFEST_FILE).mkdir()
        with pytest.raises(SweepStoreError, match=re.escape(f"failed to read the sweep manifest {tmp_path / MANIFEST_FILE}")):
            store.check_manifest(spec)


def test_store_write_is_atomic(tmp_path, monkeypatch):
    spec = parse_sweep(sweep_document({"problem.a": [1.0]}))
    point = spec.points[0]
    result = compute_point(point.document)
    original_to_zarr = xr.Dataset.to_zarr

    def write_then_fail(self, store, *args, **kwargs):
        original_to_zarr(self, store, *args, **kwargs)
        raise OSError("disk full")

    with SweepStore(tmp_path) as store:
        monkeypatch.setattr(xr.Dataset, "to_zarr", write_then_fail)
        with pytest.raises(SweepStoreError, match="disk full"):
            store.write_point(point, result, METADATA)
        monkeypatch.setattr(xr.Dataset, "to_zarr", original_to_zarr)

        assert not store.point_path(point.point_id).exists()
        assert list((tmp_path / POINTS_DIRECTORY).iterdir()) == []
        assert store.read_record(point) is None


def test_store_removes_leftovers_of_killed_writer(tmp_path):
    spec = parse_sweep(sweep_document({"problem.a": [1.0]}))
    point = spec.points[0]
    leftover = tmp_path / POINTS_DIRECTORY / f".{point.point_id}.zarr.tmp-123456789abc"
    leftover.mkdir(parents=True)
    (leftover / ".zgroup").write_text("{}", encoding="utf-8")
    summary_leftover = tmp_path / f".{SUMMARY_FILE}.abc.tmp"
    summary_leftover.write_text("point\n", encoding="utf-8")

    with SweepStore(tmp_path) as store:
        assert store.read_record(point) is None
    assert not leftover.exists()
    assert not summary_leftover.exists()


def test_store_rejects_second_writer(tmp_path):
    with SweepStore(tmp_path):
        with pytest.raises(SweepStoreError, match="another sweep is writing"):
            with SweepStore(tmp_path):
                pass
    with SweepStore(tmp_path):
        pass


def test_store_readable_without_hierarchy(tmp_path):
    spec = parse_sweep(
        sweep_document(
            {"mode": "zip", "problem.d": [50, math.inf], "truncation.kind": ["spectral_modes", "exact"]},
            base={**TINY_BASE, "problem": {**TINY_BASE["problem"], "a": 1.5, "init_teacher_scale": 0.1}},
        )
    )
    with SweepStore(tmp_path) as store:
        store.write_manifest(spec, METADATA)
        records = [store.write_point(point, compute_point(point.document), METADATA) for point in spec.points]
        store.write_summary(spec, records)

    reader = textwrap.dedent(
        """
        import csv, hashlib, json, pathlib, sys
        import xarray, zarr
        directory = pathlib.Path(sys.argv[1])
        manifest = json.loads((directory / "sweep.json").read_text())
        statuses = []
        for point in manifest["points"]:
            path = directory / "points" / (point["point_id"] + ".zarr")
            dataset = xarray.open_zarr(path).load()
            group = zarr.open_group(str(path), mode="r")
            config = dataset.attrs["config"]
            assert hashlib.sha256(config.encode()).hexdigest() == point["point_id"]
            assert group.attrs["point_id"] == point["point_id"]
            assert dataset["loss"].dims == ("t",)
            assert dataset.sizes["t"] == group["m1"].shape[0]
            statuses.append(dataset.attrs["status"])
        rows = list(csv.DictReader(open(directory / "summary.csv", newline="")))
        assert [row["status"] for row in rows] == statuses
        assert not any(name == "hierarchy" or name.startswith("hierarchy.") for name in sys.modules)
        print(json.dumps(statuses))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", reader, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == ["SUCCESS", STATUS_ERROR]


def test_git_revision_of_repository():
    revision = git_revision()
    completed = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        assert revision == "unknown"
    else:
        assert revision == completed.stdout.strip()
    assert git_revision(Path("/")) == "unknown"


# Sweeps on Dask clusters.


def loopback_listen_addresses() -> list:
    """Return the listening addresses of this process and its children (the cluster's worker processes)."""
    addresses = []
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        addresses.extend(conn.laddr.ip for conn in connections if conn.status == psutil.CONN_LISTEN)
    return addresses


@pytest.mark.slow
def test_local_cluster_sweep_of_54_points(tmp_path, capfd):
    document = sweep_document(
        {"problem.a": [0.5, 0.75, 1.0, 1.25, 1.5, 2.0], "problem.seed": list(range(9))}
    )
    listen_addresses = []

    def check_sockets(record):
        if not listen_addresses:
            listen_addresses.extend(loopback_listen_addresses())

    result = run_sweep(document, tmp_path / "out", progress=True, on_point_stored=check_sockets)

    assert len(result.spec.points) == 54
    assert result.computed == 54
    assert result.reused == 0
    assert result.ok
    assert [record.status for record in result.records] == ["SUCCESS"] * 54
    assert listen_addresses, "no listening sockets found while the cluster ran"
    assert set(listen_addresses) == {"127.0.0.1"}

    points = stored_point_paths(tmp_path / "out")
    assert sorted(points) == sorted(point.point_id for point in result.spec.points)
    assert [path.name for path in (tmp_path / "out" / POINTS_DIRECTORY).iterdir() if path.name.startswith(".")] == []
    rows = read_summary(tmp_path / "out")
    assert len(rows) == 54
    assert list(rows[0]) == [
        "point", "point_id", "problem.a", "problem.seed",
        "status", "escape_time", "convergence_time", "final_loss", "run_seconds", "message",
    ]
    assert all(float(row["escape_time"]) > 0.0 for row in rows)
    assert "54/54" in capfd.readouterr().err


def test_sweep_runs_on_scheduler_address(tmp_path, local_cluster, monkeypatch, capfd):
    def reject_local_cluster(*args, **kwargs):
        raise AssertionError("run_sweep started its own cluster although it was given a scheduler address")

    monkeypatch.setattr(runner_module, "LocalCluster", reject_local_cluster)
    document = sweep_document({"problem.a": [1.0, 1.5], "problem.seed": [0, 1]})

    result = run_sweep(document, tmp_path / "out", scheduler_address=local_cluster.scheduler_address, progress=True)

    assert result.computed == 4
    assert result.ok
    assert "hierarchy-sweep" in local_cluster.scheduler.task_prefixes
    assert "4/4" in capfd.readouterr().err


def test_unreachable_scheduler_is_an_error(tmp_path):
    with pytest.raises(SweepRunError, match="failed to connect to the Dask scheduler at tcp://127.0.0.1:9"):
        run_sweep(
            sweep_document({"problem.a": [1.0]}), tmp_path / "out",
            scheduler_address="tcp://127.0.0.1:9", progress=False, connect_timeout=2.0,
        )


def test_failing_point_is_recorded(tmp_path, local_cluster):
    base = copy.deepcopy(TINY_BASE)
    base["problem"].update(a=1.5, init_teacher_scale=0.1)
    # Point 1, the exact flow of d = inf, is a valid configuration that raises only when the
    # truncation is built. Point 2, the moment hierarchy K = 1 with the zero closure, diverges,
    # which is a result with a status and not a failure.
    document = sweep_document(
        {
            "mode": "zip",
            "problem.d": [50, math.inf, 50],
            "truncation.kind": ["spectral_modes", "exact", "moments"],
            "truncation.order": [4, 4, 1],
        },
        base=base,
    )
    address = local_cluster.scheduler_address

    result = run_sweep(document, tmp_path / "out", scheduler_address=address, progress=False)

    assert [record.status for record in result.records] == ["SUCCESS", STATUS_ERROR, "DIVERGED"]
    assert not result.ok
    assert [record.index for record in result.failed] == [1]
    assert [record.index for record in result.unsuccessful] == [1, 2]
    assert result.failed[0].error_type == "ValueError"
    points = stored_point_paths(tmp_path / "out")
    failed = xr.open_zarr(points[result.spec.points[1].point_id])
    assert failed.attrs["status"] == STATUS_ERROR
    assert failed.attrs["error_type"] == "ValueError"
    assert "finite dimension" in failed.attrs["error_message"]
    assert "build_exact_flow" in failed.attrs["error_traceback"]
    assert failed.sizes["t"] == 0
    diverged = xr.open_zarr(points[result.spec.points[2].point_id])
    assert diverged.attrs["success"] is False
    assert 0 < diverged.sizes["t"] < 40
    assert diverged.attrs["t_last_output"] < 1e3
    rows = read_summary(tmp_path / "out")
    assert [row["status"] for row in rows] == ["SUCCESS", STATUS_ERROR, "DIVERGED"]
    assert rows[1]["message"].startswith("ValueError: ")
    assert rows[2]["message"].startswith("diverged at t = ")

    # A rerun keeps the two results and computes the failed point again.
    rerun = run_sweep(document, tmp_path / "out", scheduler_address=address, progress=False)
    assert rerun.reused == 2
    assert rerun.computed == 1
    assert [record.index for record in rerun.failed] == [1]


def test_general_model_sweep_is_stored(tmp_path, local_cluster):
    base = {**copy.deepcopy(TINY_BASE), "model": {"student": "tanh(z)", "teacher": "tanh(z)"}}
    document = sweep_document({"problem.a": [1.0, 1.5]}, base=base)
    address = local_cluster.scheduler_address

    result = run_sweep(document, tmp_path / "out", scheduler_address=address, progress=False)

    assert [record.status for record in result.records] == ["SUCCESS", "SUCCESS"]
    points = stored_point_paths(tmp_path / "out")
    assert sorted(points) == sorted(point.point_id for point in result.spec.points)
    for path in points.values():
        dataset = xr.open_zarr(path).load()
        assert dataset["loss_tail_prediction"].dims == ("t",)
        assert np.isnan(dataset["loss_tail_prediction"].values).all()
        assert np.isfinite(dataset["loss"].values).all()
        assert dataset.attrs["phase_report"]["predictions_note"]
    assert [row["status"] for row in read_summary(tmp_path / "out")] == ["SUCCESS", "SUCCESS"]

    rerun = run_sweep(document, tmp_path / "out", scheduler_address=address, progress=False)
    assert (rerun.reused, rerun.computed) == (2, 0)


def test_spectrum_file_sweep_resumes_elsewhere(tmp_path, local_cluster, monkeypatch):
    sweep_directory = tmp_path / "sweeps"
    write_spectrum_file_sweep(sweep_directory)
    address = local_cluster.scheduler_address
    first = tmp_path / "first"
    first.mkdir()
    monkeypatch.chdir(first)

    result = run_sweep(Path("..") / "sweeps" / "sweep.toml", tmp_path / "out", scheduler_address=address, progress=False)

    assert result.ok
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["base_directory"] == str(sweep_directory.resolve())
    for path in stored_point_paths(tmp_path / "out").values():
        config = json.loads(xr.open_zarr(path).attrs["config"])
        assert config["problem"]["source"] == str((sweep_directory / "data" / "spectrum.npy").resolve())

    monkeypatch.chdir(sweep_directory)
    rerun = run_sweep("sweep.toml", tmp_path / "out", scheduler_address=address, progress=False)
    assert (rerun.reused, rerun.computed) == (2, 0)


def test_different_sweep_is_rejected(tmp_path, local_cluster, capsys):
    address = local_cluster.scheduler_address
    out = tmp_path / "out"
    first = write_sweep_file(tmp_path / "first.toml", {"problem.a": [1.0, 2.0]})
    second = write_sweep_file(tmp_path / "second.toml", {"problem.a": [1.0, 3.0]})
    run_sweep(first, out, scheduler_address=address, progress=False)
    manifest = (out / MANIFEST_FILE).read_text(encoding="utf-8")
    summary = (out / SUMMARY_FILE).read_text(encoding="utf-8")

    with pytest.raises(SweepStoreError, match=re.escape(f"{out} contains a different sweep, from {first}")):
        run_sweep(second, out, scheduler_address=address, progress=False)
    assert main(["sweep", str(second), "--out", str(out), "--scheduler", address, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"hierarchy: error: {out} contains a different sweep")
    assert f"choose another output directory (--out) or remove {out}" in error

    assert (out / MANIFEST_FILE).read_text(encoding="utf-8") == manifest
    assert (out / SUMMARY_FILE).read_text(encoding="utf-8") == summary
    assert len(stored_point_paths(out)) == 2
    rerun = run_sweep(first, out, scheduler_address=address, progress=False)
    assert (rerun.reused, rerun.computed) == (2, 0)


def test_sweep_command_exits_1_on_failure(tmp_path, local_cluster, capsys):
    address = local_cluster.scheduler_address
    # The moment hierarchy K = 1 with the zero closure diverges for every a.
    base = {**copy.deepcopy(TINY_BASE), "truncation": {"kind": "moments", "order": 1}}
    diverging = write_sweep_file(tmp_path / "diverging.toml", {"problem.a": [1.0, 2.0]}, base=base)
    succeeding = write_sweep_file(tmp_path / "succeeding.toml", {"problem.a": [1.0, 2.0]})

    assert main(["sweep", str(diverging), "--out", str(tmp_path / "diverged"), "--scheduler", address, "--quiet"]) == 1
    output = capsys.readouterr().out
    assert "statuses:   DIVERGED 2" in output
    assert "failed:     point 0 (" in output
    assert "failed:     point 1 (" in output
    assert [row["status"] for row in read_summary(tmp_path / "diverged")] == ["DIVERGED", "DIVERGED"]
    assert len(stored_point_paths(tmp_path / "diverged")) == 2

    assert main(["sweep", str(succeeding), "--out", str(tmp_path / "succeeded"), "--scheduler", address, "--quiet"]) == 0
    assert "failed:" not in capsys.readouterr().out


def test_sweep_command_reports_write_failure(tmp_path, capsys):
    config = write_sweep_file(tmp_path / "sweep.toml", {"problem.a": [1.0]})
    out = tmp_path / "out"
    (out / SUMMARY_FILE).mkdir(parents=True)

    assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 2

    assert capsys.readouterr().err == f"hierarchy: error: failed to write {out / SUMMARY_FILE}: Is a directory\n"
    assert hidden_files(out) == []


def test_sweep_workers_are_bounded(tmp_path, capsys):
    maximum = max_local_workers()
    for workers in (0, maximum + 1, 10**6):
        assert main(["sweep", str(tmp_path / "missing.toml"), "--out", str(tmp_path), "--workers", str(workers)]) == 2
        assert f"--workers = {workers} is invalid: choose from 1 to {maximum}" in capsys.readouterr().err
        with pytest.raises(ValueError, match=f"n_workers = {workers} is invalid: it must be an integer from 1 to {maximum}"):
            run_sweep(sweep_document({"problem.a": [1.0]}), tmp_path / "out", n_workers=workers, progress=False)
    assert not (tmp_path / "out").exists()


class AbortSweep(Exception):
    """Raised by a test hook to stop a sweep after some points."""


def test_interrupted_sweep_resumes_identically(tmp_path, local_cluster):
    document = sweep_document({"problem.a": [0.75, 1.25, 1.75], "problem.seed": [0, 1, 2, 3]})
    address = local_cluster.scheduler_address
    reference = tmp_path / "reference"
    run_sweep(document, reference, scheduler_address=address, progress=False)

    interrupted = tmp_path / "interrupted"
    stored = []

    def abort_after_five(record):
        stored.append(record.point_id)
        if len(stored) == 5:
            raise AbortSweep

    with pytest.raises(AbortSweep):
        run_sweep(document, interrupted, scheduler_address=address, progress=False, on_point_stored=abort_after_five)
    before = {point_id: path.stat() for point_id, path in stored_point_paths(interrupted).items()}
    assert sorted(before) == sorted(stored)
    assert len(read_summary(interrupted)) == 5

    resumed = run_sweep(document, interrupted, scheduler_address=address, progress=False)

    assert resumed.reused == 5
    assert resumed.computed == 7
    for point_id, status in before.items():
        after = (interrupted / POINTS_DIRECTORY / f"{point_id}.zarr").stat()
        assert (after.st_ino, after.st_mtime_ns) == (status.st_ino, status.st_mtime_ns), point_id
    assert_same_points(interrupted, reference)
    summary = [{k: v for k, v in row.items() if k != "run_seconds"} for row in read_summary(interrupted)]
    reference_summary = [{k: v for k, v in row.items() if k != "run_seconds"} for row in read_summary(reference)]
    assert summary == reference_summary


KILLED_SWEEP_SCRIPT = """
import json, os, signal, sys
from hierarchy.sweeps import run_sweep

document = json.loads(sys.argv[1])
stored = []

def kill_after_four(record):
    stored.append(record.point_id)
    if len(stored) == 4:
        os.kill(os.getpid(), signal.SIGKILL)

run_sweep(document, sys.argv[2], scheduler_address=sys.argv[3], progress=False, on_point_stored=kill_after_four)
"""


@pytest.mark.slow
def test_killed_sweep_process_resumes(tmp_path, local_cluster):
    document = sweep_document({"problem.a": [0.5, 1.0, 1.5], "problem.seed": [0, 1, 2]})
    address = local_cluster.scheduler_address
    out = tmp_path / "out"

    completed = subprocess.run(
        [sys.executable, "-c", KILLED_SWEEP_SCRIPT, json.dumps(document), str(out), address],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    assert len(stored_point_paths(out)) == 4
    assert len(read_summary(out)) == 4

    resumed = run_sweep(document, out, scheduler_address=address, progress=False)
    assert resumed.reused == 4
    assert resumed.computed == 5
    assert resumed.ok

    reference = tmp_path / "reference"
    run_sweep(document, reference, scheduler_address=address, progress=False)
    assert_same_points(out, reference)
    assert len(read_summary(out)) == 9
