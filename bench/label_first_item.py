"""How soon a generated labeling project can be labelled, on the default model.

A project's items used to become labelable only once every prompt was answered; now each prompt is
an item as soon as it is answered. This bench creates a project (the FAQ sample's first N prompts,
the built-in model answering twice), polls it as the Label tab does, and prints when the first item
was labelable against the baseline measured in the same run: when the last prompt was answered
(the old wait for the first label). It also prints the pace *Create* announces for a next project.

    python bench/label_first_item.py [--prompts 8] [--max-new-tokens 256] [--home DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import label_service as ls  # noqa: E402
from studio.core import Studio  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="label-first-")) / "home"
    studio = Studio(home)
    prompts = ls.prompts_from_dataset(studio, "quillpad_faq")[:args.prompts]
    start = time.time()
    ls.create_project(studio, name="bench", prompts=prompts, models_=["base:default"], temperature=0.7,
                      max_new_tokens=args.max_new_tokens)
    first = None
    while True:
        found = ls.project(studio, "bench")
        if first is None and found["items"]:
            first = time.time() - start
            item = ls.next_item(studio, "bench", "bench")["item"]
            print(f"{first:6.1f} s: first item labelable (prompt {item['position']})", flush=True)
        if found["status"] in ("ready", *ls.STOPPED):
            break
        time.sleep(0.5)
    if found["status"] != "ready":
        print(f"answering ended {found['status']}: {found['error']}")
        return 1
    last = time.time() - start
    print(f"{last:6.1f} s: all {len(prompts)} prompts answered (before: the first label waited for this)")
    print(f"first label {last / first:.1f}x sooner than waiting for every answer")
    pace = ls.answering_pace(studio, args.max_new_tokens)
    print(f"pace Create announces for a next project: {pace:.1f} s per prompt "
          f"({pace * 120 / 60:.0f} min for the FAQ's 120 prompts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
