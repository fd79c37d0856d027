"""The README's commands are the contract: CI runs the test command verbatim."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, re.S)


def test_ci_runs_the_readme_test_command():
    cmds = _readme_commands()
    assert len(cmds) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci.splitlines()


def test_readme_main_job_uses_a_shipped_guest():
    main = _readme_commands()[0]
    prog = re.search(r"dbtlab run [^\n]*?(guests/bin/\S+)", main).group(1)
    assert (ROOT / prog).is_file()


def test_a_checkout_imports_as_dbtlab_without_an_install():
    """The README runs ``python -m pytest`` from the root after a regular (not editable)
    install, so the root's ``dbtlab/`` folder shadows the installed package; the
    subpackages must still resolve, to the checkout's own folders."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, '.'); import dbtlab.translator, dbtlab.ir.state; "
            "print(dbtlab.translator.__file__); print(dbtlab.ir.state.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(ROOT / "translator" / "__init__.py"), str(ROOT / "ir" / "state.py")]
