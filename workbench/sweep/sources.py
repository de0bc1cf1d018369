"""Where a sweep's inputs come from: .npz feeds, one .npz with a dataset axis, sentences, images.

Each source yields `Item`s in a stable order: an id that names the input to the user (a file name,
`data.npz[17]`, `lines 5-8`), and its feed, or the problem that keeps it out of the sweep (a corrupt
file among good ones is reported and skipped, the rest still swept).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.io.feeds import Feed, load_feed
from workbench.ir.graph import GraphIndex

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


@dataclass(frozen=True)
class Item:
    id: str
    feed: Feed | None
    problem: str | None = None  # why this input is skipped


class Source:
    """An ordered collection of inputs; `describe` says what it is, in a few words."""

    description = "inputs"

    def items(self) -> Iterator[Item]:
        raise NotImplementedError

    def feed(self, input_id: str) -> Feed:
        """The feed of one input again, for its diagnosis."""
        for item in self.items():
            if item.id == input_id and item.feed is not None:
                return item.feed
        raise WorkbenchError(f"no input '{input_id}' in {self.description}.")


def open_source(spec, index: GraphIndex, model_path: Path | None = None, tokenizer=None, batch_size: int = 1) -> Source:
    """The source `spec` names: a folder, an .npz, a text file, or a list of feeds (Python only)."""
    if batch_size < 1:
        raise WorkbenchError(f"batch size must be at least 1, not {batch_size}.")
    if isinstance(spec, (list, tuple)):
        return FeedList(list(spec))
    path = Path(spec)
    if not path.exists():
        raise WorkbenchError(f"{path}: no such file or folder; give a folder of .npz feeds or images, an .npz, or a text file.")
    if path.is_dir():
        npz = sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if npz:
            return NpzFolder(path, npz)
        if images:
            return ImageFolder(path, images, index, batch_size)
        raise WorkbenchError(f"{path} holds no .npz feeds and no images ({', '.join(sorted(IMAGE_SUFFIXES))}); nothing to sweep.")
    if path.suffix == ".npz":
        return NpzDataset(path, index)
    return Sentences(path, index, _tokenizer(tokenizer, model_path), batch_size)


class FeedList(Source):
    description = "the feeds given"

    def __init__(self, feeds: list):
        if not feeds:
            raise WorkbenchError("the list of feeds is empty; nothing to sweep.")
        self._feeds = feeds

    def items(self):
        for i, feed in enumerate(self._feeds):
            yield Item(f"feed {i}", dict(feed))


class NpzFolder(Source):
    def __init__(self, folder: Path, files: list[Path]):
        self.description, self._files = f"{folder} ({len(files)} .npz)", files

    def items(self):
        for path in self._files:
            try:
                yield Item(path.name, load_feed(path))
            except WorkbenchError as exc:
                yield Item(path.name, None, str(exc))


class NpzDataset(Source):
    """One .npz whose arrays share a leading dataset axis; a row of the model's rank minus one gets a batch axis."""

    def __init__(self, path: Path, index: GraphIndex):
        self._path, self._arrays = path, load_feed(path)
        sizes = {name: a.shape[0] if a.ndim else None for name, a in self._arrays.items()}
        if not sizes or None in sizes.values() or len(set(sizes.values())) != 1:
            raise WorkbenchError(f"{path}: the arrays must share a leading dataset axis; their sizes along axis 0 are "
                                 f"{', '.join(f'{n}: {s}' for n, s in sizes.items()) or 'none (no arrays)'}.")
        self._count = next(iter(sizes.values()))
        if not self._count:
            raise WorkbenchError(f"{path}: the dataset axis is empty; nothing to sweep.")
        self._ranks = _input_ranks(index)
        self.description = f"{path.name} ({self._count} rows)"

    def items(self):
        for i in range(self._count):
            feed = {}
            for name, array in self._arrays.items():
                keep_axis = self._ranks.get(name) == array.ndim  # [N, seq] for a [batch, seq] input: a batch of one
                feed[name] = array[i:i + 1] if keep_axis else array[i]
            yield Item(f"{self._path.name}[{i}]", feed)


