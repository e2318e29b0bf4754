"""Open vocabularies: class names with synonyms and a thing/stuff flag.

A vocabulary is what PosSAM classifies against. Each class has one or more names ("person,child,girl"): every name
is embedded by the CLIP text tower and a class's logit is the maximum over its names. Stuff classes (sky, grass) are
merged into one segment per class by panoptic post-processing; thing classes (cat, car) keep one segment per instance.

Vocabulary files use FC-CLIP's `id:name1,name2` lines, optionally followed by `:thing` or `:stuff`:

    # comment
    1:person,child,girl:thing
    184:tree,trees:stuff

The line order defines the contiguous label ids 0..C-1; `id` is the dataset's own category id (kept so predictions
can be written back in the dataset's id space). Three vocabularies ship with the package: `coco_panoptic` (133),
`ade20k_150` (150) and `ade20k_847` (847).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources


SHIPPED_VOCABULARIES = ("coco_panoptic", "ade20k_150", "ade20k_847")

# In user-facing label strings ("cat,person|child,grass") commas separate classes and this separates synonyms.
SYNONYM_SEPARATOR = "|"


class VocabularyError(ValueError):
    """A vocabulary (list of labels or vocabulary file) is malformed."""


def _split_names(entry: str, where: str) -> list[str]:
    names = [name.strip() for name in entry.split(",")]
    if not entry.strip() or any(not name for name in names):
        raise VocabularyError(f"{where}: empty class name in {entry!r}; expected 'name' or 'name,synonym,...'.")
    return names


def split_class_list(text: str, where: str) -> list[list[str]]:
    """`"cat,person|child,grass"` -> `[["cat"], ["person", "child"], ["grass"]]`: the string form of a list of
    classes, as on the command line and in transformers' zero-shot pipelines (commas separate classes), with `|`
    separating the synonyms of one class."""
    classes = []
    for position, item in enumerate(text.split(","), start=1):
        names = [name.strip() for name in item.split(SYNONYM_SEPARATOR)]
        if not all(names):
            raise VocabularyError(
                f"{where}: empty class name in item {position} of {text!r}; separate classes with ',' and the "
                f"synonyms of one class with '{SYNONYM_SEPARATOR}' (e.g. \"cat,person{SYNONYM_SEPARATOR}child\")."
            )
        classes.append(names)
    return classes


def split_class_entry(entry: str, where: str) -> list[str]:
    """One class given as one list entry -> its names: `"person|child"` (or the older `"person,child"`, still
    accepted since a list entry is always one class) -> `["person", "child"]`. Mixing both separators is refused."""
    if SYNONYM_SEPARATOR in entry and "," in entry:
        raise VocabularyError(
            f"{where}: {entry!r} mixes ',' and '{SYNONYM_SEPARATOR}'; a list entry is one class, separate its "
            f"synonyms with '{SYNONYM_SEPARATOR}' (e.g. \"person{SYNONYM_SEPARATOR}child\")."
        )
    if SYNONYM_SEPARATOR not in entry:
        return _split_names(entry, where)
    names = [name.strip() for name in entry.split(SYNONYM_SEPARATOR)]
    if any(not name for name in names):
        raise VocabularyError(f"{where}: empty class name in {entry!r}; expected 'name' or 'name|synonym|...'.")
    return names


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of classes, each with its names (first = display label), thing flag and dataset id.

    Attributes:
        class_names (`list[list[str]]`): per class, its names; the first one is the label shown to users.
        is_thing (`list[bool]`): per class, whether it is a countable thing (else stuff, merged per class).
        dataset_ids (`list[int]`): per class, the dataset's category id (defaults to 0..C-1).
    """

    class_names: list[list[str]]
    is_thing: list[bool]
    dataset_ids: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.class_names:
            raise VocabularyError("The vocabulary is empty: give at least one class name.")
        if len(self.is_thing) != len(self.class_names):
            raise VocabularyError(
                f"is_thing has {len(self.is_thing)} entries but the vocabulary has {len(self.class_names)} classes."
            )
        if not self.dataset_ids:
            object.__setattr__(self, "dataset_ids", list(range(len(self.class_names))))
        if len(self.dataset_ids) != len(self.class_names):
            raise VocabularyError(
                f"dataset_ids has {len(self.dataset_ids)} entries but the vocabulary has {len(self.class_names)} classes."
            )
        # Display labels may repeat in real datasets (ADE20K-847 has two "pot" classes with different synonyms), so
        # only a class repeated with exactly the same names is an error here; `from_labels` is stricter.
        entries = [",".join(names) for names in self.class_names]
        duplicates = sorted({entry for entry in entries if entries.count(entry) > 1})
        if duplicates:
            raise VocabularyError(f"Duplicate classes in the vocabulary: {duplicates}.")
        if len(set(self.dataset_ids)) != len(self.dataset_ids):
            raise VocabularyError("Duplicate dataset ids in the vocabulary.")

    def __len__(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> list[str]:
        """The display label of each class (its first name)."""
        return [names[0] for names in self.class_names]

    @property
    def entries(self) -> list[str]:
        """Each class as one comma-joined string of names, the form stored in configs ("person,child,girl")."""
        return [",".join(names) for names in self.class_names]

    @property
    def stuff_label_ids(self) -> list[int]:
        """Contiguous label ids of the stuff classes (what panoptic post-processing merges per class)."""
        return [index for index, thing in enumerate(self.is_thing) if not thing]

    @classmethod
    def from_labels(
        cls,
        candidate_labels: str | list[str],
        stuff_labels: str | list[str] | None = None,
        dataset_ids: list[int] | None = None,
    ) -> "Vocabulary":
        """Builds a vocabulary from user labels, as transformers' zero-shot pipelines take them.

        Args:
            candidate_labels: a list with one entry per class (`["cat", "person|child", "grass"]`; `|` separates
                the synonyms of one class, the first name is the display label; the older `"person,child"` entry
                form is still read as one class with two names), or one string of comma-separated classes
                (`"cat,person|child,grass"`, the command line's form).
            stuff_labels: the classes to treat as stuff, in either form, given by display label or by the full entry.
            dataset_ids: optional dataset category ids, one per class.
        """
        class_names = _user_classes(candidate_labels, "candidate_labels")
        if not class_names:
            raise VocabularyError("candidate_labels is empty: give at least one class name.")
        labels = [names[0] for names in class_names]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise VocabularyError(f"Duplicate labels in candidate_labels: {duplicates}; each class needs its own label.")
        owner: dict[str, int] = {}
        for index, names in enumerate(class_names):
            for name in names:
                if owner.setdefault(name, index) != index:
                    first = owner[name]
                    raise VocabularyError(
                        f"The name {name!r} is given to two classes, {first + 1} ({labels[first]!r}) and {index + 1} "
                        f"({labels[index]!r}); every pixel it matches would go to either. Give each name to one class."
                    )
        stuff = set()
        for names in _user_classes(stuff_labels, "stuff_labels") if stuff_labels is not None else []:
            label = names[0]
            if label not in labels:
                raise VocabularyError(
                    f"Stuff label {label!r} is not one of the candidate labels {labels}; every stuff label must also "
                    "be a candidate label."
                )
            stuff.add(label)
        return cls(class_names, [label not in stuff for label in labels], list(dataset_ids or []))

    @classmethod
    def from_entries(cls, entries: list[str], is_thing: list[bool] | None = None) -> "Vocabulary":
        """Builds a vocabulary from config entries ("person,child") and optional thing flags (default: all things)."""
        class_names = [_split_names(entry, f"vocabulary[{i}]") for i, entry in enumerate(entries)]
        return cls(class_names, list(is_thing) if is_thing is not None else [True] * len(class_names))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Vocabulary":
        """Parses a vocabulary file (`id:name1,name2[:thing|:stuff]` per line, `#` comments)."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise VocabularyError(f"Cannot read vocabulary file {path!r}: {error.strerror}.") from None
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise VocabularyError(f"{path}: the file is UTF-16 encoded; save it as UTF-8.")
        try:
            text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark (Windows editors) is not part of the first line
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise VocabularyError(
                f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8."
            ) from None
        return cls.from_text(text, source=path)

    @classmethod
    def from_text(cls, text: str, source: str = "<vocabulary>") -> "Vocabulary":
        class_names, is_thing, dataset_ids = [], [], []
        id_lines: dict[int, int] = {}  # line number of each id and class, to name both lines of a duplicate
        entry_lines: dict[str, int] = {}
        for number, raw_line in enumerate(text.splitlines(), start=1):
            line = raw_line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}, line {number}"
            parts = line.split(":")
            if len(parts) not in (2, 3) or not parts[0].strip().lstrip("-").isdigit():
                raise VocabularyError(
                    f"{where}: expected 'id:name1,name2' optionally followed by ':thing' or ':stuff', got {line!r}."
                )
            flag = parts[2].strip().lower() if len(parts) == 3 else "thing"
            if flag not in ("thing", "stuff"):
                raise VocabularyError(f"{where}: the flag must be 'thing' or 'stuff', got {parts[2]!r}.")
            dataset_id, names = int(parts[0]), _split_names(parts[1], where)
            if dataset_id in id_lines:
                raise VocabularyError(f"{where}: id {dataset_id} was already given on line {id_lines[dataset_id]}.")
            entry = ",".join(names)
            if entry in entry_lines:
                raise VocabularyError(f"{where}: class {entry!r} was already given on line {entry_lines[entry]}.")
            id_lines[dataset_id], entry_lines[entry] = number, number
            dataset_ids.append(dataset_id)
            class_names.append(names)
            is_thing.append(flag == "thing")
        if not class_names:
            raise VocabularyError(f"{source}: no class lines found.")
        return cls(class_names, is_thing, dataset_ids)

    def to_text(self) -> str:
        """Serializes to the vocabulary-file format (round-trips through `from_text`)."""
        return "".join(
            f"{dataset_id}:{','.join(names)}:{'thing' if thing else 'stuff'}\n"
            for dataset_id, names, thing in zip(self.dataset_ids, self.class_names, self.is_thing)
        )


def _user_classes(labels, argument: str) -> list[list[str]]:
    """A label string or list (see `Vocabulary.from_labels`) -> each class's names."""
    if isinstance(labels, str):
        return split_class_list(labels, argument) if labels.strip() else []
    if not isinstance(labels, (list, tuple)):
        raise VocabularyError(
            f"{argument} must be a list of class names or a comma-separated string of them, got {type(labels).__name__}."
        )
    bad = [entry for entry in labels if not isinstance(entry, str)]
    if bad:
        raise VocabularyError(f"{argument}: every class entry must be a string, got {bad[:3]!r}.")
    return [split_class_entry(entry, f"{argument}[{index}]") for index, entry in enumerate(labels)]


def load_vocabulary(name_or_path: str | os.PathLike) -> Vocabulary:
    """Loads a shipped vocabulary by name (`coco_panoptic`, `ade20k_150`, `ade20k_847`) or a vocabulary file."""
    if str(name_or_path) in SHIPPED_VOCABULARIES:
        text = resources.files(__package__).joinpath("vocabularies", f"{name_or_path}.txt").read_text("utf-8")
        return Vocabulary.from_text(text, source=str(name_or_path))
    if not os.path.exists(name_or_path):
        raise VocabularyError(
            f"Vocabulary {str(name_or_path)!r} is neither a shipped vocabulary {list(SHIPPED_VOCABULARIES)} "
            "nor an existing file."
        )
    return Vocabulary.from_file(name_or_path)
