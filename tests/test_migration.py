"""docs/migration.md: every python block runs, in order, in one namespace (the page's own set-up block first)."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "migration.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_migration_page_has_an_example_per_library():
    headings = re.findall(r"^## (.+)$", PAGE.read_text(), flags=re.M)
    for library in ("Captum", "Vertex AI", "innsight", "pnpxai", "Xplique"):
        assert any(h.startswith(library) for h in headings), f"no section for {library}"
    assert len(python_blocks()) >= 7


def test_every_example_on_the_migration_page_runs(capsys):
    namespace = {}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"{PAGE.name} block {i}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001  (name the block that failed)
            raise AssertionError(f"block {i} of {PAGE.name} failed: {error!r}\n{block}") from error
