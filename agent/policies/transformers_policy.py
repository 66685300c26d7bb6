"""The `transformers` policy: Qwen2.5-VL in this process, from the model folder a user gives vLLM.

For machines without a vLLM server. The chat messages are rendered exactly as vLLM renders them
(the model folder's chat template, base64 JPEG images decoded to PIL, Qwen's image processor), so
a trajectory from this policy and one from `vllm` serving the same weights see the same prompt.
Sampling follows the folder's generation_config unless `temperature` is given (vLLM also defaults
to the folder's generation_config, and the reference client sets no sampling options).

Weights are never downloaded: a missing folder or an uncached hub id raises PolicyError at
construction, naming the model and how to get it (agent/qwen_model.py).
"""
from __future__ import annotations

import logging
import os

import torch

from agent.policies.base import Completion, PolicyError
from agent.qwen_model import LoadedQwenVL, load_qwen_vl
from agent.qwen_processor import messages_to_inputs

log = logging.getLogger(__name__)


class TransformersPolicy:
    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike | LoadedQwenVL,
        device: str = "cpu",
        max_new_tokens: int = 1024,
        attn_implementation: str = "sdpa",
        dtype: str = "auto",
        temperature: float | None = None,
    ):
        """`model`: a local model folder (or a hub id already in the HF cache), e.g. a download of
        autumncc/Qwen2.5-VL-7B-VRAG, or an already loaded model to share (then `device`, `dtype`
        and `attn_implementation` are its own). `temperature` None keeps the folder's
        generation_config; 0 means greedy."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if isinstance(model, LoadedQwenVL):
            self.loaded = model
        else:
            self.loaded = load_qwen_vl(model, device=device, dtype=dtype, attn_implementation=attn_implementation)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        tokenizer = self.loaded.processor.tokenizer
        # Stop at the end of the assistant turn, whatever the folder's generation_config says.
        self._stop_ids = [i for i in (tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")) if i is not None]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "model": self.loaded.name,
            "description": f"Qwen2.5-VL in-process via transformers from {self.loaded.model_dir} on {self.loaded.device}",
        }

    def _sampling(self) -> dict:
        if self.temperature is None:
            return {}
        if self.temperature <= 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": float(self.temperature)}

    def complete(self, messages: list[dict]) -> Completion:
        model, processor = self.loaded.model, self.loaded.processor
        inputs = messages_to_inputs(processor, messages, add_generation_prompt=True).to(model.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        try:
            with self.loaded.lock, torch.inference_mode():
                output = model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    eos_token_id=self._stop_ids,
                    pad_token_id=self._stop_ids[-1],
                    **self._sampling(),
                )
        except (torch.OutOfMemoryError, MemoryError) as e:
            raise PolicyError(f"{self.loaded.name} ran out of memory on {self.loaded.device} with a {prompt_tokens}-token prompt: {e}") from e
        except RuntimeError as e:  # the CPU allocator reports exhaustion as a plain RuntimeError
            if "allocate memory" not in str(e):
                raise
            raise PolicyError(f"{self.loaded.name} ran out of memory on {self.loaded.device} with a {prompt_tokens}-token prompt: {e}") from e
        new_tokens = output[0, prompt_tokens:].tolist()
        text = processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
        log.debug("generated %d tokens after a %d-token prompt", len(new_tokens), prompt_tokens)
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(new_tokens))
