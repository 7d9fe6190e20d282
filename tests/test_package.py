"""The package as a user installs it: the library imports nothing of the paper's application,
names are what they say, and every citation of the specification resolves inside the
repository."""

import pathlib
import re
import subprocess
import sys

import pytest

import infodrop

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "spec.md"


def test_import_infodrop_imports_no_application_dependency():
    # what `import infodrop` adds to what `import torch` loads (torch imports tqdm itself)
    code = ("import sys, torch; before = set(sys.modules); import infodrop; "
            "new = set(sys.modules) - before; print(sorted(m for m in ('matplotlib', 'sklearn', "
            "'mlxtend', 'tqdm', 'numpy', 'infodrop.paper') if m in new))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_what_they_say():
    assert callable(infodrop.backends) and set(infodrop.backends()) == {
        "cuda", "triton", "cpu", "reference"}
    written = re.search(r'__version__ = "(.+)"', (ROOT / "infodrop" / "_version.py").read_text())
    assert infodrop.__version__ == written.group(1)
    from infodrop.paper.models import slots

    assert callable(slots.conv_layer)  # the dropout-slot factory, once models.noise


def _git(root, *args):
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          check=True).stdout


def _tracked_files(root=ROOT):
    """The files git tracks in the checkout whose top is root.  A copy of the tree inside
    another checkout's ignored folder (make test-torch2.11's build/torch-2.11) is no checkout of
    its own: git answers there for the outer one, which tracks nothing under it."""
    try:
        top = _git(root, "rev-parse", "--show-toplevel").strip()
    except (OSError, subprocess.CalledProcessError):
        top = None
    if top is None or pathlib.Path(top).resolve() != root.resolve():
        pytest.skip(f"{root} is not the top of a git checkout")
    return [root / name for name in _git(root, "ls-files").splitlines()]


def test_a_copy_inside_another_checkout_is_not_taken_for_one(tmp_path):
    """In build/torch-2.11 the file list was empty, and the citation check failed with set()."""
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("build/\n")
    copy = tmp_path / "build" / "copy"
    copy.mkdir(parents=True)
    (copy / "a.py").write_text("")
    with pytest.raises(pytest.skip.Exception, match="not the top of a git checkout"):
        _tracked_files(copy)


def test_nothing_outside_tests_points_outside_the_repository():
    offenders = [str(path.relative_to(ROOT)) for path in _tracked_files()
                 if path.parts[len(ROOT.parts)] != "tests" and path.is_file()
                 and "../shared" in path.read_text(errors="ignore")]
    assert offenders == []


def test_every_spec_citation_names_an_existing_section():
    sections = {int(n) for n in re.findall(r"^## (\d+)\.", SPEC.read_text(), re.M)}
    cited = set()
    for path in _tracked_files():
        if path.suffix in (".py", ".h", ".cpp", ".cu", ".md") and path.is_file():
            for match in re.finditer(r"docs/spec\.md sections? ([\d, and]+)", path.read_text()):
                cited |= {int(n) for n in re.findall(r"\d+", match.group(1))}
    assert cited and cited <= sections, cited - sections


_WITHOUT_EXTRAS = """
import sys, runpy
class Absent:  # the extras' packages, as in an environment with the core install only
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tqdm", "matplotlib", "sklearn", "mlxtend", "numpy"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
sys.argv = ["infodrop"] + sys.argv[1:]
runpy.run_module("infodrop", run_name="__main__")
"""


@pytest.mark.parametrize("argv, code, says", [
    (["check", "--shape", "2", "3", "--dtypes", "float32"], 0, "gradcheck"),
    (["bench", "--shapes", "2x3", "--repeats", "1", "--warmup", "0", "--no-progress",
      "--contenders", "reference", "dropout"], 0, "reference"),
    (["train", "--model", "mlp"], 2, "needs the 'paper' extra"),
])
def test_commands_with_the_core_install_only(argv, code, says):
    """bench imported tqdm at module level: after `pip install .` it failed to start."""
    run = subprocess.run([sys.executable, "-c", _WITHOUT_EXTRAS, *argv], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == code, run.stderr[-2000:]
    assert says in run.stdout + run.stderr
