"""The open-vocabulary text classifier: class names -> CLIP text embeddings -> class logits of region embeddings.

Every name of a class ("person", "child", "girl") is put into each prompt template ("a photo of a {}."), embedded by
CLIP's text tower, L2-normalized, averaged over templates and normalized again. A region's logit for a class is the
maximum cosine similarity over the class's names, times a logit scale. PosSAM's in-vocabulary classifier appends a
learnable void ("no object") embedding; the out-of-vocabulary CLIP classifier does not.

Text embeddings depend only on the vocabulary (CLIP is frozen), so they are computed once per vocabulary and cached:
in memory, and on disk under the Hugging Face cache directory (`$HF_HOME/possam/text_embeddings`, or
`$POSSAM_TEXT_CACHE`), keyed by a hash of the text tower's weights and of the tokenized prompts (templates x names),
so another process with the same model and vocabulary does not run the text tower at all. `POSSAM_NO_TEXT_CACHE=1`
or `model.text_classifier.use_disk_cache = False` turns the disk cache off. The model also stores the embeddings of
its default vocabulary so it can run with no text input at all.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import logging

from .configuration import PosSamConfig
from .outputs import PosSamTextEmbeddings


logger = logging.get_logger(__name__)


def average_prompt_embeddings(
    prompt_embeddings: torch.Tensor, prompt_to_synonym: torch.LongTensor, synonym_to_class: torch.LongTensor
) -> PosSamTextEmbeddings:
    """`(P, D)` prompt embeddings -> one normalized embedding per synonym (mean of its normalized prompts)."""
    num_synonyms = synonym_to_class.shape[0]
    normalized = nn.functional.normalize(prompt_embeddings.float(), dim=-1)
    sums = normalized.new_zeros(num_synonyms, normalized.shape[-1]).index_add_(0, prompt_to_synonym, normalized)
    return PosSamTextEmbeddings(
        synonym_embeddings=nn.functional.normalize(sums, dim=-1), synonym_to_class=synonym_to_class
    )


def classify_regions(
    region_embeddings: torch.Tensor, text: PosSamTextEmbeddings, logit_scale: torch.Tensor
) -> torch.Tensor:
    """`(batch, K, D)` region embeddings -> `(batch, K, C)` logits: scaled cosine, max over each class's synonyms."""
    regions = nn.functional.normalize(region_embeddings, dim=-1)
    synonyms = text.synonym_embeddings.to(regions.dtype)
    synonym_logits = logit_scale.to(regions.dtype) * regions @ synonyms.T
    index = text.synonym_to_class.expand(*synonym_logits.shape[:-1], -1)
    class_logits = synonym_logits.new_full((*synonym_logits.shape[:-1], text.num_classes), float("-inf"))
    return class_logits.scatter_reduce(-1, index, synonym_logits, reduce="amax", include_self=False)


