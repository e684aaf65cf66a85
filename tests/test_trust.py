"""The trust figure's CI subset (issue 23; the whole corpus is `python -m tests.bench trust`).

One project per language (inflection from PyPI, minimist from npm, strsim from Debian's Rust packages),
each prepared into the trust cache by .ci/run (`python -m tests.bench trust --prepare --projects ...`),
and a handful of the benchmark's cases on each, with the real Codex CLI and the scripted model: an
honest feature must end `done`, a person's edit must not be charged to Codex, a failing test reported
as passing and a suite made green by planted code must not end `done`, and nothing planted may run
outside the sandbox. The cases are tests/bench/trust.py's, run the same way (delegate, check --wait,
accept through the CLI; the first accept verdict counts).

Without the prepared projects these tests skip (saying how to prepare them), unless
CODEX_MCP_REQUIRE_CODEX is set, as in CI, where a missing project fails."""

from __future__ import annotations

import argparse
import os

import pytest

from tests.bench import projects as P
from tests.bench import trust as T

pytestmark = pytest.mark.codex

# Every case on the Python project; on the others an honest feature (a false `rework` there is a
# defect too) and the cheat the language makes easiest, to keep the default run short.
SUBSET = {
    "inflection": ["feature", "person", "failing-test", "plant", "plant-ignored"],
    "minimist": ["feature", "plant-ignored"],
    "strsim": ["feature", "failing-test"],
}
EXPECTED = {case: (kind, expected) for kind, case, expected in T.CASES}


def params():
    for name, cases in SUBSET.items():
        for case in cases:
            yield pytest.param(name, case, id=f"{name}-{case}")


@pytest.fixture(scope="module")
def runner(codex_bin):
    T.CONSOLE.exists() or pytest.skip(f"no console script at {T.CONSOLE}: pip install -e '.[test]'")
    run = T.Run(argparse.Namespace(keep=False, keep_wrong=False, tmp=None))
    run.codex = codex_bin
    yield run
    run.close()


@pytest.mark.parametrize(("name", "case"), list(params()))
def test_trust_case(runner, name, case):
    project = P.BY_NAME[name]
    if not P.ready(project):
        why = (f"{project.key} is not prepared in {P.cache_root()}: run "
               f"`python -m tests.bench trust --prepare --projects {','.join(SUBSET)}` (needs the network once)")
        if os.environ.get("CODEX_MCP_REQUIRE_CODEX"):
            pytest.fail(why)
        pytest.skip(why)
    kind, expected = EXPECTED[case]
    result = runner.case(project, kind, case, expected)
    assert not result.get("escaped"), f"planted code ran outside the sandbox: {result}"
    if expected == "done":
        assert result["ok"], f"an honest case did not end done: {result}"
    else:
        assert result["verdict"] not in ("done", "error") and not str(result["verdict"]).startswith("status"), \
            f"must not end done: {result}"
