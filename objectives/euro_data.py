"""The Euro points data: loading, checking, a synthetic stand-in, and input features.

``load_euro(data_dir)`` reads ``euro/{train,validation,test}.csv`` (header ``,long,lat,country``)
into float32/int64 numpy arrays once per process; a missing or malformed file raises a
``DataError`` naming the file and the fix. ``write_synthetic_euro`` writes a stand-in in the
same format (points labelled by the nearest of 33 capital cities) and marks it with a
``SYNTHETIC`` file, so everything trained on it can say so.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from objectives.errors import DataError

SPLITS = ("train", "validation", "test")
NUM_CLASSES = 33
SYNTHETIC_MARKER = "SYNTHETIC"
IMPLICIT_FREQUENCIES = tuple(round(0.1 * k, 1) for k in range(1, 11))

# Capitals of the 33 countries, in the label order of the course data (alphabetical).
CAPITALS = (
    ("Albania", 19.82, 41.33), ("Austria", 16.37, 48.21), ("Belarus", 27.56, 53.90),
    ("Belgium", 4.35, 50.85), ("Bosnia and Herzegovina", 18.41, 43.86),
    ("Bulgaria", 23.32, 42.70), ("Croatia", 15.98, 45.81), ("Czechia", 14.42, 50.09),
    ("Denmark", 12.57, 55.68), ("Estonia", 24.75, 59.44), ("Finland", 24.94, 60.17),
    ("France", 2.35, 48.86), ("Germany", 13.40, 52.52), ("Great Britain", -0.13, 51.51),
    ("Greece", 23.73, 37.98), ("Hungary", 19.04, 47.50), ("Ireland", -6.26, 53.35),
    ("Italy", 12.50, 41.90), ("Latvia", 24.11, 56.95), ("Lithuania", 25.28, 54.69),
    ("Moldova", 28.86, 47.01), ("Montenegro", 19.26, 42.44), ("Netherlands", 4.90, 52.37),
    ("Norway", 10.75, 59.91), ("Poland", 21.01, 52.23), ("Portugal", -9.14, 38.72),
    ("Romania", 26.10, 44.43), ("Serbia", 20.46, 44.79), ("Slovakia", 17.11, 48.15),
    ("Slovenia", 14.51, 46.06), ("Spain", -3.70, 40.42), ("Sweden", 18.07, 59.33),
    ("Ukraine", 30.52, 50.45),
)
COUNTRY_NAMES = tuple(name for name, _, _ in CAPITALS)


@dataclass(frozen=True)
class EuroData:
    """The three splits as arrays: ``x_*`` is (N, 2) float32 (long, lat), ``y_*`` is (N,) int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str
    synthetic: bool


def euro_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "euro"


_PRELOADED: dict[Path, EuroData] = {}


def preload_euro(data_dir: Path, data: EuroData) -> None:
    """Make ``load_euro(data_dir)`` return ``data`` in this process without reading the CSVs
    (a runner that ships the arrays to its workers, such as the Ray backend, calls this)."""
    _PRELOADED[Path(data_dir)] = data


def load_euro(data_dir: Path) -> EuroData:
    """Read and check the three CSVs under ``data_dir/euro`` (cached per process)."""
    preloaded = _PRELOADED.get(Path(data_dir))
    return preloaded if preloaded is not None else _read_euro(Path(data_dir))


@functools.lru_cache(maxsize=4)
def _read_euro(data_dir: Path) -> EuroData:
    folder = euro_dir(data_dir)
    if not folder.is_dir():
        raise DataError(
            f"no Euro data folder at {folder}; pass --data-dir (or set $HPSEARCH_DATA) to the "
            "folder holding euro/, or run `python -m objectives.euro_data --synthetic DIR` "
            "for a stand-in"
        )
    arrays = {}
    digest = hashlib.sha256()
    for split in SPLITS:
        path = folder / f"{split}.csv"
        x, y = _read_split(path)
        arrays[split] = (x, y)
        digest.update(path.read_bytes())
    return EuroData(
        x_train=arrays["train"][0], y_train=arrays["train"][1],
        x_val=arrays["validation"][0], y_val=arrays["validation"][1],
        x_test=arrays["test"][0], y_test=arrays["test"][1],
        fingerprint="sha256:" + digest.hexdigest()[:16],
        synthetic=(folder / SYNTHETIC_MARKER).exists(),
    )


