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

