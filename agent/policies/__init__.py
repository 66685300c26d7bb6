"""Policies by name. Each lives in its own module and is imported only when asked for, so the app
and the CLI start without torch unless the `transformers` policy is chosen.

    make_policy("vllm", base_url=..., model=...)      agent/policies/openai_chat.py
    make_policy("transformers", model=...)            agent/policies/transformers_policy.py
    make_policy("offline", index=...)                 agent/policies/offline/ (package)

Options are passed through as keyword arguments; `None` values are dropped so each policy keeps its
own defaults.
"""
from __future__ import annotations

import importlib

from agent.policies.base import Completion, Policy, PolicyError

# name -> (module, class)
POLICIES = {
    "vllm": ("agent.policies.openai_chat", "OpenAIChatPolicy"),
    "transformers": ("agent.policies.transformers_policy", "TransformersPolicy"),
    "offline": ("agent.policies.offline", "OfflinePolicy"),
}

__all__ = ["POLICIES", "Completion", "Policy", "PolicyError", "make_policy", "policy_class"]


def policy_class(name: str) -> type:
    """The class behind a policy name; PolicyError if the name is unknown or its module is missing."""
    if name not in POLICIES:
        raise PolicyError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    module_name, class_name = POLICIES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise PolicyError(f"the {name!r} policy is not available in this build ({module_name} is missing)") from e
        raise PolicyError(f"the {name!r} policy needs the package {e.name!r}, which is not installed: pip install -r requirements.txt") from e
    try:
        return getattr(module, class_name)
    except AttributeError as e:
        raise PolicyError(f"{module_name} defines no {class_name}") from e


def make_policy(name: str, **options) -> Policy:
    """Construct a policy by name with its options (None values mean 'use the default')."""
    cls = policy_class(name)
    return cls(**{k: v for k, v in options.items() if v is not None})