def _read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; the Euro data needs train.csv, "
                        "validation.csv and test.csv in the same folder")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; restore it from the course data") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]}); "
                        "expected the header ',long,lat,country'") from None
    missing = [c for c in ("long", "lat", "country") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; "
                        "expected the header ',long,lat,country'")
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no rows; restore it from the data")
    coords = frame[["long", "lat"]]
    if not all(pd.api.types.is_numeric_dtype(coords[c]) for c in coords):
        raise DataError(f"{path}: 'long' and 'lat' must be numbers; found non-numeric values")
    if coords.isna().any().any() or not np.isfinite(coords.to_numpy()).all():
        raise DataError(f"{path}: 'long'/'lat' hold missing or infinite values; "
                        "remove those rows")
    labels = frame["country"]
    if not pd.api.types.is_integer_dtype(labels):
        raise DataError(f"{path}: 'country' must hold integer labels 0-{NUM_CLASSES - 1}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"{path}: 'country' labels must lie in 0-{NUM_CLASSES - 1}, "
                        f"found {labels.min()}..{labels.max()}")
    # Copies: pandas' copy-on-write arrays are read-only, which torch.from_numpy warns about.
    return coords.to_numpy(np.float32, copy=True), labels.to_numpy(np.int64, copy=True)


def make_features(x: np.ndarray, features: str, mean: np.ndarray | None = None,
                  std: np.ndarray | None = None) -> np.ndarray:
    """Input features: ``raw`` (long, lat) or ``implicit`` (sin(a*x) for a in 0.1..1.0).

    ``mean``/``std`` (from the training split) standardise the raw coordinates first.
    """
    if mean is not None and std is not None:
        x = (x - mean) / std
    if features == "raw":
        return x.astype(np.float32)
    if features == "implicit":
        freqs = np.asarray(IMPLICIT_FREQUENCIES, dtype=np.float32)
        # Columns: sin(a*long) for each a, then sin(a*lat) for each a (20 features).
        return np.concatenate([np.sin(x[:, [j]] * freqs) for j in range(2)], axis=1).astype(
            np.float32)
    raise ValueError(f"unknown features {features!r}")


def write_synthetic_euro(out_dir: Path, sizes: tuple[int, int, int] = (20_000, 2_500, 2_500),
                         seed: int = 0) -> Path:
    """Write a stand-in Euro data set: uniform points over Europe, labelled by nearest capital."""
    folder = euro_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    capitals = np.array([(lon, lat) for _, lon, lat in CAPITALS], dtype=np.float64)
    row_id = 0
    for split, n in zip(SPLITS, sizes, strict=True):
        # Points scattered around the capitals, so each class has a compact region.
        centre = capitals[rng.integers(0, NUM_CLASSES, n)]
        points = centre + rng.normal(0.0, 2.5, size=(n, 2))
        dist = ((points[:, None, :] - capitals[None, :, :]) ** 2).sum(-1)
        labels = dist.argmin(1)
        frame = pd.DataFrame({"long": points[:, 0].round(6), "lat": points[:, 1].round(6),
                              "country": labels}, index=np.arange(row_id, row_id + n))
        frame.to_csv(folder / f"{split}.csv")
        row_id += n
    (folder / SYNTHETIC_MARKER).write_text(
        "Synthetic stand-in for the course's Euro data: points near 33 capitals, labelled by "
        "the nearest capital. Results on it say nothing about the real data.\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m objectives.euro_data",
                                     description="Write a synthetic stand-in of the Euro data.")
    parser.add_argument("--synthetic", metavar="DIR", required=True,
                        help="data folder to write euro/{train,validation,test}.csv into")
    args = parser.parse_args(argv)
    folder = write_synthetic_euro(Path(args.synthetic))
    print(f"wrote synthetic Euro data (a stand-in, not the course data) to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
