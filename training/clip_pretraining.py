"""Contrastive pretraining of a toy CLIP on the synthetic open-vocabulary world (`possam pretrain-clip`).

Real CLIP weights cannot be downloaded here, so the open-vocabulary experiment pretrains PosSAM's own CLIP towers
(`PosSamClip`: a small ConvNeXt image tower with its region head, a small CLIP text tower) the way CLIP itself was
trained: symmetric InfoNCE with a learnable temperature over image-caption pairs. The "web" it learns from covers
**all** classes of the world, unseen ones included, and has three kinds of pairs, all built from freshly rendered scenes:

- object crops: the box around one segment, resized to `CROP_SIZE`, globally pooled, captioned with a prompt template
  and a random synonym ("a photo of a tangerine.");
- regions: the scene's dense features mask-pooled over one segment, the way PosSAM reads CLIP (same caption kind);
- whole scenes: globally pooled, captioned with everything in them ("a photo of a ball and a kite, with sky and grass.").

The result is saved exactly like a converted OpenCLIP checkpoint (`possam.backbones.save_possam_clip`: a
`PosSamClipConfig` + `model.safetensors`), so `PosSamModel.from_pretrained_backbones(clip=folder)` loads it unchanged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from transformers.utils import logging

from ..backbones import save_possam_clip
from ..clip_towers import PosSamClip
from ..configuration import PosSamClipConfig, Vocabulary
from ..configuration.configuration_possam import CLIP_PAD_TOKEN_ID, DEFAULT_PROMPT_TEMPLATES
from ..mask_pooling import mask_pool, pooling_weights
from ..processing import PosSamProcessor
from ..processing.clip_tokenizer import load_clip_tokenizer
from ..text_classifier import average_prompt_embeddings, classify_regions
from .open_vocabulary_world import UNSEEN_CLASSES, WORLD_CLASSES, WORLD_SCENE_OPTIONS
from .synthetic import render_scene, synthetic_classes, synthetic_vocabulary


logger = logging.get_logger(__name__)

SCENE_SIZE = 128  # the world's scenes at PosSAM-tiny's input size
CROP_SIZE = 64
PRETRAINING_RECORD = "pretraining.json"
# Captions of single objects: FC-CLIP's prompt templates (what PosSAM asks CLIP with) and a few plainer ones.
CAPTION_TEMPLATES = DEFAULT_PROMPT_TEMPLATES + ("{}", "a {}.", "a cropped photo of the {}.", "the {} in the picture.")


def toy_clip_config() -> PosSamClipConfig:
    """The toy CLIP: a 3-stage ConvNeXt (stride 16, so a 128-pixel scene gives an 8x8 dense map) with a 96 -> 128 -> 64
    region head, and a 2-layer, 64-wide CLIP text tower; 64-dimensional joint space."""
    return PosSamClipConfig(
        vision_config={
            "model_type": "convnext", "num_stages": 3, "depths": [1, 1, 2], "hidden_sizes": [32, 64, 96],
            "layer_norm_eps": 1e-6, "layer_scale_init_value": 0.1,
        },
        text_config={
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
            "projection_dim": 64, "hidden_act": "gelu", "pad_token_id": CLIP_PAD_TOKEN_ID,
        },
        projection_dim=64,
        head_hidden_size=128,
    )


@dataclass
class ClipPretrainingArguments:
    """Settings of `pretrain_toy_clip` (all recorded in `pretraining.json`).

    Attributes:
        steps: optimizer steps (0 saves the randomly initialized towers: the control of the ablation).
        batch_size: scenes per step; each gives one scene pair, one crop pair and a region pair per segment.
        learning_rate, weight_decay: AdamW, cosine decay after `warmup_steps` linear warm-up.
        num_scenes: size of the rendered pool the batches are drawn from (flipped at random).
        seed: the only source of randomness.
    """

    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    num_scenes: int = 512
    seed: int = 0


@dataclass
class WorldScene:
    """A rendered scene, CLIP-normalized, with what its pairs need, computed once.

    Attributes:
        pixels: `(3, S, S)` the scene.
        classes: per segment, its class index in the world's vocabulary.
        masks: `(K, S, S)` bool segment masks.
        region_weights: `(K, h, w)` pooling weights at the dense map's resolution (see `_region_weights`).
        crops: `(K, 3, CROP_SIZE, CROP_SIZE)` one crop per segment (see `_box_crop`).
    """

    pixels: torch.Tensor
    classes: list[int]
    masks: torch.Tensor
    region_weights: torch.Tensor
    crops: torch.Tensor


def dense_map_size(config: PosSamClipConfig, image_size: int) -> int:
    """Side of the ConvNeXt dense map for a square input: stride 4 (stem) x 2 per later stage."""
    return image_size // (4 * 2 ** (len(config.vision_config.hidden_sizes) - 1))


def render_world_scenes(num_scenes: int, seed: int, config: PosSamClipConfig) -> list[WorldScene]:
    """Scenes of the open-vocabulary world with every class labelled (the "web" sees all of them)."""
    classes = synthetic_classes(WORLD_CLASSES)
    options = WORLD_SCENE_OPTIONS
    mean = torch.tensor(config.image_mean).view(3, 1, 1)
    std = torch.tensor(config.image_std).view(3, 1, 1)
    side = dense_map_size(config, SCENE_SIZE)
    scenes = []
    for index in range(num_scenes):
        rng = np.random.default_rng([seed, index])
        image, segment_ids, segments_info = render_scene(
            classes, SCENE_SIZE, rng, options["max_instances"], 0.0, 0.25, options["stuff_per_scene"],
            options["color_jitter"],
        )
        pixels = (torch.from_numpy(image).permute(2, 0, 1).float() - mean) / std
        masks = torch.from_numpy(np.stack([segment_ids == segment["id"] for segment in segments_info]))
        scenes.append(
            WorldScene(
                pixels=pixels,
                classes=[segment["category_id"] - 1 for segment in segments_info],
                masks=masks,
                region_weights=_region_weights(masks, (side, side))[0],
                crops=torch.stack([_box_crop(pixels, mask, rng) for mask in masks]),
            )
        )
    return scenes


def _box_crop(pixels: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The square around a segment's bounding box (a random window of it for large stuff regions), `CROP_SIZE`^2."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    side = max(bottom - top, right - left, 8)
    if side > SCENE_SIZE // 2:  # stuff: a window centred on one of its pixels
        side = int(rng.integers(24, 49))
        pick = int(rng.integers(rows.numel()))
        center_y, center_x = int(rows[pick]), int(cols[pick])
    else:
        side = int(side * 1.2) + 2
        center_y, center_x = (top + bottom) // 2, (left + right) // 2
    top = min(max(center_y - side // 2, 0), SCENE_SIZE - side)
    left = min(max(center_x - side // 2, 0), SCENE_SIZE - side)
    crop = pixels[:, top : top + side, left : left + side].unsqueeze(0)
    return nn.functional.interpolate(crop, size=(CROP_SIZE, CROP_SIZE), mode="bilinear", align_corners=False)[0]


def _region_weights(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(K, S, S)` binary masks -> `(1, K, h, w)` pooling weights at the dense map's resolution, as PosSAM pools: the
    cells a mask covers at least half of (or, for a mask too small for any, the cells it covers most)."""
    fraction = nn.functional.adaptive_avg_pool2d(masks.float().unsqueeze(0), size)
    return pooling_weights(torch.logit(fraction.clamp(1e-4, 1 - 1e-4)))


