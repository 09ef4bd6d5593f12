"""SPCT (Self-Principled Critique Tuning): what trains a judge (paper §3).

- :mod:`grm_reward.spct.rewards`: the rule reward of Eq. 11 for online RL of the judge, and the
  correctness test of Eq. 10 it rests on.
"""

from grm_reward.spct.rewards import is_correct, rule_reward

__all__ = ["is_correct", "rule_reward"]
