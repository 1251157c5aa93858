"""Tests of reading and validating TOML run configurations."""

import dataclasses
from pathlib import Path

import pytest

from hierarchy.config import FIELD_TYPES, ConfigError, RunConfig, load_config, parse_config
from hierarchy.pipeline import SolverOptions, TruncationOptions
from hierarchy.spectrum import PowerLawSpec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error_message(tmp_path, text):
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_path, text))
    return str(raised.value)


def test_field_tables_match_dataclasses():
    spectrum_keys = {
        "spectrum", "spectrum_file", "spectrum_kind", "normalisation", "dataset", "patch_size", "n_patches",
        "dataset_seed", "fit_first", "fit_last",
    }
    assert set(FIELD_TYPES["problem"]) == {field.name for field in dataclasses.fields(PowerLawSpec)} | spectrum_keys
    assert set(FIELD_TYPES["truncation"]) == {field.name for field in dataclasses.fields(TruncationOptions)}
    assert set(FIELD_TYPES["solver"]) == {field.name for field in dataclasses.fields(SolverOptions)}


def test_power_law_example():
    config = load_config(EXAMPLES / "power_law.toml")

    assert config.problem == PowerLawSpec(d=2000, a=1.5, b=0.0, sigma0=0.1, seed=0)
    assert config.truncation.kind == "spectral_modes"
    assert config.truncation.bins_per_decade == 8
    assert config.truncation.rule_order == 6
    assert config.truncation.exact_top == 8
    assert config.solver.t_first == 1e-2
    assert config.solver.t_end == 1e7
    assert config.solver.n_out == 240
    assert config.solver.rtol == 1e-10
    assert config.solver.atol == 1e-14
    assert config.source == str(EXAMPLES / "power_law.toml")


def test_zero_closure_example():
    config = load_config(EXAMPLES / "moment_zero_closure.toml")

    assert config.truncation.kind == "moments"
    assert config.truncation.order == 1
    assert config.truncation.closure == "zero"


def test_defaults_fill_missing_tables(tmp_path):
    config = load_config(_write(tmp_path, "[problem]\nd = 100\na = 2\n"))

    assert isinstance(config, RunConfig)
    assert config.problem == PowerLawSpec(d=100, a=2.0)
    assert isinstance(config.problem.a, float)
    assert config.truncation == TruncationOptions()
    assert config.solver == SolverOptions()


def test_all_keys_accepted(tmp_path):
    text = """
[problem]
d = 300
a = 1.25
b = 0.5
sigma0 = 0.2
seed = 7

[truncation]
kind = "moments"
bins_per_decade = 4
rule_order = 3
exact_top = 2
exact_bottom = 5
order = 3
closure = "copy"

[solver]
t_first = 0.5
t_end = 1e4
n_out = 50
method = "rodas4"
rtol = 1e-6
atol = 1e-9
max_steps = 1000
max_wall_seconds = 30
"""
    config = load_config(_write(tmp_path, text))

    assert config.problem == PowerLawSpec(d=300, a=1.25, b=0.5, sigma0=0.2, seed=7)
    assert config.truncation == TruncationOptions("moments", 4, 3, 2, 5, 3, "copy")
    assert config.solver == SolverOptions(0.5, 1e4, 50, "rodas4", 1e-6, 1e-9, 1000, 30.0)


def test_to_dict_round_trips(tmp_path):
    config = load_config(EXAMPLES / "power_law.toml")
    tables = config.to_dict()
    source = tables.pop("source")
    tables["solver"] = {key: value for key, value in tables["solver"].items() if value is not None}

    assert source == config.source
    assert parse_config(tables) == dataclasses.replace(config, source=None)


def test_unknown_key_is_named(tmp_path):
    message = _error_message(tmp_path, "[problem]\nd = 10\na = 1\ndimension = 5\n")

    assert "problem.dimension" in message
    assert "d, a, b, sigma0, seed" in message


def test_unknown_table_is_named(tmp_path):
    message = _error_message(tmp_path, "[problem]\nd = 10\na = 1\n[plots]\ndpi = 100\n")

    assert "[plots]" in message
    assert "problem, truncation, solver" in message


def test_top_level_key_is_rejected(tmp_path):
    message = _error_message(tmp_path, "d = 10\n[problem]\nd = 10\na = 1\n")

    assert "unknown table [d]" in message