def scene_caption(class_names: list[list[str]], is_thing: list[bool], classes: list[int], rng) -> str:
    """"a photo of a ball and a kite, with sky and grass." from a scene's segment classes (random synonyms)."""
    name = lambda index: class_names[index][int(rng.integers(len(class_names[index])))]
    things = [f"a {name(index)}" for index in dict.fromkeys(classes) if is_thing[index]]
    stuff = [name(index) for index in dict.fromkeys(classes) if not is_thing[index]]
    join = lambda words: " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]
    if not things:
        return f"a photo of {join(stuff)}."
    return f"a photo of {join(things)}" + (f", with {join(stuff)}." if stuff else ".")


class ToyClipPretrainer:
    """Symmetric InfoNCE over (image, caption) pairs with CLIP's learnable temperature (`PosSamClip.logit_scale`)."""

    def __init__(self, clip: PosSamClip, vocabulary: Vocabulary, args: ClipPretrainingArguments):
        self.clip, self.vocabulary, self.args = clip, vocabulary, args
        self.tokenizer = load_clip_tokenizer()
        self.rng = np.random.default_rng([args.seed, 1])
        decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        no_decay = [p for n, p in clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.learning_rate,
        )
        warmup, total = max(1, args.warmup_steps), max(1, args.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)),
        )

    def caption(self, class_index: int) -> str:
        names = self.vocabulary.class_names[class_index]
        template = CAPTION_TEMPLATES[int(self.rng.integers(len(CAPTION_TEMPLATES)))]
        return template.replace("{}", names[int(self.rng.integers(len(names)))])

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(captions, padding="longest", return_tensors="pt")
        return self.clip.encode_text(tokens["input_ids"], tokens["attention_mask"])

    def batch_embeddings(self, scenes: list[WorldScene]) -> tuple[torch.Tensor, list[str]]:
        """Image embeddings `(N, D)` of a batch's scene, crop and region pairs, and their N captions."""
        flips = [bool(self.rng.integers(2)) for _ in scenes]
        flip = lambda tensor, flipped: tensor.flip(-1) if flipped else tensor
        pixels = torch.stack([flip(scene.pixels, flipped) for scene, flipped in zip(scenes, flips)])
        # Region weights padded to the batch's largest segment count; padded rows pool nothing and are dropped.
        most = max(len(scene.classes) for scene in scenes)
        weights = pixels.new_zeros(len(scenes), most, *scenes[0].region_weights.shape[-2:])
        picks = [int(self.rng.integers(len(scene.classes))) for scene in scenes]
        for index, (scene, flipped) in enumerate(zip(scenes, flips)):
            weights[index, : len(scene.classes)] = flip(scene.region_weights, flipped)
        crops = torch.stack([flip(scene.crops[pick], flipped) for scene, pick, flipped in zip(scenes, picks, flips)])

        dense = self.clip.vision.dense_features(pixels)
        regions = self.clip.vision.embed_regions(mask_pool(dense, weights))
        valid = torch.tensor([[k < len(scene.classes) for k in range(most)] for scene in scenes])
        crop_dense = self.clip.vision.dense_features(crops)
        embeddings = torch.cat(
            [
                self.clip.vision.embed_regions(dense.mean(dim=(-2, -1))),
                regions[valid],
                self.clip.vision.embed_regions(crop_dense.mean(dim=(-2, -1))),
            ]
        )
        captions = [scene_caption(self.vocabulary.class_names, self.vocabulary.is_thing, s.classes, self.rng) for s in scenes]
        captions += [self.caption(label) for scene in scenes for label in scene.classes]
        captions += [self.caption(scene.classes[pick]) for scene, pick in zip(scenes, picks)]
        return embeddings, captions

    def step(self, scenes: list[WorldScene]) -> float:
        images, captions = self.batch_embeddings(scenes)
        texts = self.encode_captions(captions)
        scale = self.clip.logit_scale.exp().clamp(max=100.0)
        logits = scale * nn.functional.normalize(images, dim=-1) @ nn.functional.normalize(texts, dim=-1).T
        targets = torch.arange(logits.shape[0])
        loss = (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets)) / 2
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())


