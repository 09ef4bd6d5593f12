"""Collection settings for the whole checkout (the package's doctests and tests/)."""

from __future__ import annotations

import importlib.util

# The verl adapter imports verl at module level (verl loads it as a plugin); without verl
# installed its doctests cannot be collected.
collect_ignore = [] if importlib.util.find_spec("verl") else ["grm_reward/adapters/verl.py"]
