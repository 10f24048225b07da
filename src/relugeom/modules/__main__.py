"""``python -m relugeom.modules PATH``: write the supported-modules table (docs/modules.md) from the registry."""

import sys
from pathlib import Path

from ..checkpoints import atomic_write_text
from .table import modules_markdown

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m relugeom.modules docs/modules.md")
    text = modules_markdown()
    atomic_write_text(Path(sys.argv[1]), text)
