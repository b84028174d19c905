"""LoRA adapters (peft), the reference policy and an optional value head.

The reference model is the policy with its adapter disabled (TRL habit): one set
of base weights in memory, ``with reference(model): ...`` runs the base model.
"""

from __future__ import annotations

import contextlib
from typing import Any

DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def add_lora(model, lora: dict | Any | bool = True):
    """Wrap ``model`` in a peft LoRA adapter; base weights frozen, adapter (and value head) trainable."""
    from peft import LoraConfig, get_peft_model

    if lora is True:
        lora = {}
    cfg = lora if isinstance(lora, LoraConfig) else LoraConfig(task_type="CAUSAL_LM", **{**DEFAULT_LORA, **lora})
    vh = getattr(model, "value_head", None)
    model = get_peft_model(model, cfg)
    if vh is not None:
        add_value_head(model, vh)
    return model


def add_value_head(model, head=None, *, hidden: int = 0):
    """Attach ``model.value_head`` (the PPO critic) reading the last hidden state -> ``(B, T)`` values.

    ``hidden=0``: ``Linear(d, 1)``; ``hidden > 0``: ``Linear(d, hidden) -> tanh -> Linear(hidden, 1)``,
    a critic with its own capacity, for when the trunk is detached (see
    :func:`medkit.lm.generate.forward_token_stats`). The output layer starts at zero (V = 0).
    Stored as a plain attribute module so it is saved with the model state dict and
    trained even when the body is frozen.
    """
    import torch

    if head is None:
        d = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.get_input_embeddings().embedding_dim
        if hidden > 0:
            head = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        else:
            head = torch.nn.Linear(d, 1)
        last = head[-1] if isinstance(head, torch.nn.Sequential) else head
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    head.requires_grad_(True)
    model.value_head = head
    return model


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def reference(model):
    """Run ``model`` as the reference policy: LoRA disabled (base weights) inside the block.

    For a model without an adapter the model itself is the reference (used e.g. when
    a separate frozen copy is passed in).
    """
    if is_peft(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def trainable_parameters(model) -> dict[str, Any]:
    """``{name: tensor}`` of parameters with ``requires_grad`` (adapter + value head)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def trainable_state_dict(model) -> dict[str, Any]:
    """State of the trainable parameters only (what a checkpoint needs with LoRA): CPU clones."""
    return {n: p.detach().cpu().clone() for n, p in trainable_parameters(model).items()}


def load_trainable_state_dict(model, state: dict[str, Any]) -> None:
    """Inverse of :func:`trainable_state_dict`; unknown or missing names are an error."""
    import torch

    params = dict(model.named_parameters())
    missing = set(trainable_parameters(model)) - set(state)
    unknown = set(state) - set(params)
    if missing or unknown:
        raise KeyError(f"checkpoint does not match the model: missing {sorted(missing)[:5]}, unknown {sorted(unknown)[:5]}")
    with torch.no_grad():
        for n, v in state.items():
            params[n].copy_(v.to(params[n].device, params[n].dtype))