def test_table_given_as_value(tmp_path):
    message = _error_message(tmp_path, "problem = 3\n")

    assert "problem must be a table" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[problem]\nd = -3\na = 1\n", "problem.d = -3 is invalid"),
        ("[problem]\nd = 10\na = 11\n", "problem.a = 11.0 is invalid"),
        ("[problem]\nd = 10\na = 1\nsigma0 = 0\n", "problem.sigma0 = 0.0 is invalid"),
        ("[problem]\nd = 10\na = 1\nseed = -1\n", "problem.seed = -1 is invalid"),
        ("[problem]\nd = 10\na = nan\n", "problem.a = nan is invalid"),
        ("[problem]\nd = 10\na = 1\n[truncation]\nkind = \"dense\"\n", "truncation.kind = 'dense' is not available"),
        ("[problem]\nd = 10\na = 1\n[truncation]\nbins_per_decade = 0\n", "truncation.bins_per_decade = 0 is invalid"),
        ("[problem]\nd = 10\na = 1\n[truncation]\nclosure = \"linear\"\n", "truncation.closure = 'linear' is invalid"),
        ("[problem]\nd = 10\na = 1\n[truncation]\norder = 0\n", "truncation.order = 0 is invalid"),
        ("[problem]\nd = 10\na = 1\n[solver]\nt_first = 0\n", "solver.t_first = 0.0 is invalid"),
        ("[problem]\nd = 10\na = 1\n[solver]\nt_first = 10\nt_end = 1\n", "solver.t_end = 1.0 is invalid"),
        ("[problem]\nd = 10\na = 1\n[solver]\nn_out = 1\n", "solver.n_out = 1 is invalid"),
        ("[problem]\nd = 10\na = 1\n[solver]\nmethod = \"euler\"\n", "solver.method = 'euler' is invalid"),
        ("[problem]\nd = 10\na = 1\n[solver]\nrtol = 1.5\n", "solver.rtol = 1.5 is invalid"),
        ("[problem]\nd = 10\na = 1\n[solver]\natol = -1e-9\n", "solver.atol = -1e-09 is invalid"),
        ("[problem]\nd = 10\na = 1\n[solver]\nmax_steps = 0\n", "solver.max_steps = 0 is invalid"),
        ("[problem]\nd = 10\na = 1\n[solver]\nmax_wall_seconds = 0\n", "solver.max_wall_seconds = 0.0 is invalid"),
    ],
)
def test_out_of_range_value_names_field(tmp_path, text, expected):
    message = _error_message(tmp_path, text)

    assert expected in message
    assert str(tmp_path / "run.toml") in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[problem]\nd = \"big\"\na = 1\n", "problem.d = 'big' (str) is invalid: expected an integer"),
        ("[problem]\nd = 2.5\na = 1\n", "problem.d = 2.5 (float) is invalid: expected an integer"),
        ("[problem]\nd = 10\na = true\n", "problem.a = True (bool) is invalid: expected a number"),
        ("[problem]\nd = 10\na = [1, 2]\n", "problem.a = [1, 2] (list) is invalid: expected a number"),
        ("[problem]\nd = 10\na = 1\n[truncation]\nkind = 3\n", "truncation.kind = 3 (int) is invalid: expected a string"),
        ("[problem]\nd = 10\na = 1\n[solver]\nn_out = 10.0\n", "solver.n_out = 10.0 (float) is invalid: expected an integer"),
    ],
)
def test_wrong_type_names_field(tmp_path, text, expected):
    assert expected in _error_message(tmp_path, text)


def test_missing_problem_table(tmp_path):
    message = _error_message(tmp_path, "[solver]\nt_end = 10.0\n")

    assert "missing table [problem]" in message


def test_missing_required_key(tmp_path):
    message = _error_message(tmp_path, "[problem]\nd = 10\n")

    assert "problem.a = (missing) is invalid" in message


def test_spectrum_from_file_relative_to_config(tmp_path):
    (tmp_path / "eigenvalues.txt").write_text("4\n2\n1\n")
    path = tmp_path / "run.toml"
    path.write_text('[problem]\nspectrum = "file"\nspectrum_file = "eigenvalues.txt"\nnormalisation = "top"\n')
    config = load_config(path)
    assert config.problem.eigenvalues == (1.0, 0.5, 0.25)
    assert config.problem.build().d == 3


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[problem]\nspectrum = "file"\n', "problem.spectrum_file = (missing) is invalid"),
        ('[problem]\nspectrum = "file"\nspectrum_file = "absent.npy"\n', "not found"),
        ('[problem]\nspectrum = "dataset"\ndataset = "mnist"\n', "problem.dataset = 'mnist' is invalid"),
        ('[problem]\nspectrum = "dataset"\ndataset = "digits"\nd = 10\n', "problem.d = 10 does not apply"),
        ('[problem]\nspectrum = "dataset"\ndataset = "digits"\npatch_size = 4\n', "only image_patches"),
        ('[problem]\nspectrum = "sphere"\n', "problem.spectrum = 'sphere' is not available"),
    ],
)
def test_measured_spectrum_errors(tmp_path, text, expected):
    assert expected in _error_message(tmp_path, text)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError, match="config file not found") as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_invalid_toml_syntax(tmp_path):
    message = _error_message(tmp_path, "[problem]\nd = = 10\n")

    assert "invalid TOML" in message
    assert "line 2" in message


def test_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("[problem]\n# caf\u00e9\nd = 10\na = 1\n".encode("latin-1"))

    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_model_table_builds_single_index_model(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[problem]\nd = 20\na = 1.0\n[model]\nstudent = "tanh(z)"\nteacher = "tanh(z)"\nhermite_order = 7\n')
    config = load_config(path)
    assert config.model.name != "phase_retrieval"
    assert config.model_table == {"student": "tanh(z)", "teacher": "tanh(z)", "hermite_order": 7}
    assert config.to_dict()["model"]["hermite_order"] == 7


def test_absent_model_table_is_phase_retrieval(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[problem]\nd = 20\na = 1.0\n")
    assert load_config(path).model.name == "phase_retrieval"


@pytest.mark.parametrize(
    "model, expected",
    [
        ('student = "__import__(\'os\')"', "model.student"),
        ('student = "z.real"', "model.student"),
        ("ridge = -1.0", "model.ridge"),
        ('activation = "z"', "unknown key model.activation"),
    ],
)
def test_model_table_errors(tmp_path, model, expected):
    assert expected in _error_message(tmp_path, f"[problem]\nd = 20\na = 1.0\n[model]\n{model}\n")
