"""Grouped reader of EasyRec's ``GroupRTPInput``: one line per item group (end-to-end multimodal DBMTL).

One line is one **group**: one item with one image and ``g >= 1`` samples (impressions)
of that item. Columns are separated by ``rtp_separator`` (default ``;``) and chosen by
``selected_cols`` (0-based): the label columns (``label_fields`` order), the feature
column, the image column, the group-size column; other columns are ignored. A label
column holds ``g`` values separated by ``group_sample_separator`` (default ``,``); the
feature column holds ``g`` sample strings separated the same way, each holding the
``F`` non-label input fields other than the image and group-size fields, in
``input_fields`` order, separated by ``separator``. Example (``<A>`` = ``\\x01``,
``<B>`` = ``\\x02``; labels ``clk, play_time``; fields ``user_id, age_level, price``)::

    1<A>0<A>0;35.2<A>0.0<A>12.5;u1<B>2<B>99.0<A>u2<B>3<B>99.0<A>u3<B>1<B>99.0;imgs/1001.png;3

A block holds one row per group: ``group_size`` int64 ``(n,)``, ``img`` float32
``(n, H, W, 3)`` (when the config has an ``img`` feature group) and the per-sample
columns as :class:`~recstack.data.base.GroupedRows` (``sample_num``: each sample's group
in its batch), so the loader's ``batch_size`` counts groups and never splits one.
A batch of ``n`` groups and ``N`` samples::

    <label>      float32 (N, 1)         as the tabular reader
    all.ids      int64   (N, k)         as the tabular reader (same code: types, defaults, hashing, bucketing)
    all.values   float32 (N, m)
    sample_num   int64   (N,)           repeat_interleave(arange(n), group_size)
    group_size   int64   (n,)
    img          float32 (n, H, W, 3)   BGR, 0-255, no resize or normalisation

The per-sample values are parsed by :class:`recstack.easyrec.tabular.TabularReader` (each
sample becomes one line ``labels + sample string``), so they follow exactly its rules.

Images (Pillow): ``Image.open(path).convert("RGB")``, channels reversed to BGR, float32
0-255 (EasyRec decodes with OpenCV, which gives BGR). Each distinct path of a block is
decoded once. A relative path resolves against ``data_config.image_root`` (itself
relative to the YAML's folder) or, when unset, against the data file's folder (its real
folder when the file is a symbolic link). A
missing file gives zeros of the configured shape and is counted
(:attr:`GroupRTPReader.missing_images`, one warning per file with the count); an
undecodable file or one of another size is an error naming the file, the line and the
image path.

Validation (errors name ``file:line``): a line with too few columns; ``group_size`` not
an integer, ``< 1`` or above ``max_group_size`` (when set); a label column or the feature
column whose token count differs from ``group_size``; a sample whose feature count is
not ``F`` (also naming the sample index); a bad value in a sample (the tabular reader's
message, plus the sample index).

Blocks are small (a bounded number of groups, so that decoded images fit in memory),
and not stored in the binary cache (``runner.cache_dir`` is ignored with a warning).

:func:`group_by_item` builds grouped lines from flat per-sample rows.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor

import numpy as np

from recstack.config import Config, ConfigError
from recstack.data.base import (
    Block,
    BlockReader,
    DataFormatError,
    GroupedRows,
    GroupIndex,
    bad_line,
    parse_int,
    read_chunks,
)
from recstack.easyrec.features import DATA_CONFIG, TabularSpec
from recstack.easyrec.schema import source
from recstack.easyrec.tabular import TabularReader
from recstack.registry import READERS

logger = logging.getLogger(__name__)

#: decoded image bytes aimed at per block (the number of groups per block follows from the image size)
BLOCK_IMAGE_BYTES = 48 << 20
MIN_BLOCK_GROUPS = 64


def decode_image(path: str) -> np.ndarray:
    """An image file as float32 ``(H, W, 3)``, BGR, 0-255 (Pillow; what OpenCV's ``imread`` gives).

    Raises:
        OSError: the file cannot be read or decoded (``PIL.UnidentifiedImageError`` is an ``OSError``).
    """
    return _decode_bgr_uint8(path).astype(np.float32)


def _decode_bgr_uint8(path: str) -> np.ndarray:
    """uint8 ``(H, W, 3)`` BGR view of the decoded file (converted to float32 when copied into the batch)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    return rgb[:, :, ::-1]


@READERS.register("group_rtp")
class GroupRTPReader(BlockReader):
    """Reader of ``data_config.input_type: GroupRTPInput`` files (see the module docstring).

    Attributes:
        spec: the grouped :class:`~recstack.easyrec.features.TabularSpec`.
        missing_images: image files not found so far (replaced by zeros).
        missing_by_file: data file -> missing images in it.
    """

    cacheable = False

    def __init__(self, file_list: Sequence[str], config: Config) -> None:
        super().__init__(file_list, config)
        self.spec = spec = TabularSpec.from_config(config)
        if spec.group_input is None:
            raise ConfigError(f"{source(config, DATA_CONFIG + '.input_type')}: the group_rtp reader reads "
                              "input_type GroupRTPInput (for CSVInput use the tabular reader)")
        self.grouped = grouped = spec.group_input
        self.samples = TabularReader(file_list, config, spec=spec.sample_spec())
        self.columns = {name: (np.dtype(dtype), width) for name, (dtype, width) in spec.block_columns().items()}
        self.num_features = len(spec.sample_spec().input_fields) - len(spec.label_fields)
        self.min_columns = max(grouped.selected_cols) + 1
        self.img_shape = spec.img_shape  # (H, W, C) or None: images are then not read
        pixels = int(np.prod(self.img_shape)) * 4 if self.img_shape else 0
        self.block_groups = max(MIN_BLOCK_GROUPS, BLOCK_IMAGE_BYTES // pixels) if pixels else 1 << 16
        self.missing_by_file: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        #: set by the prediction service for uploads: image paths resolve against this folder and must stay in
        #: it (relative, no '..': else an error naming the line), and messages do not show resolved paths
        self.confine_images_to: str | None = None

    @property
    def missing_images(self) -> int:
        """Image files not found so far (each replaced by zeros of the configured shape)."""
        return sum(self.missing_by_file.values())

    def signature(self) -> str:
        return f"{super().signature()}|{self.spec!r}"

    # ------------------------------------------------------------------ chunks and files
    def chunks(self, path: str) -> Iterator[tuple[bytes, int]]:
        """Chunks of at most :attr:`block_groups` lines (decoded images must fit in memory)."""
        for chunk, first in read_chunks(path):
            lines = chunk.split(b"\n")[:-1]  # a chunk ends with a newline
            for start in range(0, len(lines), self.block_groups):
                part = lines[start:start + self.block_groups]
                yield b"\n".join(part) + b"\n", first + start

    def iter_file(self, path: str, pool: Executor | None = None) -> Iterator[Block]:
        before = self.missing_by_file.get(path, 0)
        yield from super().iter_file(path, pool)
        missing = self.missing_by_file.get(path, 0) - before
        if missing:
            logger.warning("%s: %d image file(s) not found; zeros of shape %s used instead", path, missing,
                           self.img_shape)

    # ------------------------------------------------------------------ parsing
    def parse_block(self, chunk: bytes, path: str, first_line: int) -> Block:
        grouped, labels = self.grouped, self.spec.label_fields
        rtp, sample_sep, feature_sep = grouped.rtp_separator, grouped.group_sample_separator, self.spec.separator
        label_cols, (feature_col, img_col, size_col) = grouped.selected_cols[:-3], grouped.selected_cols[-3:]
        sizes: list[int] = []
        paths: list[str] = []
        line_numbers: list[int] = []
        flat: list[str] = []
        for offset, raw in enumerate(chunk.split(b"\n")):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            line_no = first_line + offset
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise bad_line(path, line_no, raw, "not valid UTF-8") from None
            cols = text.split(rtp)
            if len(cols) < self.min_columns:
                raise bad_line(path, line_no, raw, f"expected at least {self.min_columns} {rtp!r}-separated columns "
                                                   f"(selected_cols {list(grouped.selected_cols)}), got {len(cols)}")
            size_text = cols[size_col].strip()
            try:
                size = parse_int(size_text)  # the readers' grammar (doc/custom_reader.md#numbers)
            except ValueError:
                raise bad_line(path, line_no, raw, f"group size column {size_col} ('{grouped.size_field}') is not "
                                                   f"an integer: {size_text!r}") from None
            if size < 1:
                raise bad_line(path, line_no, raw, f"group_size must be >= 1 (an empty group), got {size}")
            if grouped.max_group_size and size > grouped.max_group_size:
                raise bad_line(path, line_no, raw, f"group_size {size} exceeds max_group_size "
                                                   f"{grouped.max_group_size} (split the item with group_by_item)")
            label_tokens = []
            for name, col in zip(labels, label_cols):
                tokens = cols[col].split(sample_sep)
                if len(tokens) != size:
                    raise bad_line(path, line_no, raw, f"label column {col} ('{name}') has {len(tokens)} "
                                                       f"{sample_sep!r}-separated values, group_size is {size}")
                label_tokens.append(tokens)
            samples = cols[feature_col].split(sample_sep)
            if len(samples) != size:
                raise bad_line(path, line_no, raw, f"feature column {feature_col} has {len(samples)} "
                                                   f"{sample_sep!r}-separated samples, group_size is {size}")
            for k, sample in enumerate(samples):
                count = sample.count(feature_sep) + 1
                if count != self.num_features:
                    raise bad_line(path, line_no, raw, f"sample {k}: expected {self.num_features} "
                                                       f"{feature_sep!r}-separated features, got {count}")
                flat.append(feature_sep.join([tokens[k] for tokens in label_tokens] + [sample]))
            sizes.append(size)
            paths.append(cols[img_col])
            line_numbers.append(line_no)
        lengths = np.asarray(sizes, dtype=np.int64)
        per_sample = self._parse_samples(flat, lengths, line_numbers, path)
        block: Block = {k: GroupedRows.from_lengths(v, lengths) for k, v in per_sample.items()}
        block["sample_num"] = GroupIndex(lengths)
        block["group_size"] = lengths
        if self.img_shape is not None:
            block["img"] = self._images(paths, line_numbers, path)
        return block

    def _parse_samples(self, flat: list[str], lengths: np.ndarray, line_numbers: list[int],
                       path: str) -> dict[str, np.ndarray]:
        """The per-sample columns, parsed by the tabular reader; an error names the group's line and the sample."""
        text = "".join(line + "\n" for line in flat).encode("utf-8")
        if not flat:
            text = b""
        try:
            block = self.samples.parse_block(text, path, 1) if flat else self._empty()
        except DataFormatError:
            block = None
        if block is not None and all(len(v) == len(flat) for v in block.values()):
            return block
        # slow path: parse sample by sample to name the group's line and the sample
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for g, line_no in enumerate(line_numbers):
            for k in range(int(lengths[g])):
                sample = flat[offsets[g] + k]
                try:
                    rows = self.samples.parse_block((sample + "\n").encode("utf-8"), path, line_no)
                except DataFormatError as err:
                    raise DataFormatError(f"{err} (sample {k} of the group on line {line_no})") from None
                if any(len(v) != 1 for v in rows.values()):
                    raise DataFormatError(f"{path}:{line_no}: sample {k} is empty")
        raise DataFormatError(f"{path}:{line_numbers[0] if line_numbers else 1}: cannot parse the block starting here")

    def _empty(self) -> dict[str, np.ndarray]:
        return {name: np.zeros((0, width), dtype=dtype) for name, (dtype, width) in self.samples.columns.items()}

    def _images(self, paths: list[str], line_numbers: list[int], path: str) -> np.ndarray:
        """``(n, H, W, 3)`` float32, each distinct path decoded once."""
        height, width, _ = self.img_shape
        out = np.zeros((len(paths), height, width, 3), dtype=np.float32)
        folder = self.confine_images_to or self.grouped.image_root or os.path.dirname(os.path.realpath(path))
        # (a linked data file: its real folder)
        decoded: dict[str, np.ndarray | None] = {}
        missing = 0
        for i, (image_path, line_no) in enumerate(zip(paths, line_numbers)):
            if self.confine_images_to is not None:
                problem = unconfined_image_path(image_path)
                if problem:
                    raise DataFormatError(f"{path}:{line_no}: image path {image_path[:200]!r} {problem}; name images "
                                          "relative to the server's image folder (--image_root)")
            if image_path not in decoded:
                full = os.path.join(folder, image_path)  # an absolute image_path stays as it is
                if not os.path.isfile(full):
                    decoded[image_path] = None
                else:
                    try:
                        image = _decode_bgr_uint8(full)
                    except OSError as err:
                        shown = "" if self.confine_images_to else f" ({full})"
                        raise DataFormatError(f"{path}:{line_no}: image '{image_path}'{shown} cannot be decoded: "
                                              f"{err if not self.confine_images_to else type(err).__name__}") from None
                    if image.shape[:2] != (height, width):
                        raise DataFormatError(f"{path}:{line_no}: image '{image_path}' is {image.shape[1]}x"
                                              f"{image.shape[0]} (width x height), the ImgFeature's img_shape is "
                                              f"{width}x{height} (images are not resized)")
                    decoded[image_path] = image
            image = decoded[image_path]
            if image is None:
                missing += 1
            else:
                out[i] = image
        if missing:
            with self._lock:
                self.missing_by_file[path] += missing
        return out


def unconfined_image_path(image_path: str) -> str | None:
    """Why an image path may leave its image folder (absolute, a drive, a ``..`` part, a NUL byte), or ``None``."""
    if "\x00" in image_path:
        return "holds a NUL byte"
    if os.path.isabs(image_path) or image_path.startswith("\\") or image_path[1:3] in (":\\", ":/"):
        return "is absolute"
    if ".." in image_path.replace("\\", "/").split("/"):
        return "goes up with '..'"
    return None


# ---------------------------------------------------------------------- building grouped lines
def group_by_item(rows: Iterable[dict], key: str | Callable[[dict], str] = "img_path",
                  max_group_size: int = 0) -> list[list[dict]]:
    """Groups of flat per-sample rows: the rows of each item (same ``key``), in first-seen order of the items
    and in input order within an item, chunked into groups of at most ``max_group_size`` rows (0: no limit).

    Each group becomes one GroupRTPInput line (:func:`format_group_line`); an item with more than
    ``max_group_size`` samples becomes several lines that repeat its image path (EasyRec's "n items,
    each with up to m samples" is built this way, offline).

    Args:
        rows: mappings of field name -> value text (or anything ``str()`` renders).
        key: the field naming the item (its image path), or a function of a row.
        max_group_size: the most samples per group (``m``); 0 keeps each item's rows in one group.
    """
    if max_group_size < 0:
        raise ValueError(f"max_group_size must be >= 0, got {max_group_size}")
    get = key if callable(key) else (lambda row: row[key])
    items: dict[str, list[dict]] = {}
    for row in rows:
        items.setdefault(get(row), []).append(row)
    groups = []
    for item_rows in items.values():
        step = max_group_size or len(item_rows)
        groups.extend(item_rows[i:i + step] for i in range(0, len(item_rows), step))
    return groups


def format_group_line(group: Sequence[dict], label_fields: Sequence[str], feature_fields: Sequence[str],
                      img_field: str = "img_path", rtp_separator: str = ";", group_sample_separator: str = "\x01",
                      separator: str = "\x02") -> str:
    """One GroupRTPInput line (no newline) of a group of flat rows: the label columns, the feature column,
    the image path (the first row's) and the group size; ``selected_cols`` is then ``0, 1, ..., len(labels) + 2``."""
    columns = [group_sample_separator.join(str(row[name]) for row in group) for name in label_fields]
    columns.append(group_sample_separator.join(separator.join(str(row[f]) for f in feature_fields) for row in group))
    columns.append(str(group[0][img_field]))
    columns.append(str(len(group)))
    return rtp_separator.join(columns)
