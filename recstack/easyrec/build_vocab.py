"""Fit the vocabularies of a feature config from its training data (``tools/build_vocab.py``).

For every id feature with ``vocab: {min_count, max_size}`` (:mod:`recstack.easyrec.vocab`), the values of
``runner.train_data_dir``, read by the config's own train reader inside :func:`recstack.easyrec.vocab.counting`, are
counted; the values seen at least ``min_count`` times are kept, the most frequent first (ties by value), at most
``max_size``, and written to ``<runner.model_save_path>/vocab/<feature>.txt`` with ``manifest.json``, as one set.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recstack.config import Config, ConfigError
from recstack.easyrec.schema import source
from recstack.easyrec.vocab import VOCAB_DIR, counting, vocab_dir
from recstack.fileio import atomic_open, owner_tag, remove_tree

logger = logging.getLogger(__name__)

#: build_vocab's record of a fitted folder
MANIFEST = "manifest.json"


def build_vocabularies(config: Config, force: bool = False) -> dict[str, Any]:
    """Fit the vocabularies of the config's features with ``vocab: {...}`` on ``runner.train_data_dir`` and write
    them to ``<runner.model_save_path>/vocab/`` (``<feature>.txt`` and ``manifest.json``), as one set: written in a
    temporary folder that replaces the old one by a rename.

    The data is read by the config's own train reader (``runner.train_reader_path``), so a value is counted as
    training will map it (defaults of empty fields, tag and sequence splitting, ``sequence_length``).

    Args:
        config: the run's config.
        force: replace vocabularies that differ from the new ones even when checkpoints trained with them lie
            beside them (their ids would no longer match).

    Returns:
        The manifest.

    Raises:
        ConfigError: no feature asks for a fitted vocabulary, or one keeps no value (``min_count`` too high), or
            (without ``force``) the new vocabularies differ from those of the checkpoints in the folder.
        DataFormatError: a malformed data line (file and line named).
    """
    from recstack.data.factory import create_reader

    with counting() as counters:
        reader = create_reader(config, "train")
        if not counters:
            raise ConfigError(f"{source(config, 'hyper_parameters.feature_config.features')}: no feature asks for a "
                              "vocabulary fitted from the training data; give an id feature "
                              "vocab: {min_count: 2, max_size: 100000} (doc/vocabulary.md)")
        for _ in reader.iter_blocks():
            pass
    root = vocab_dir(config).parent
    files = [{"path": str(Path(p).resolve()), "size_bytes": os.path.getsize(p)} for p in reader.file_list]
    features: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for name, counter in counters.items():
        kept, dropped = counter.select()
        if not kept:
            best = min(counter.counts.items(), key=lambda vc: (-vc[1], vc[0]), default=None)
            raise ConfigError(f"{source(config, counter.key + '.vocab.min_count')}: no value of feature '{name}' "
                              f"occurs {counter.min_count} times in the {counter.total} values of "
                              f"{config.get('runner.train_data_dir')}"
                              f"{f' (the most frequent: {best[0]!r}, {best[1]} times)' if best else ''}; "
                              "lower min_count")
        covered = sum(c for _, c in kept)
        features[name] = {"file": f"{name}.txt", "entries": len(kept), "min_count": counter.min_count,
                          "max_size": counter.max_size, "num_oov_buckets": counter.num_oov_buckets,
                          "values": counter.total, "distinct_values": len(counter.counts),
                          "values_in_vocabulary": covered, **{f"dropped_{k}": v for k, v in dropped.items()}}
        texts[name] = "".join(v + "\n" for v, _ in kept)
        logger.info("feature '%s': %d entries of %d distinct values (count >= %d%s), covering %.2f%% of %d values; "
                    "+ %d out-of-vocabulary bucket%s", name, len(kept), len(counter.counts), counter.min_count,
                    f", at most {counter.max_size}" if counter.max_size else "", 100.0 * covered / counter.total,
                    counter.total, counter.num_oov_buckets, "" if counter.num_oov_buckets == 1 else "s")
    manifest = {"format_version": 1, "config": str(config.path) if config.path else None,
                "train_data_dir": config.get("runner.train_data_dir"), "source_files": files,
                "built_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "features": features}
    if not force:
        _check_replaceable(config, root, texts)
    _publish(root, texts, manifest)
    return manifest


def _check_replaceable(config: Config, root: Path, texts: Mapping[str, str]) -> None:
    """Refuse to change the vocabularies of checkpoints that lie beside them (the ids they learnt would move)."""
    from recstack.checkpoint import list_checkpoints

    folder = root / VOCAB_DIR
    if not folder.is_dir() or not root.is_dir():
        return
    changed = [name for name, text in texts.items()
               if (folder / f"{name}.txt").is_file() and (folder / f"{name}.txt").read_text(encoding="utf-8") != text]
    epochs = list_checkpoints(root)
    if changed and epochs:
        raise ConfigError(f"{source(config, 'runner.model_save_path')}: the vocabularies of {changed} in {folder} "
                          f"change with this data, and the checkpoints {epochs} beside them were trained with the old "
                          "ones (their ids would no longer match); write to another folder (-o "
                          "runner.model_save_path=...) and train again, or replace them anyway with --force")


def _publish(root: Path, texts: Mapping[str, str], manifest: dict[str, Any]) -> None:
    """Write the vocabulary files and the manifest into a temporary folder, then swap it for ``root/vocab``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / VOCAB_DIR
    tmp = root / f".tmp-{VOCAB_DIR}-{owner_tag()}"
    old = root / f".old-{VOCAB_DIR}-{owner_tag()}"
    for stale in (tmp, old):
        if stale.exists():
            remove_tree(stale, "left by an earlier build")
    tmp.mkdir()
    try:
        for name, text in texts.items():
            with atomic_open(tmp / f"{name}.txt") as f:
                f.write(text)
        with atomic_open(tmp / MANIFEST) as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        remove_tree(tmp, "an interrupted vocabulary build")
        raise
    if old.exists():
        remove_tree(old, "the vocabularies replaced")
    logger.info("wrote %d vocabular%s and %s to %s", len(texts), "y" if len(texts) == 1 else "ies", MANIFEST, final)