@torch.no_grad()
def zero_shot_accuracy(clip: PosSamClip, vocabulary: Vocabulary, scenes: list[WorldScene]) -> dict[str, float]:
    """Zero-shot classification of every segment of `scenes` among all classes of `vocabulary`, the way PosSAM asks
    CLIP (14 prompt templates averaged per name, a class scores its best name): accuracy of crops and of mask-pooled
    regions, on seen and unseen classes, in percent."""
    clip.eval()
    processor = PosSamProcessor(prompt_templates=DEFAULT_PROMPT_TEMPLATES)
    tokens = processor.encode_vocabulary(vocabulary)
    text = average_prompt_embeddings(
        clip.encode_text(tokens["input_ids"], tokens["attention_mask"]), tokens["prompt_to_synonym"],
        tokens["synonym_to_class"],
    )
    unseen = {WORLD_CLASSES.index(name) for name in UNSEEN_CLASSES}
    correct = {key: [] for key in ("crop_seen", "crop_unseen", "region_seen", "region_unseen")}
    crops = torch.cat([scene.crops for scene in scenes])
    crop_embeddings = clip.vision.embed_regions(clip.vision.dense_features(crops).mean(dim=(-2, -1)))
    dense = clip.vision.dense_features(torch.stack([scene.pixels for scene in scenes]))
    region_embeddings = torch.cat(
        [
            clip.vision.embed_regions(mask_pool(dense[index : index + 1], scene.region_weights.unsqueeze(0)))[0]
            for index, scene in enumerate(scenes)
        ]
    )
    labels = [label for scene in scenes for label in scene.classes]
    for kind, embeddings in (("crop", crop_embeddings), ("region", region_embeddings)):
        predicted = classify_regions(embeddings.unsqueeze(0), text, torch.tensor(1.0))[0].argmax(-1)
        for label, guess in zip(labels, predicted.tolist()):
            correct[f"{kind}_{'unseen' if label in unseen else 'seen'}"].append(guess == label)
    return {f"{key}_accuracy": round(100.0 * float(np.mean(values)), 1) for key, values in correct.items() if values}


