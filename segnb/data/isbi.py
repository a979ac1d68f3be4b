"""The ISBI 2012 membrane slices shipped with segnb: ``load_dataset("isbi2012")``.

The 30 training slices of the challenge (512x512 grayscale, labels 0 = membrane, 255 = cell) live
in ``segnb/data/isbi2012/`` with their terms of use (non-commercial segmentation software, cite
TrakEM2 and Cardona et al. 2010; see the README there: they are not under segnb's MIT licence)
and a ``SHA256SUMS`` file. ``python -m segnb.data.isbi [folder]`` checks a copy offline.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from segnb.errors import DatasetError

__all__ = ["ISBI_DIR", "CLASS_NAMES", "check", "fingerprint", "load_isbi"]

ISBI_DIR = Path(__file__).resolve().parent / "isbi2012"
CLASS_NAMES = ["membrane", "cell"]
DEFAULTS = {"val_fraction": 0.2, "seed": 0}
SUMS = ISBI_DIR / "SHA256SUMS"


def _expected() -> dict[str, str]:
    pairs = (line.split() for line in SUMS.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def check(folder=None) -> list[str]:
    """The problems of ``folder`` (the shipped copy by default) against SHA256SUMS; [] when it is intact."""
    root = Path(folder) if folder is not None else ISBI_DIR
    problems = []
    for name, digest in _expected().items():
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{name}: differs from the ISBI 2012 training slice (sha256)")
    return problems


def fingerprint() -> str:
    """One sha256 over SHA256SUMS: it names every file's content, so it keys what was trained on them."""
    return hashlib.sha256(SUMS.read_bytes()).hexdigest()


def load_isbi(*, val_fraction: float = 0.2, seed: int = 0):
    """The shipped slices as a two-class dataset (``membrane``, ``cell``) with a seeded validation split."""
    from segnb.data.folder import load_folder

    if not (ISBI_DIR / "image").is_dir():
        raise DatasetError(
            f"The ISBI 2012 slices are not in {ISBI_DIR} (the package was installed without them, see "
            "their terms in segnb/data/isbi2012/README.md). Point load_dataset at a copy: "
            "load_dataset('/path/to/isbi', binary=True, class_names=['membrane', 'cell'])."
        )
    data = load_folder(ISBI_DIR, class_names=CLASS_NAMES, binary=True, val_fraction=val_fraction, seed=seed)
    data.source = "isbi2012"  # found again on any machine, wherever the package is installed
    given = {"val_fraction": val_fraction, "seed": seed}
    data.options = {k: v for k, v in given.items() if v != DEFAULTS[k]}  # what load_dataset needs to rebuild it
    return data


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else ISBI_DIR
    problems = check(folder)
    for problem in problems:
        print(problem)
    print(f"{folder}: {'OK, 30 slices and 30 labels as shipped' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
