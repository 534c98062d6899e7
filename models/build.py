"""Build zoo models: `python -m npusim_models.build [--all] [--digits] [--force] [--cache-dir DIR] [NAME ...]`.

    NAME ...     build these PP-OCR models into the cache (skipped when already there)
    --all        build every PP-OCR model
    --digits     retrain and rewrite the committed digits models in models/digits/
    --force      rebuild cached PP-OCR models even when present
"""
import argparse
import sys
import time

import npusim_models
from npusim_models import build_digits, ppocr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m npusim_models.build", description="Build npusim zoo models.")
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {', '.join(ppocr.NAMES)}")
    ap.add_argument("--all", action="store_true", help="every PP-OCR model")
    ap.add_argument("--digits", action="store_true", help="retrain the committed digits models")
    ap.add_argument("--force", action="store_true", help="rebuild cached models")
    ap.add_argument("--cache-dir", default=None, help="default: ~/.cache/npusim/zoo/<rapidocr version>/")
    args = ap.parse_args(argv)
    bad = [n for n in args.names if n not in ppocr.NAMES]
    if bad:
        digits = [n for n in bad if n in npusim_models.DIGITS_NAMES]
        hint = " (digits models are committed; rebuild them all with --digits)" if digits else ""
        ap.error(f"not a PP-OCR model: {', '.join(bad)}{hint}")
    if not (args.names or args.all or args.digits):
        ap.print_help()
        return 2
    t0 = time.perf_counter()
    try:
        if args.digits:
            build_digits.build()
        todo = ppocr.NAMES if args.all else args.names
        # The float model first: every quantized variant of a family is made from it.
        done = set()
        for name in todo:
            family = ppocr.split_name(name)[0]
            if args.force and family not in done:
                ppocr.build(f"{family}_float", args.cache_dir, force=True, log=print)
                done.add(family)
            ppocr.build(name, args.cache_dir, force=args.force and not name.endswith("_float"), log=print)
    except ModuleNotFoundError as e:  # the zoo extra is not installed: its message says what to install
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
