"""SPCT (Self-Principled Critique Tuning): what trains a judge (paper §3), and its meta RM (§4).

- :mod:`~grm_reward.spct.rewards`: the rule reward of Eq. 11 for online RL of the judge, and the
  correctness test of Eq. 10 it rests on;
- :mod:`~grm_reward.spct.items`: :class:`PreferenceItem` and the readers of SPCT inputs;
- :mod:`~grm_reward.spct.sampling`: plain and hinted judge trajectories through any backend;
- :mod:`~grm_reward.spct.rft`: rejective fine-tuning rows (reject incorrect, drop too easy);
- :mod:`~grm_reward.spct.meta_data`: meta-RM rows, rendered as the meta RM sees them;
- :mod:`~grm_reward.spct.rl_data`: judge prompts and labels for rule-based online RL;
- :mod:`~grm_reward.spct.meta_train`: training a one-logit meta RM (torch, imported lazily);
- :mod:`~grm_reward.spct.reward_funcs`: the rule reward as each RL framework loads it (a TRL
  reward function, a verl ``compute_score``, an OpenRLHF ``reward_func``); recipes in ``examples/``
  and ``docs/spct-recipes.md``.

The command line is ``grm-reward spct {rft-data, meta-data, rl-data, train-meta}``; formats and
paper defaults are in ``docs/spct.md``.
"""

from grm_reward.spct.items import PreferenceItem, load_items
from grm_reward.spct.rewards import default_threshold, is_correct, rule_reward

__all__ = ["PreferenceItem", "default_threshold", "is_correct", "load_items", "rule_reward"]
