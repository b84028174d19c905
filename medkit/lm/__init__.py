"""Causal-LM backbone: load (packaged SmolLM2 GGUF or a local HF folder), LoRA, generate, log-probs.

Importing this package does not import transformers/peft; every function that
needs them imports them inside. See :mod:`medkit.lm.load`, :mod:`medkit.lm.lora`,
:mod:`medkit.lm.generate`.
"""

from .generate import (
                   Rollout,
                   chat_prompt,
                   encode_pairs,
                   encode_segments,
                   forward_token_stats,
                   generate,
                   pack_turns,
                   sequence_logprob,
)
from .load import (
                   cache_dir,
                   load_causal_lm,
                   load_tokenizer,
                   packaged_gguf,
                   resolve_model_dir,
                   tiny_causal_lm,
                   tiny_char_tokenizer,
)
from .lora import (
                   add_lora,
                   add_value_head,
                   load_trainable_state_dict,
                   reference,
                   trainable_parameters,
                   trainable_state_dict,
)

__all__ = [
    "Rollout", "add_lora", "add_value_head", "cache_dir", "chat_prompt", "encode_pairs", "encode_segments",
    "forward_token_stats", "generate", "pack_turns", "load_causal_lm", "load_tokenizer", "load_trainable_state_dict", "packaged_gguf", "reference",
    "resolve_model_dir", "sequence_logprob", "tiny_causal_lm", "tiny_char_tokenizer", "trainable_parameters",
    "trainable_state_dict",
]
