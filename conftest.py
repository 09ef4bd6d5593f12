"""Collection settings for the whole checkout (the package's doctests and tests/).

``tests/ci_skips.py``: on CI a skipped test fails the run; elsewhere optional parts are skipped
(the verl adapter's doctests need verl, which it imports at module level).
"""

from __future__ import annotations

pytest_plugins = ("tests.ci_skips",)
