"""Thin adapters between RL frameworks and :class:`~grm_reward.GenerativeRewardModel`.

Each adapter module imports its framework lazily (or not at all); importing this package loads
nothing heavy.
"""