def vocabulary_digest(*tensors: torch.Tensor) -> str:
    """A content hash of a tokenized vocabulary, the key of the text-embedding cache."""
    digest = hashlib.sha1()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous()
        digest.update(str((tuple(array.shape), str(array.dtype))).encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()


def module_digest(module: nn.Module) -> str:
    """A content hash of a module's weights (names, shapes, dtypes, values): which text tower embedded a vocabulary."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(vocabulary_digest(tensor).encode())
    return digest.hexdigest()


def text_cache_directory() -> str | None:
    """Where text embeddings are cached on disk; `None` when `POSSAM_NO_TEXT_CACHE` is set to a true value."""
    if os.environ.get("POSSAM_NO_TEXT_CACHE", "").lower() in ("1", "true", "yes"):
        return None
    return os.environ.get("POSSAM_TEXT_CACHE") or os.path.join(hub_constants.HF_HOME, "possam", "text_embeddings")


class PosSamTextClassifier(nn.Module):
    """In-vocabulary classifier of LDP embeddings: cosine to class names plus a learnable void class.

    Also holds the text-embedding cache and the embeddings of the model's default vocabulary (`config.vocabulary`).
    """

    cache_size = 8
    use_disk_cache = True

    def __init__(self, config: PosSamConfig):
        super().__init__()
        dim = config.clip_config.projection_dim
        self.void_embedding = nn.Embedding(1, dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.logit_scale_max = config.logit_scale_max
        self.config = config
        # Zeros until `PosSamModel.set_default_vocabulary` fills it; saved with the weights.
        self.register_buffer("default_synonym_embeddings", torch.zeros(len(self._default_synonym_to_class()), dim))
        self._cache: OrderedDict[str, PosSamTextEmbeddings] = OrderedDict()
        self._text_tower_digest: str | None = None  # hash of the text tower's weights, the disk cache's key

    def _default_synonym_to_class(self) -> list[int]:
        return [index for index, entry in enumerate(self.config.vocabulary) for _ in entry.split(",")]

    @property
    def has_default_vocabulary(self) -> bool:
        return bool(self.default_synonym_embeddings.abs().sum() > 0)

    def default_text_embeddings(self) -> PosSamTextEmbeddings:
        if not self.has_default_vocabulary:
            raise ValueError(
                "No vocabulary was given and this model's default vocabulary has no text embeddings yet. Pass class "
                "names through PosSamProcessor (input_ids, attention_mask, prompt_to_synonym, synonym_to_class), or "
                "call `model.set_default_vocabulary(...)` once and save the model."
            )
        synonym_to_class = torch.tensor(self._default_synonym_to_class(), device=self.default_synonym_embeddings.device)
        return PosSamTextEmbeddings(synonym_embeddings=self.default_synonym_embeddings, synonym_to_class=synonym_to_class)

    def cached(self, key: str) -> PosSamTextEmbeddings | None:
        if key not in self._cache:
            return None
        self._cache.move_to_end(key)
        return self._cache[key]

    def remember(self, key: str, embeddings: PosSamTextEmbeddings) -> None:
        self._cache[key] = embeddings
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._text_tower_digest = None

    def _disk_path(self, key: str, text_tower: nn.Module) -> str | None:
        directory = text_cache_directory() if self.use_disk_cache else None
        if directory is None:
            return None
        if getattr(self, "_text_tower_digest", None) is None:
            self._text_tower_digest = module_digest(text_tower)
        name = hashlib.sha1(f"{self._text_tower_digest}:{key}".encode()).hexdigest()
        return os.path.join(directory, f"{name}.safetensors")

    def load_from_disk(self, key: str, text_tower: nn.Module) -> PosSamTextEmbeddings | None:
        """Embeddings of the vocabulary `key` computed earlier by a text tower with these exact weights, if cached."""
        path = self._disk_path(key, text_tower)
        if path is None or not os.path.isfile(path):
            return None
        try:
            tensors = load_file(path)
        except Exception as error:  # a truncated or foreign file: recompute rather than fail
            logger.warning(f"Ignoring unreadable text-embedding cache file {path}: {error}")
            return None
        return PosSamTextEmbeddings(synonym_embeddings=tensors["synonym_embeddings"], synonym_to_class=tensors["synonym_to_class"])

    def save_to_disk(self, key: str, text_tower: nn.Module, embeddings: PosSamTextEmbeddings) -> None:
        path = self._disk_path(key, text_tower)
        if path is None:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.{os.getpid()}.tmp"  # written whole, then renamed: readers never see half a file
            save_file(
                {
                    "synonym_embeddings": embeddings.synonym_embeddings.detach().cpu().contiguous(),
                    "synonym_to_class": embeddings.synonym_to_class.detach().cpu().contiguous(),
                },
                temporary,
            )
            os.replace(temporary, path)
        except OSError as error:  # a read-only cache directory only costs the next process the text tower
            logger.warning(f"Could not write the text-embedding cache file {path}: {error}")

    def forward(self, region_embeddings: torch.Tensor, text: PosSamTextEmbeddings) -> torch.Tensor:
        """`(batch, K, D)` LDP embeddings -> `(batch, K, C + 1)` logits, void last."""
        scale = self.logit_scale.exp().clamp(max=self.logit_scale_max)
        class_logits = classify_regions(region_embeddings, text, scale)
        # Called rather than read through `.weight`, so that an offloaded model (`device_map`) loads the embedding.
        void_weight = self.void_embedding(torch.zeros(1, dtype=torch.long, device=region_embeddings.device))
        void = nn.functional.normalize(void_weight, dim=-1).to(region_embeddings.dtype)
        void_logits = scale.to(region_embeddings.dtype) * nn.functional.normalize(region_embeddings, dim=-1) @ void.T
        return torch.cat([class_logits, void_logits], dim=-1)
