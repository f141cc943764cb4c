"""Reader speed and memory, text vs Parquet, on the same generated rows.

    python tools/reader_benchmark.py                                  # ctr_csv world, 1M rows, CSV vs Parquet
    python tools/reader_benchmark.py --world taobao --rows 1000000     # tag-list columns (list<string>)
    python tools/reader_benchmark.py --world criteo --rows 1000000     # slot text vs slot_parquet
    python tools/reader_benchmark.py --rows 1000000 10000000 --repeat 3 --workdir /tmp/reader_bench

For each row count the generator writes the same rows twice (``datasets/synthetic/generate.py`` as text and
with ``--format parquet``), then every measurement runs in a fresh process (one parsing thread, no binary
cache, no model): it reads all blocks with the config's reader and reports rows/s and its peak RSS
(``getrusage`` max RSS; ``base`` is the RSS after the imports, before reading; the imports are not timed).
Medians of ``--repeat`` runs.
The generated files are deleted afterwards unless ``--keep``. Worlds and the configs whose reader reads them:
``ctr_csv`` (models/rank/deepfm/config_tabular.yaml, 13 scalar columns), ``taobao``
(models/multitask/mmoe/config_taobao.yaml, 20 columns, two tag lists), ``criteo``
(models/rank/deepfm/config.yaml, the slot format; Parquet: the slot_parquet reader).
"""

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORLDS = {  # world -> (config, overrides that read the Parquet files)
    "ctr_csv": ("models/rank/deepfm/config_tabular.yaml", ["hyper_parameters.data_config.input_type=ParquetInput"]),
    "taobao": ("models/multitask/mmoe/config_taobao.yaml", ["hyper_parameters.data_config.input_type=ParquetInput"]),
    "criteo": ("models/rank/deepfm/config.yaml", ["runner.train_reader_path=slot_parquet"]),
}


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(config_path: str, overrides: list[str]) -> dict:
    """Read every block of the training files once (this process); rows, seconds, RSS."""
    import pyarrow as pa

    from recstack.config import load_config
    from recstack.data.factory import create_reader

    reader = create_reader(load_config(config_path, overrides), "train")
    pa.array([0]).to_numpy(zero_copy_only=False)  # pyarrow imports pandas on first use: not a reading cost
    base = max_rss_mb()
    start = time.perf_counter()
    rows = 0
    for block in reader.iter_blocks():
        rows += len(next(iter(block.values())))
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "base_rss_mb": base, "peak_rss_mb": max_rss_mb(),
            "reader": type(reader).__name__}


def generate(world: str, rows: int, folder: Path, parquet: bool) -> Path:
    config = WORLDS[world][0]
    out = folder / ("part-0.parquet" if parquet else "part-0.txt")
    cmd = [sys.executable, str(REPO / "datasets/synthetic/generate.py"), world, "--rows", str(rows), "--seed", "1",
           "--output", str(out)]
    if parquet:
        cmd += ["--format", "parquet"] + ([] if world == "criteo" else ["--config", str(REPO / config)])
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    return out


def run_one(world: str, data: Path, parquet: bool) -> dict:
    config, parquet_overrides = WORLDS[world]
    overrides = [f"runner.train_data_dir={data}"] + (parquet_overrides if parquet else [])
    out = subprocess.run([sys.executable, __file__, "--measure", str(REPO / config), *overrides],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--world", choices=sorted(WORLDS), default="ctr_csv")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the median is reported)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recstack_reader_benchmark"))
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--measure", nargs="+", metavar=("CONFIG", "OVERRIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # one measurement, in this fresh process
        print(json.dumps(measure(args.measure[0], args.measure[1:])))
        return 0
    print(f"world {args.world}, config {WORLDS[args.world][0]}, medians of {args.repeat} fresh processes, "
          "one parsing thread")
    print("| rows | format | file MB | rows/s | MB/s (file) | peak RSS MB | RSS before reading MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        folder = args.workdir / f"{args.world}_{rows}"
        try:
            for parquet in (False, True):
                data = folder / ("parquet" if parquet else "text")
                path = generate(args.world, rows, data, parquet)
                size = path.stat().st_size / 1e6
                runs = [run_one(args.world, data, parquet) for _ in range(args.repeat)]
                assert all(r["rows"] == rows for r in runs), runs
                seconds = statistics.median(r["seconds"] for r in runs)
                print(f"| {rows:,} | {'Parquet' if parquet else 'text'} ({runs[0]['reader']}) | {size:.0f} | "
                      f"{rows / seconds:,.0f} | {size / seconds:.1f} | "
                      f"{statistics.median(r['peak_rss_mb'] for r in runs):.0f} | "
                      f"{statistics.median(r['base_rss_mb'] for r in runs):.0f} |", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
