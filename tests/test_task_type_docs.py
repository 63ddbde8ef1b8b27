"""docs/task-types.md, "Unit-testing a handler": its two code blocks (a task type and its tests)
are read from the page and run here as they are written, so the page cannot drift from what
works."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "task-types.md"


def _section_blocks(title: str) -> list[str]:
    text = DOC.read_text()
    section = text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


TYPE_BLOCK, TEST_BLOCK = _section_blocks("Unit-testing a handler")
assert TYPE_BLOCK.startswith("# myapp/task_types.py") and "def test_" in TEST_BLOCK

# The type registers itself (as myapp would in AppConfig.ready()); the tests and their fixture
# become this module's, collected by pytest.
exec(compile(TYPE_BLOCK, f"{DOC}:task type", "exec"), {"__name__": "myapp.task_types"})
exec(compile(TEST_BLOCK, f"{DOC}:tests", "exec"), globals())


def test_the_page_shows_both_blocks():
    assert "test_word_count_counts_the_words" in globals()
    assert "test_word_count_refuses_a_context_without_text" in globals()
