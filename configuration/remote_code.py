"""The Hub remote code of a saved PosSAM folder: `auto_map`, `custom_pipelines` and the small modules they name.

transformers finds a model that is not part of the library through entries in its saved JSON files
(`config.json`, `processor_config.json`) of the form `"AutoModel": "modeling_possam.PosSamModel"`: with
`trust_remote_code=True` it imports `modeling_possam.py` from the folder (or Hub repository) and takes the class from
it. PosSAM's modules are a thin layer over the installed `possam` package: each is one import line, so a folder's
remote code is always the code of the installed package, never a copy that could drift from it. transformers checks
a remote module's imports before running it, so without `possam` installed loading fails with its standard message
("This modeling file requires the following packages that were not found in your environment: possam. Run
`pip install possam`").

Every `save_pretrained` of PosSAM (configuration, model, processor, image processor) writes the modules its JSON
names, from the table below (the only place they are defined).
"""

from __future__ import annotations

import os


# module written beside the JSON files -> the class it imports from the installed package's public API (`possam`)
REMOTE_MODULES: dict[str, str] = {
    "configuration_possam": "PosSamConfig",
    "modeling_possam": "PosSamModel",
    "image_processing_possam": "PosSamImageProcessor",
    "processing_possam": "PosSamProcessor",
    "pipeline_possam": "OpenVocabPanopticPipeline",
}

# The pipeline task PosSAM registers with transformers (`import possam`) and names in `custom_pipelines`.
TASK = "open-vocab-panoptic"


def _reference(module: str) -> str:
    return f"{module}.{REMOTE_MODULES[module]}"


# `config.json`: every Auto class `import possam` registers, so that each works without it.
CONFIG_AUTO_MAP = {
    "AutoConfig": _reference("configuration_possam"),
    "AutoModel": _reference("modeling_possam"),
    "AutoModelForImageSegmentation": _reference("modeling_possam"),
    "AutoModelForUniversalSegmentation": _reference("modeling_possam"),
    "AutoImageProcessor": _reference("image_processing_possam"),
    "AutoProcessor": _reference("processing_possam"),
}
# `config.json`: lets `pipeline(model=folder, trust_remote_code=True)` infer the task and find its class.
CUSTOM_PIPELINES = {TASK: {"impl": _reference("pipeline_possam"), "pt": ["AutoModel"], "tf": [], "type": "image"}}
# `processor_config.json` and the image processor's own JSON.
PROCESSOR_AUTO_MAP = {"AutoProcessor": _reference("processing_possam")}
IMAGE_PROCESSOR_AUTO_MAP = {"AutoImageProcessor": _reference("image_processing_possam")}

_HEADER = (
    '"""Hub remote code of a PosSAM folder, written by the `possam` package: it loads `{name}` from the installed\n'
    "package (pip install possam). See possam.configuration.remote_code.\"\"\"\n\n"
)

# Set once transformers has loaded PosSAM through a folder's remote code in this process (see `SavesRemoteCode`).
_remote_code_in_use = False


def module_source(module: str) -> str:
    """The text of a remote-code module: a docstring and one import from the installed package."""
    name = REMOTE_MODULES[module]
    return _HEADER.format(name=name) + f"from possam import {name}\n\n__all__ = [\"{name}\"]\n"


def write_remote_code(save_directory: str | os.PathLike, auto_map: dict, custom_pipelines: dict | None = None) -> list[str]:
    """Writes the modules that `auto_map` (and `custom_pipelines`) name into `save_directory`; returns their paths."""
    references = list(auto_map.values()) + [task["impl"] for task in (custom_pipelines or {}).values()]
    modules = sorted({reference.split(".")[0] for reference in references})
    os.makedirs(save_directory, exist_ok=True)
    paths = []
    for module in modules:
        path = os.path.join(save_directory, f"{module}.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(module_source(module))
        paths.append(path)
    return paths


def remote_code_in_use() -> bool:
    """Whether transformers loaded a PosSAM class through a folder's remote code (`trust_remote_code=True`) in this
    process. Loaded configurations keep `custom_pipelines` only then (see `PosSamConfig`)."""
    return _remote_code_in_use


class SavesRemoteCode:
    """Mixin of PosSAM's configuration, model, processor and image processor: they write their remote code on every
    `save_pretrained`, so transformers' own mechanism for custom classes is switched off."""

    @classmethod
    def register_for_auto_class(cls, auto_class=None):
        """transformers calls this on a class it loaded through remote code; it then makes `save_pretrained` copy the
        source file that defines the class, with its relative imports, which fails for a module of an installed
        package (FileNotFoundError). PosSAM's `save_pretrained` always writes its own `auto_map` and thin modules
        instead, so this only records that remote code is in use."""
        global _remote_code_in_use
        _remote_code_in_use = True
