"""`possam convert`: turn published SAM and CLIP checkpoints into PosSAM checkpoints.

    possam convert sam sam_vit_b_01ec64.pth --out sam-vit-b            # Meta's .pth -> transformers SamModel
    possam convert openclip open_clip_pytorch_model.bin --out clip-l    # OpenCLIP ConvNeXt -> PosSAM CLIP towers
    possam convert build --sam facebook/sam-vit-base --clip clip-l --out possam-b   # untrained PosSAM + processor
    possam convert params                                               # parameter counts of PosSAM-B/L/H

A missing file or a checkpoint that does not fit exits with status 1 and a one-line message naming the file and the
problem.
"""

from __future__ import annotations

import argparse
import sys

import torch
from transformers import SamConfig, SamModel, SamVisionModel

from .backbones import parameter_counts, save_possam_clip
from .checkpoint_io import CheckpointError
from .configuration import PRESETS, possam_preset
from .convert_openclip import convert_openclip_checkpoint
from .convert_sam import convert_sam_checkpoint
from .modeling_possam import PosSamModel


def convert_sam_to_folder(checkpoint: str, save_directory: str) -> SamModel | SamVisionModel:
    """Meta's SAM `.pth` -> a transformers `SamModel` folder (`config.json` + `model.safetensors`), the layout of
    `facebook/sam-vit-*`; a `SamVisionModel` folder for a checkpoint that holds only the image encoder."""
    weights = convert_sam_checkpoint(checkpoint)
    if weights.prompt_decoder is None:
        config, state_dict = weights.vision_config, weights.vision_state_dict
        model_class = SamVisionModel
    else:
        config = SamConfig(
            vision_config=weights.vision_config.to_dict(),
            prompt_encoder_config=weights.prompt_decoder.prompt_encoder_config.to_dict(),
            mask_decoder_config=weights.prompt_decoder.mask_decoder_config.to_dict(),
        )
        state_dict = {**weights.vision_state_dict, **weights.prompt_decoder.state_dict}
        # SamModel ties the prompt encoder's positional embedding to this one; both names are in its state dict.
        positional = state_dict["prompt_encoder.shared_embedding.positional_embedding"]
        state_dict["shared_image_embedding.positional_embedding"] = positional
        model_class = SamModel
    # Built on the meta device and filled by assignment: a ViT-H is never initialized only to be overwritten.
    with torch.device("meta"):
        model = model_class(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.save_pretrained(save_directory)
    return model


def preset_parameter_counts(preset: str):
    """`parameter_counts` of a preset's `PosSamModel`, instantiated on the `meta` device (no memory, no init cost)."""
    with torch.device("meta"):
        model = PosSamModel(possam_preset(preset))
    return parameter_counts(model)


def format_parameter_counts(preset: str, counts) -> str:
    lines = [f"PosSAM preset {preset!r}", f"  {'part':<22}{'trainable':>15}{'frozen':>15}"]
    lines += [f"  {part:<22}{row['trainable']:>15,}{row['frozen']:>15,}" for part, row in counts.items()]
    return "\n".join(lines)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Convert pretrained SAM and CLIP checkpoints for PosSAM.")
    commands = parser.add_subparsers(dest="command", required=True)

    sam = commands.add_parser("sam", help="Meta's segment-anything .pth -> transformers SamModel folder.")
    sam.add_argument("checkpoint", help="e.g. sam_vit_b_01ec64.pth")
    sam.add_argument("--out", required=True, help="output folder")

    openclip = commands.add_parser("openclip", help="OpenCLIP ConvNeXt CLIP checkpoint -> PosSAM CLIP towers folder.")
    openclip.add_argument("checkpoint", help="state dict file (.bin/.pt/.pth/.safetensors)")
    openclip.add_argument("--out", required=True, help="output folder")
    openclip.add_argument("--text-head-dim", type=int, default=64, help="width of one text attention head (64)")
    openclip.add_argument(
        "--text-hidden-act", default="gelu", choices=("gelu", "quick_gelu"), help="text MLP activation (gelu)"
    )

    build = commands.add_parser("build", help="SAM + CLIP -> untrained PosSAM checkpoint (one safetensors file).")
    build.add_argument("--sam", required=True, help="Hub id or folder of a transformers SAM, or a SAM .pth")
    build.add_argument(
        "--clip", required=True, help="Hub id or folder of a CLIPModel or converted towers, or an OpenCLIP file"
    )
    build.add_argument(
        "--preset", choices=PRESETS, default=None, help="decoder settings (default: base's; B/L/H check the SAM size)"
    )
    build.add_argument("--out", required=True, help="output folder")

    params = commands.add_parser("params", help="parameter counts of presets (instantiated on the meta device)")
    params.add_argument("--preset", choices=PRESETS, nargs="+", default=["base", "large", "huge"])
    return parser


def main(argv: list[str], prog: str = "possam convert") -> int:
    try:
        args = _parser(prog).parse_args(argv)
    except SystemExit as exit:  # --help, or a usage error argparse already reported
        return int(exit.code or 0)
    try:
        if args.command == "sam":
            model = convert_sam_to_folder(args.checkpoint, args.out)
            config = getattr(model.config, "vision_config", model.config)
            print(
                f"Wrote {args.out}: {type(model).__name__} (image encoder hidden_size {config.hidden_size}, "
                f"{config.num_hidden_layers} layers, {model.num_parameters():,} parameters)."
            )
        elif args.command == "openclip":
            config, state_dict = convert_openclip_checkpoint(args.checkpoint, args.text_head_dim, args.text_hidden_act)
            save_possam_clip(config, state_dict, args.out)
            print(
                f"Wrote {args.out}: PosSAM CLIP towers (ConvNeXt depths {list(config.vision_config.depths)}, "
                f"embedding {config.projection_dim}, {sum(v.numel() for v in state_dict.values()):,} parameters)."
            )
        elif args.command == "build":
            from .processing import PosSamProcessor, embed_default_vocabulary

            model = PosSamModel.from_pretrained_backbones(args.sam, args.clip, config=args.preset)
            processor = PosSamProcessor.for_model_config(model.config)
            embed_default_vocabulary(model, processor)
            model.save_pretrained(args.out)
            processor.save_pretrained(args.out)
            total = parameter_counts(model)["total"]
            print(
                f"Wrote {args.out}: untrained PosSAM ({total['frozen']:,} frozen and {total['trainable']:,} "
                f"trainable parameters), its processor, and the embeddings of its default vocabulary "
                f"({len(model.config.vocabulary)} COCO panoptic classes)."
            )
        else:
            print(
                "\n\n".join(format_parameter_counts(preset, preset_parameter_counts(preset)) for preset in args.preset)
            )
    except (CheckpointError, ValueError, OSError) as error:
        # One line: the message already names the file and what does not fit it.
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"{prog}: error: {message or type(error).__name__}", file=sys.stderr)
        return 1
    return 0
