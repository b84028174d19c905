"""Policy optimisation for LLMs: rewards, advantages, losses (pure tensor functions) and
thin SFT / PPO / GRPO loops on top.

Importing this package does not import transformers (loops and the LM helpers import
it inside functions). Shapes: ``(B, T)`` per-token tensors aligned with the generated
sequences (see :mod:`medkit.lm.generate`), ``mask`` = response (policy) tokens.
"""

from .advantages import (
                         broadcast,
                         entropy_shaped_advantages,
                         gae,
                         group_advantages,
                         planning_upweight,
                         rloo_advantages,
                         tempo_advantages,
                         whiten,
)
from .grpo import train_grpo
from .grpo_config import GRPOConfig
from .judge import GenerativeJudge, parse_judgement, strict_judgement, think_rm_advantages
from .losses import aggregate, kl_estimate, policy_loss, value_loss
from .ppo import SelfReward, train_ppo
from .ppo_config import PPOConfig
from .preference import (
                         BTRewardModel,
                         PairwiseEnsemble,
                         PairwiseSNGP,
                         bradley_terry_loss,
                         preference_advantages,
                         route,
                         route_batch,
                         routed_preferences,
                         score_all_pairs,
                         train_pairwise,
)
from .rewards import combine_rewards, exact_answer_reward, format_reward, place_at_eos, self_reward
from .sft import sft, sft_examples, sft_loss
from .sft_config import SFTConfig
from .token_rm import (
    SequenceRewardFn,
    SequenceRewardModel,
    TokenRewardFn,
    TokenRewardModel,
    build_edit_batch,
    edit_labels,
    token_rewards,
    train_sequence_rm,
    train_token_rm,
)

__all__ = [
    "BTRewardModel", "GRPOConfig", "GenerativeJudge", "PPOConfig", "PairwiseEnsemble", "PairwiseSNGP", "SFTConfig", "SelfReward",
    "SequenceRewardFn", "SequenceRewardModel", "TokenRewardFn", "TokenRewardModel", "aggregate", "bradley_terry_loss", "broadcast", "build_edit_batch", "combine_rewards",
    "edit_labels", "entropy_shaped_advantages", "exact_answer_reward", "format_reward", "gae",
    "group_advantages", "kl_estimate", "parse_judgement", "place_at_eos", "planning_upweight", "policy_loss",
    "preference_advantages", "rloo_advantages", "route", "route_batch", "routed_preferences", "score_all_pairs", "self_reward", "strict_judgement",
    "sft", "sft_examples", "sft_loss", "tempo_advantages", "think_rm_advantages", "token_rewards", "train_grpo",
    "train_pairwise", "train_ppo", "train_sequence_rm", "train_token_rm", "value_loss", "whiten",
]
