"""Cached backbone features for fast fine-tuning (`--cache_features`).

SAM and CLIP are frozen, so for a fixed (non-augmented) input their features never change during training. Computing
them once per image and storing them as safetensors removes both backbones from every training step, which is where
nearly all of PosSAM's compute goes. The price is no augmentation, which suits small custom datasets and fine-tuning.

A cache directory holds one `<index>.safetensors` per image and a `manifest.json` with the fingerprint of the
frozen towers and of the dataset; a cache whose fingerprint does not match is rebuilt rather than silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from transformers.utils.logging import tqdm


FEATURE_KEYS = ("sam_image_embeddings", "clip_image_features")


def tower_fingerprint(model) -> str:
    """A hash of the frozen towers' configuration and weights (per-tensor sums: cheap, and any change shows)."""
    digest = hashlib.sha1()
    digest.update(model.config.sam_vision_config.to_json_string().encode())
    digest.update(model.config.clip_config.to_json_string().encode())
    for name, tensor in [*model.sam.state_dict().items(), *model.clip.state_dict().items()]:
        values = tensor.detach().double()
        digest.update(f"{name}:{tuple(values.shape)}:{values.sum().item():.10e}:{values.abs().sum().item():.10e}".encode())
    return digest.hexdigest()


class CachedFeaturesDataset(Dataset):
    """Training examples whose `pixel_values` are replaced by the cached frozen-tower features.

    Args:
        dataset: a `PanopticTrainingDataset` built with `augment=False` (targets are computed live; they are cheap).
        cache_dir: where the features are stored.
    """

    def __init__(self, dataset, cache_dir: str):
        if dataset.augment:
            raise ValueError("Cached features need fixed inputs: build the PanopticTrainingDataset with augment=False.")
        self.dataset = dataset
        self.cache_dir = cache_dir

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        example = self.dataset[index]
        del example["pixel_values"]
        path = os.path.join(self.cache_dir, f"{index}.safetensors")
        try:
            example.update(load_file(path))
        except OSError as error:
            raise FileNotFoundError(f"Feature cache file {path} is missing or unreadable ({error}); rebuild the cache.") from None
        return example


@torch.no_grad()
def build_feature_cache(model, dataset, cache_dir: str, dataset_fingerprint: str, batch_size: int = 1) -> CachedFeaturesDataset:
    """Computes (or reuses) the SAM and CLIP features of every image of a non-augmented `PanopticTrainingDataset`.

    Args:
        model: the `PosSamModel` whose frozen towers produce the features.
        dataset_fingerprint: identifies the dataset (e.g. its annotation file and size); part of the cache key.
    """
    manifest_path = os.path.join(cache_dir, "manifest.json")
    manifest = {
        "towers": tower_fingerprint(model),
        "dataset": dataset_fingerprint,
        "image_size": model.config.image_size,
        "num_images": len(dataset),
    }
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            if json.load(handle) == manifest:
                return CachedFeaturesDataset(dataset, cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # an interrupted rebuild must not look valid
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(dataset), batch_size), desc="caching backbone features"):
        indices = range(start, min(start + batch_size, len(dataset)))
        pixel_values = torch.stack([dataset[index]["pixel_values"] for index in indices]).to(device)
        features = model.get_image_features(pixel_values)
        for offset, index in enumerate(indices):
            tensors = {key: features[key][offset].contiguous().cpu() for key in FEATURE_KEYS}
            save_file(tensors, os.path.join(cache_dir, f"{index}.safetensors"))
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
    return CachedFeaturesDataset(dataset, cache_dir)