class Sentences(Source):
    """One sentence per line, `batch_size` lines per input padded to the longest; a blank line is a row of padding only.

    A serving system that runs fixed-size batches pads a short request with such rows (attention mask all 0).
    """

    def __init__(self, path: Path, index: GraphIndex, tokenizer, batch_size: int):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError) as exc:
            raise WorkbenchError(f"{path} is not a readable UTF-8 text file of sentences ({exc}).") from None
        while lines and not lines[-1].strip():
            lines.pop()
        if not any(line.strip() for line in lines):
            raise WorkbenchError(f"{path} holds no sentences; write one sentence per line.")
        self._lines, self._tokenizer, self._batch = lines, tokenizer, batch_size
        self._inputs = set(index.input_names)
        self.description = f"{path.name} ({sum(1 for s in lines if s.strip())} sentences)"

    def items(self):
        for start in range(0, len(self._lines), self._batch):
            chunk = self._lines[start:start + self._batch]
            name = f"line {start + 1}" if len(chunk) == 1 else f"lines {start + 1}-{start + len(chunk)}"
            yield Item(name, self._tokenize(chunk))

    def _tokenize(self, sentences: list[str]) -> Feed:
        """int64 arrays [len(sentences), longest]; a blank line's row is padding (mask 0) throughout."""
        texts = [s for s in sentences if s.strip()] or [""]
        limit = min(getattr(self._tokenizer, "model_max_length", 512) or 512, 4096)
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="np")
        filled = [i for i, s in enumerate(sentences) if s.strip()]
        feed = {}
        for key in (k for k in batch if k in self._inputs):
            values = np.asarray(batch[key], np.int64)
            filler = (self._tokenizer.pad_token_id or 0) if key == "input_ids" else 0
            rows = np.full((len(sentences), values.shape[1]), filler, np.int64)
            rows[filled] = values[:len(filled)]
            feed[key] = rows
        return feed


class ImageFolder(Source):
    """Images resized to the model's image input, RGB (or grey for one channel), float32 in [0, 1]."""

    def __init__(self, folder: Path, files: list[Path], index: GraphIndex, batch_size: int):
        try:
            import PIL.Image  # noqa: F401
        except ImportError:
            raise WorkbenchError("reading images needs Pillow: pip install pillow.") from None
        self._files, self._layout = files, _image_layout(index)
        self.description = f"{folder} ({len(files)} images)"

    def items(self):
        for path in self._files:
            try:
                yield Item(path.name, {self._layout[0]: self._load(path)})
            except WorkbenchError as exc:
                yield Item(path.name, None, str(exc))

    def _load(self, path: Path) -> np.ndarray:
        import PIL.Image

        name, channels_first, channels, height, width = self._layout
        try:
            with PIL.Image.open(path) as image:
                image = image.convert("RGB" if channels == 3 else "L")
                if height and width:
                    image = image.resize((width, height))
                pixels = np.asarray(image, np.float32) / 255.0
        except (PIL.Image.UnidentifiedImageError, OSError, ValueError) as exc:
            raise WorkbenchError(f"{path.name} is not a readable image ({exc}).") from None
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
        return (pixels.transpose(2, 0, 1) if channels_first else pixels)[None]


def _image_layout(index: GraphIndex) -> tuple:
    """(input name, channels first, channels, height, width) of the model's one 4-D float input."""
    for info in index.graph.input:
        if info.name not in index.input_names or not info.type.HasField("tensor_type"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in info.type.tensor_type.shape.dim]
        if info.type.tensor_type.elem_type == 1 and len(dims) == 4:
            if dims[1] in (1, 3):
                return info.name, True, dims[1], dims[2], dims[3]
            if dims[3] in (1, 3):
                return info.name, False, dims[3], dims[1], dims[2]
            return info.name, True, 3, dims[2], dims[3]
    raise WorkbenchError("the model has no 4-D float image input [batch, channels, height, width]; give .npz feeds instead of images.")


def _input_ranks(index: GraphIndex) -> dict[str, int]:
    return {i.name: len(i.type.tensor_type.shape.dim) for i in index.graph.input
            if i.name in index.input_names and i.type.tensor_type.HasField("shape")}


def _tokenizer(given, model_path: Path | None):
    """The tokenizer object given, or one loaded from the folder given or found beside the model."""
    if given is not None and not isinstance(given, (str, Path)):
        return given
    folder = Path(given) if given is not None else (model_path.parent if model_path else None)
    if folder is None or not any((folder / name).is_file() for name in TOKENIZER_FILES):
        where = f"in {folder}" if given is not None else ("beside the model" if model_path else "for a model given in memory")
        raise WorkbenchError(f"no tokenizer {where} (none of {', '.join(TOKENIZER_FILES)}); "
                             "pass --tokenizer DIR, the folder the tokenizer was saved to.")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise WorkbenchError("reading sentences needs a tokenizer from transformers: pip install transformers.") from None
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"cannot load the tokenizer in {folder}: {' '.join(str(exc).split())[:200]}") from None