def pretrain_toy_clip(
    output_dir: str | os.PathLike,
    args: ClipPretrainingArguments | None = None,
    num_eval_scenes: int = 64,
    log_every: int = 50,
) -> dict:
    """Pretrains the toy CLIP on the world's image-caption pairs and saves it as a CLIP-towers folder.

    Writes `output_dir/config.json` + `model.safetensors` (the converted-OpenCLIP format) and `pretraining.json`
    (arguments, loss curve, zero-shot accuracies on held-out scenes). Returns that record.
    """
    args = args or ClipPretrainingArguments()
    torch.manual_seed(args.seed)
    config = toy_clip_config()
    clip = PosSamClip(config)
    vocabulary = synthetic_vocabulary(WORLD_CLASSES)
    pool = render_world_scenes(args.num_scenes, args.seed, config) if args.steps else []
    losses = []
    if args.steps:
        trainer = ToyClipPretrainer(clip, vocabulary, args)
        clip.train()
        order = np.random.default_rng([args.seed, 2])
        for step in range(args.steps):
            batch = [pool[i] for i in order.choice(len(pool), size=min(args.batch_size, len(pool)), replace=False)]
            losses.append(trainer.step(batch))
            if log_every and (step + 1) % log_every == 0:
                logger.info(f"step {step + 1}/{args.steps}: contrastive loss {np.mean(losses[-log_every:]):.3f}")
    eval_scenes = render_world_scenes(num_eval_scenes, args.seed + 1_000_000, config)
    record = {
        "arguments": asdict(args),
        "loss_first": round(float(np.mean(losses[:10])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-10:])), 4) if losses else None,
        "chance_accuracy": round(100.0 / len(vocabulary), 1),
        **zero_shot_accuracy(clip, vocabulary, eval_scenes),
    }
    save_possam_clip(config, clip.state_dict(), output_dir)
    with open(os.path.join(output_dir, PRETRAINING_RECORD), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    return record


def load_pretraining_record(folder: str | os.PathLike) -> dict | None:
    """The `pretraining.json` of a toy-CLIP folder, or None if there is none."""
    path = os.path.join(folder, PRETRAINING_RECORD)
    if not os.path.isfile(os.path.join(folder, "model.safetensors")) or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
