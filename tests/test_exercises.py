"""Every exercise solution's Python code in the book runs and its asserts hold."""

from __future__ import annotations

import re

import pytest

from semalign.core.paths import BOOK_SOURCE_DIR

PAGE = BOOK_SOURCE_DIR / "exercises.md"
CODE = re.compile(r"```python\n(.*?)```", re.S)


def solution_blocks() -> list[tuple[str, str]]:
    text = PAGE.read_text()
    blocks = []
    for solution in re.finditer(r"````\{solution\} (\S+)\n(.*?)\n````\n", text, re.S):
        for code in CODE.findall(solution.group(2)):
            blocks.append((solution.group(1), code))
    return blocks


def test_there_are_at_least_six_exercises_with_solutions():
    text = PAGE.read_text()
    assert text.count("```{exercise}") >= 6
    labels = set(re.findall(r":label: (\S+)", text))
    solved = {label for label, _ in solution_blocks()}
    assert len(labels) >= 6 and solved == labels, f"exercises without checked solution code: {labels - solved}"


@pytest.mark.parametrize(("label", "code"), solution_blocks(), ids=[label for label, _ in solution_blocks()])
def test_solution_code_runs(label, code):
    exec(compile(code, f"exercises.md:{label}", "exec"), {"__name__": f"exercise_{label}"})
