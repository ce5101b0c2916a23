"""The guide's flow files: a fenced block whose first line names its file
(`# flows/x.py`) is written to a folder and imported, so a test can run it."""

import importlib.util
import re
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
_FILE_BLOCK = re.compile(r"^```python\n# flows/(\S+)\n(.*?)^```", re.M | re.S)


def guide_module(page: str, file_name: str, folder: Path):
    """The module of the guide page's block for `flows/<file_name>`, imported from
    a copy written in `folder`."""
    text = (DOCS_DIR / page).read_text(encoding="utf-8")
    blocks = dict(_FILE_BLOCK.findall(text))
    assert file_name in blocks, f"{page} has no block for flows/{file_name}"
    path = folder / file_name
    path.write_text(blocks[file_name], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
