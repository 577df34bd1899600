"""Progress bars for long work: on stderr, so stdout stays clean for ``--json`` and pipes.

Shown only when stderr is a terminal (tqdm's ``disable=None``), so logs and CI output are not
filled with carriage returns; ``disable=True`` (``--quiet``) hides them everywhere.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(*, total: int | None, desc: str, unit: str = "it", disable: bool = False) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=True if disable else None,
        leave=False,
        dynamic_ncols=True,
    )
