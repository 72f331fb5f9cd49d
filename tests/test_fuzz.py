"""Property-based tests: random malformed configs and command lines never end in a traceback.
Every outcome is a valid Config / exit status 0, or a PhysdiffError / exit status 2 with one line."""

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physdiff import config as cfgmod
from physdiff.cli import main
from physdiff.config import SECTIONS, config_from_dict, load_config
from physdiff.errors import PhysdiffError

KNOWN_KEYS = {s: [f.name for f in cfgmod.fields(cls)] for s, cls in SECTIONS.items()}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["digits", "spiral", "cosine", "eps", "fp16", "auto"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
keys = st.one_of(st.sampled_from([k for ks in KNOWN_KEYS.values() for k in ks]), st.text(max_size=8))
sections = st.one_of(st.sampled_from(list(SECTIONS)), st.text(max_size=8))
raw_configs = st.one_of(values, st.dictionaries(sections, st.one_of(values, st.dictionaries(keys, values,
                                                                                            max_size=4)), max_size=4))


@settings(max_examples=300, deadline=None)
@given(raw_configs)
def test_config_loader_only_raises_physdiff_errors(raw):
    try:
        cfg = config_from_dict(raw)
    except PhysdiffError as exc:
        assert "\n" not in str(exc)
    else:
        assert cfg == config_from_dict(cfg.to_dict())  # a valid config round-trips


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=string.printable, max_size=300))
def test_toml_files_of_any_text(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except PhysdiffError as exc:
        msg = str(exc)
        # one line that says what is wrong: the file, a section, a key or the version it names
        assert "\n" not in msg and ("config" in msg or "." in msg.split("=")[0] or "[" in msg), msg


tokens = st.one_of(
    st.sampled_from(["--steps", "--n", "--seed", "--sampler", "--dataset", "--lr", "--batch-size", "--class",
                     "--guidance", "--eta", "--spacing", "--precision", "--device", "--config", "--data",
                     "--weights", "--out", "--resume", "--overwrite", "--json", "--nll", "--timesteps", "--folder",
                     "-1", "0", "nan", "inf", "1e9", "x", "ddim", "spiral", "digits", "fp16", "bad.toml", "none.npy",
                     "cuda", "--", "-"]),
    st.text(alphabet=string.ascii_letters + string.digits + "-._/=", max_size=10))


@pytest.fixture(scope="module")
def stub_training():
    """Make any training that a random command line starts instant: the loop is a no-op."""
    mp = pytest.MonkeyPatch()
    from physdiff.training import Trainer

    mp.setattr(Trainer, "train", lambda self, progress=None: {})
    yield
    mp.undo()


options = st.sampled_from(["--steps", "--n", "--seed", "--sampler", "--dataset", "--lr", "--batch-size", "--class",
                           "--guidance", "--eta", "--spacing", "--precision", "--timesteps", "--schedule",
                           "--prediction", "--width", "--n-train", "--label-dropout", "--loss", "--variance"])
option_values = st.one_of(st.sampled_from(["1", "2", "3", "0", "-1", "0.5", "nan", "1e400", "ddim", "spiral", "moons",
                                           "digits", "fp16", "bf16", "cosine", "v", "x0", "mu", "beta_tilde",
                                           "trailing", "", " "]), st.text(max_size=5))
pairs = st.lists(st.tuples(options, option_values), max_size=5).map(lambda ps: [x for p in ps for x in p])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["train", "sample", "evaluate", "plot", "encode", "data", "demo", "bogus"]),
       argv=st.one_of(st.lists(tokens, max_size=8), pairs))
