"""Model inputs for Qwen2-VL-based retrievers (ColQwen2 / ColQwen2.5, single-vector VLM embedders).

colpali-engine's ColQwen2Processor subclasses transformers' Qwen2VLProcessor, whose default image
processor imports torchvision (unavailable here; see colpali_modules.py). This is the same input
format built from the tokenizer and the PIL image processor (`Qwen2VLImageProcessorPil`):

- a page: `visual_prompt_prefix` with its one `<|image_pad|>` expanded to the image's
  t*h*w / merge_size**2 placeholder tokens, left-padded in a batch; `pixel_values` padded per image
  to (batch, max patches, patch dim), as ColQwen2.forward unpads them using `image_grid_thw`;
- a query: the text followed by 10 `<|endoftext|>` "query augmentation" tokens (colpali-engine's
  `process_queries` default; they take part in MaxSim).

Patch grid: an image is resized (aspect kept, sides multiples of patch_size*merge_size) and cut into
`image_grid_thw` = (t, h, w) patches of 14 px; the language model sees one token per merge_size x
merge_size block, so a page's image tokens form a (h / merge, w / merge) grid in row-major order,
row 0 at the top, covering the whole page.
"""
from __future__ import annotations

from pathlib import Path

IMAGE_PAD = "<|image_pad|>"
VISION_START = "<|vision_start|>"
AUGMENTATION = "<|endoftext|>"
COLQWEN_PAGE_PROMPT = f"<|im_start|>user\n{VISION_START}{IMAGE_PAD}<|vision_end|>Describe the image.<|im_end|>{AUGMENTATION}"


class QwenVisionInputs:
    """Tokenizer + PIL image processor -> ColQwen2 / Qwen2-VL model inputs (torch tensors)."""

    def __init__(self, tokenizer, image_processor, page_prompt: str = COLQWEN_PAGE_PROMPT,
                 query_prefix: str = "", query_suffix: str = AUGMENTATION * 10):
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = AUGMENTATION
        self.image_processor = image_processor
        self.page_prompt, self.query_prefix, self.query_suffix = page_prompt, query_prefix, query_suffix
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.merge_size = int(image_processor.merge_size)

    @classmethod
    def from_folder(cls, folder: str | Path, **prompts) -> "QwenVisionInputs":
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return cls(AutoTokenizer.from_pretrained(folder), Qwen2VLImageProcessorPil.from_pretrained(folder), **prompts)

    def grid(self, image_grid_thw) -> tuple[int, int]:
        """(rows, cols) of image tokens for one image's (t, h, w) patch counts."""
        _, h, w = (int(v) for v in image_grid_thw)
        return h // self.merge_size, w // self.merge_size

    def pages(self, images, pad_pixels: bool = True) -> dict:
        """input_ids, attention_mask, mm_token_type_ids (B, L); image_grid_thw (B, 3); pixel_values
        (B, max patches, D) padded per image as ColQwen2.forward expects, or with `pad_pixels=False`
        (all patches, D) as the plain Qwen-VL models expect."""
        import torch

        vision = self.image_processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        grid_thw = vision["image_grid_thw"]
        per_image = (grid_thw.prod(dim=1) // self.merge_size**2).tolist()
        texts = [self.page_prompt.replace(IMAGE_PAD, IMAGE_PAD * int(n), 1) for n in per_image]
        batch = dict(self.tokenizer(texts, padding="longest", return_tensors="pt"))
        batch["mm_token_type_ids"] = (batch["input_ids"] == self.image_token_id).long()
        batch["image_grid_thw"] = grid_thw
        if not pad_pixels:
            batch["pixel_values"] = vision["pixel_values"]
            return batch
        patches = torch.split(vision["pixel_values"], (grid_thw[:, 1] * grid_thw[:, 2] * grid_thw[:, 0]).tolist())
        batch["pixel_values"] = torch.nn.utils.rnn.pad_sequence(list(patches), batch_first=True)
        return batch

    def queries(self, queries: list[str]) -> dict:
        """input_ids, attention_mask (B, L), left-padded."""
        texts = [self.query_prefix + q + self.query_suffix for q in queries]
        return dict(self.tokenizer(texts, padding="longest", return_tensors="pt"))

    def token_strings(self, input_ids) -> list[str]:
        """Readable strings of token ids (byte-level BPE pieces decoded one by one)."""
        return [self.tokenizer.decode([int(i)]) for i in input_ids]
