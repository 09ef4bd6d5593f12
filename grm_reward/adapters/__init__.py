"""Thin adapters that plug :class:`~grm_reward.GenerativeRewardModel` into RL frameworks.

- :mod:`grm_reward.adapters.trl`: ``GRMReward``, a reward function for TRL's ``GRPOTrainer``
  (also exported as ``grm_reward.GRMReward``). Imports neither trl nor torch.
- :mod:`grm_reward.adapters.verl`: ``GRMRewardManager``, registered as ``grm`` in verl's
  reward-loop registry (``reward.reward_manager.name=grm``). Imports verl; verl loads it
  through the ``verl.plugins`` entry point.
- :mod:`grm_reward.adapters.openrlhf`: OpenRLHF's query format and answer shape, shared by the
  reward server's ``/get_reward`` and the in-process file form
  (``integrations/openrlhf/reward_func.py``). Imports nothing of OpenRLHF.

Adapters only translate a framework's data into :class:`~grm_reward.Request` objects and the
results back; scoring, grouping and batching are the core's (``ascore_batch``,
:class:`~grm_reward.batching.MicroBatcher`).
"""
