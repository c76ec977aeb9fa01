"""Train the demo's CNN with the shipped recipe and write ``noisegrad/app/data/demo_cnn.pt``.

    python scripts/train_demo_model.py                 # rewrite the shipped weights
    python scripts/train_demo_model.py --out /tmp/cnn.pt --check

Deterministic (seeded data, weights and minibatches; one thread); about ten
seconds on one core. ``--check`` also compares the result with the shipped
weights: same test accuracy, and whether the weights are bit-identical (they
can differ in the last bits on another CPU).
"""

import argparse
import time
from pathlib import Path

import torch

from noisegrad.app.shapes import (
    TRAINING, WEIGHTS_PATH, accuracy, load_demo_model, make_shapes, save_demo_model, test_generator,
    torch_threads, train_demo_model,
)

#: Held-out images the accuracy is measured on.
N_TEST = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="where to write the weights")
    parser.add_argument("--check", action="store_true", help="compare with the shipped weights")
    args = parser.parse_args()
    with torch_threads(1):
        start = time.perf_counter()
        model = train_demo_model()
        seconds = time.perf_counter() - start
        test_x, test_y, _ = make_shapes(N_TEST, test_generator(0))
        acc = accuracy(model, test_x, test_y)
        if args.check:
            shipped = load_demo_model()
            same = all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), model.state_dict().values()))
            print(f"shipped weights: accuracy {accuracy(shipped, test_x, test_y):.4f}; bit-identical to this run: {same}")
    path = save_demo_model(model, args.out, {"recipe": dict(TRAINING), "test_accuracy": acc, "n_test": N_TEST,
                                              "train_seconds": round(seconds, 1)})
    print(f"trained in {seconds:.1f} s; test accuracy {acc:.4f} on {N_TEST} held-out images; "
          f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
