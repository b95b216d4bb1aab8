"""CLIP's image input made once per image, and normalised for a whole batch in one array operation.

The same steps as the checkpoint's image processor (shortest edge to its size, bicubic; centre crop;
scale to [0, 1]; subtract the mean, divide by the deviation), without running it per image.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.errors import ModelError

ST_ORGANIZATION = "sentence-transformers"  # where sentence-transformers looks for a bare model name
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Pixels:
    """The image processor's settings: the shortest edge it scales to, the crop side, mean and deviation."""

    shortest: int = 224
    side: int = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    @classmethod
    def of(cls, processor: Any) -> Pixels:
        """Read from a Hugging Face image processor; CLIP's own settings where it lacks one."""
        size = getattr(processor, "size", None) or {}
        crop = getattr(processor, "crop_size", None) or {}
        shortest = int(size.get("shortest_edge", 224))
        return cls(shortest, int(crop.get("height", shortest)),
                   tuple(getattr(processor, "image_mean", None) or CLIP_MEAN),
                   tuple(getattr(processor, "image_std", None) or CLIP_STD))

    @property
    def min_edges(self) -> tuple[int, int]:
        """The smallest edges decoding may draft to: the crop's side, and 256 for the longest (a wide image's
        centre must still fill the crop)."""
        return self.side, max(self.side, 256)

    def prepare(self, img: Image.Image) -> Image.Image:
        """The centre ``side`` x ``side`` of the image scaled so its shortest edge is ``shortest``, in one
        bicubic resize of just that region (no intermediate image)."""
        if img.size == (self.side, self.side):
            return img
        width, height = img.size
        # Multiplied before divided: (h / shortest) * side came out a hair over h for 2% of sizes (1600x900 among
        # them), a negative box offset that Pillow refuses. Clamped too, for a crop wider than the shortest edge.
        span = min(min(width, height) * self.side / self.shortest, width, height)
        left, top = max(0.0, (width - span) / 2), max(0.0, (height - span) / 2)
        # reducing_gap: a box reduction first where the source is much larger, as exact as a plain resize
        return img.resize((self.side, self.side), Image.Resampling.BICUBIC, box=(left, top, left + span, top + span),
                          reducing_gap=3.0)

    def array(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The prepared images as one uint8 array (N, 3, side, side): a quarter of fp32's bytes to move."""
        return np.stack([np.asarray(_rgb(self.prepare(img))) for img in images]).transpose(0, 3, 1, 2)

    def batch(self, images: Sequence[Image.Image]) -> Any:
        """``array`` as a torch tensor."""
        import torch

        return torch.from_numpy(self.array(images))

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, shaped (1, 3, 1, 1): the model's input is uint8 pixels times the scale plus the shift."""
        std, mean = np.array(self.std, np.float32), np.array(self.mean, np.float32)
        return (1 / (255 * std)).reshape(1, -1, 1, 1), (-mean / std).reshape(1, -1, 1, 1)

    def normalized(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (``array``) to the model's input, as numpy."""
        scale, shift = self.scale_shift()
        return np.ascontiguousarray(pixels * scale + shift, dtype=np.float32)

    def normalize(self, pixels: Any) -> Any:
        """uint8 pixels (``batch``) to the model's input, on whatever device they are: one multiply-add per value."""
        import torch

        scale, shift = (torch.from_numpy(a).to(pixels.device) for a in self.scale_shift())
        return torch.addcmul(shift, pixels.float(), scale).contiguous()


def clip_inputs(name: str) -> Pixels:
    """The image processor's settings of the sentence-transformers CLIP checkpoint ``name`` (a folder, or a Hub name
    read from the Hub or its local cache), from its configuration files alone: no weights are read."""
    from transformers import AutoImageProcessor

    try:
        folder = Path(name).expanduser()
        repo = str(folder) if folder.is_dir() else hub_repo(name)
        # modules.json names the module whose folder holds the processor: "" in the current layout, 0_CLIPModel
        # in the Hub's older one
        module = json.loads(Path(_config_file(repo, "modules.json")).read_text())[0]["path"]
        return Pixels.of(AutoImageProcessor.from_pretrained(repo, subfolder=module))
    except Exception as exc:  # offline, a typo, or not a sentence-transformers checkpoint
        raise ModelError(f"cannot read the image settings of the model {Path(name).name!r}",
                         internals=f"{name}: {type(exc).__name__}: {exc}") from exc


def hub_repo(name: str) -> str:
    """The Hub repository sentence-transformers loads the model ``name`` from: a bare name is its organisation's."""
    return name if "/" in name else f"{ST_ORGANIZATION}/{name}"


def _config_file(repo: str, file: str) -> str:
    if Path(repo).is_dir():
        return str(Path(repo) / file)
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, file)


def image_tower(clip: Any) -> Any:
    """CLIP's image side alone, as one module: the vision transformer and its projection."""
    import torch

    class ImageTower(torch.nn.Module):
        """get_image_features' arithmetic, as a module that dynamic quantisation can copy and convert."""

        def __init__(self) -> None:
            super().__init__()
            self.vision_model = clip.vision_model
            self.visual_projection = clip.visual_projection

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)

    return ImageTower().eval()


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def text_tower(clip: Any) -> Any:
    """CLIP's text side alone, as one module: the text transformer and its projection."""
    import torch

    class TextTower(torch.nn.Module):
        """get_text_features' arithmetic, as a module that dynamic quantisation can copy and convert."""

        def __init__(self) -> None:
            super().__init__()
            self.text_model = clip.text_model
            self.text_projection = clip.text_projection

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.text_projection(self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output)

    return TextTower().eval()