def test_cli_never_raises(tmp_path_factory, stub_training, capsys, command, argv):
    tmp = tmp_path_factory.mktemp("fuzz")
    argv = [a.replace("bad.toml", str(tmp / "bad.toml")) for a in argv]
    (tmp / "bad.toml").write_text("[train]\nstepz = 3\n")
    if command in ("train", "demo"):
        argv += ["--out", str(tmp / "out")]  # never write outside tmp
    if command in ("sample", "evaluate", "plot", "encode"):
        argv = [str(tmp / "no-run"), *argv]
    if command == "demo":
        return  # the demo trains three real models; its options are covered by argparse types
    try:
        code = main([command, *argv])
    except SystemExit as exc:  # --help
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("physdiff: error: ")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real (tiny) trained run, so options are fuzzed against something that loads."""
    out = tmp_path_factory.mktemp("fuzzrun") / "run"
    assert main(["train", "--dataset", "moons", "--steps", "3", "--timesteps", "30", "--width", "8",
                 "--n-train", "64", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    return out


run_options = st.sampled_from(["--n", "--seed", "--sampler", "--steps", "--eta", "--spacing", "--method", "--rtol",
                               "--atol", "--guidance", "--class", "--weights", "--batch-size", "--snapshots",
                               "--log-prob", "--trajectory", "--json", "--nll-n"])
run_values = st.one_of(st.sampled_from(["1", "2", "7", "30", "31", "0", "-1", "0.5", "nan", "1e-9", "ddim", "ode",
                                        "dpm-solver", "ddpm", "rk4", "dopri5", "euler", "logsnr", "trailing", "model",
                                        "ema", "x.npy", "y.npy", "", "--out"]), st.text(max_size=4))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["sample", "evaluate"]),
       argv=st.lists(st.tuples(run_options, run_values), max_size=4).map(lambda ps: [x for p in ps for x in p]))
def test_cli_options_against_a_run(tmp_path_factory, tiny_run, capsys, command, argv):
    """Random sampler options against an existing run: a valid combination works and writes
    finite samples, anything else is one line naming the problem, exit status 2."""
    tmp = tmp_path_factory.mktemp("opts")
    argv = [str(tmp / a) if a.endswith(".npy") else a for a in argv]
    if command == "sample":
        argv += ["--out", str(tmp / "s.npy")]
    if command == "evaluate" and "--n" not in argv:
        argv += ["--n", "40"]
    code = main([command, str(tiny_run), *argv])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        last = err.strip().splitlines()[-1]
        assert last.startswith("physdiff: error: ") and len(last) > len("physdiff: error: ") + 10, err
    elif command == "sample":
        import numpy as np

        assert np.isfinite(np.load(tmp / "s.npy")).all()


names = st.sampled_from(["a.npy", "b.npy", "c.npy", "sub", "a.npy/", "d.png"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.lists(st.tuples(st.sampled_from(["--out", "--trajectory", "--log-prob", "--png"]), names),
                      min_size=1, max_size=4),
       overwrite=st.booleans(), existing=st.sets(st.sampled_from(["a.npy", "b.npy", "c.npy"])))
def test_sample_never_loses_a_file(tmp_path_factory, tiny_run, capsys, flags, overwrite, existing):
    """Whatever outputs a sample command names (the same one twice, a folder, a file that exists),
    a user's file is never replaced without --overwrite, and a refused command changes nothing."""
    tmp = tmp_path_factory.mktemp("files")
    (tmp / "sub").mkdir()
    for name in existing:
        (tmp / name).write_bytes(b"user data " + name.encode())
    before = {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}
    argv = ["sample", str(tiny_run), "--n", "8", "--sampler", "ode", "--steps", "2"]
    for flag, name in flags:
        argv += [flag, str(tmp / name)]
    code = main(argv + (["--overwrite"] if overwrite else []))
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err
    after = {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}
    if code == 2:
        assert after == before, "a refused command changed a file"
    elif not overwrite:
        assert all(after[k] == v for k, v in before.items()), "an existing file was replaced"
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(st.one_of(st.floats(-1e6, 1e6).map(repr),
                                st.text(alphabet=string.ascii_letters + "_ ", min_size=1, max_size=6)),
                      min_size=2, max_size=2),
       body=st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=16, max_size=30))
def test_csv_rows_are_never_dropped(tmp_path_factory, first, body):
    """A CSV loads with every numeric row kept (a first line of numbers is data), a header of
    names skipped, or is refused in one line — never a row silently lost or invented."""
    from physdiff.data import load_array

    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text(",".join(first) + "\n" + "\n".join(f"{a!r},{b!r}" for a, b in body) + "\n")
    numeric = []
    for f in first:
        try:
            float(f)
            numeric.append(True)
        except ValueError:
            numeric.append(False)
    try:
        arr = load_array(path)
    except PhysdiffError as exc:
        assert "\n" not in str(exc)
        mixed = any(numeric) and not all(numeric)
        non_finite = all(numeric) and not np.isfinite([float(f) for f in first]).all()  # "inf", "NaN" as data
        assert mixed or non_finite, str(exc)
        return
    assert all(numeric) or not any(numeric)
    assert arr.shape == ((len(body) + 1) if all(numeric) else len(body), 2)
    np.testing.assert_allclose(arr[-len(body):], np.array(body))
