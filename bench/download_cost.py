"""What picking a finished export costs before its file can be downloaded, for a GGUF of --gib GiB:
the studio's links (the server streams the file from the workspace: launch.Downloads) against the
baseline measured in the same run, the same file handed to a Gradio File component as the Export tab
did until 2026-12 (Gradio reads the whole file for a hash and copies it into its cache, on every pick).
Then the download itself through the studio's link, for its throughput.

    python bench/download_cost.py [--gib 1]

Nothing else should run meanwhile (two cores). The file is written with random bytes once, then each
path is timed with the file in the page cache (the kinder case for the baseline).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def made_export(studio, gib: float) -> tuple[str, Path]:
    """A completed GGUF export holding one file of `gib` GiB (written here: the bench times handing a
    file out, not making one)."""
    from pipelines.events import STATUS, write_json
    from studio.core import _new_id

    export_id = _new_id("x")
    folder = studio.run_dir(export_id) / "gguf"
    folder.mkdir(parents=True)
    path = folder / "big-q8_0.gguf"
    chunk = os.urandom(64 << 20)
    with open(path, "wb") as f:
        for _ in range(max(1, round(gib * 16))):
            f.write(chunk)
    studio.store.add_export(id=export_id, name="big", kind="gguf", source={"ref": "bench", "format": "gguf"})
    write_json(studio.run_dir(export_id) / STATUS, {"status": "completed", "finished": time.time(), "summary": {
        "gguf": str(path), "gguf_bytes": path.stat().st_size, "quant": "q8_0", "seconds": 0}})
    studio.store.update_export_status(export_id, "completed", None)
    return export_id, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    os.environ.setdefault("STUDIO_PROBE_CACHE", tempfile.mkdtemp())
    import httpx
    from gradio import processing_utils

    from components.export_tab import details
    from studio.core import Studio
    from studio.export_service import files
    from studio.launch import serve

    home = Path(tempfile.mkdtemp(prefix="download-cost-"))
    try:
        studio = Studio(home / "home")
        export_id, path = made_export(studio, args.gib)
        size = path.stat().st_size
        path.read_bytes()  # in the page cache for both

        cache = home / "gradio-cache"
        started = time.perf_counter()
        copy = processing_utils.save_file_to_cache(str(path), str(cache))  # what gr.File's postprocess does
        baseline = time.perf_counter() - started
        assert Path(copy).stat().st_size == size
        started = time.perf_counter()
        again = processing_utils.save_file_to_cache(str(path), str(cache))  # a second pick: the hash again
        baseline_again = time.perf_counter() - started
        assert again == copy

        started = time.perf_counter()
        shown = details(studio, export_id)
        studio_pick = time.perf_counter() - started
        assert "studio-download/" in shown and [p.name for p in files(studio, export_id)] == [path.name]

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = serve(studio, port=port, block=False)
        try:
            started = time.perf_counter()
            got = 0
            with httpx.stream("GET", f"http://127.0.0.1:{port}/studio-download/{export_id}?file={path.name}",
                              timeout=600) as answer:
                answer.raise_for_status()
                for part in answer.iter_bytes(8 << 20):
                    got += len(part)
            download = time.perf_counter() - started
        finally:
            app.close()
        assert got == size
    finally:
        shutil.rmtree(home, ignore_errors=True)

    print(f"file: {size / 2**30:.2f} GiB")
    print(f"gradio File (baseline), first pick:  {baseline:8.3f} s, {size / 2**30:.2f} GiB copied into its cache")
    print(f"gradio File (baseline), later pick:  {baseline_again:8.3f} s (the whole file hashed again)")
    print(f"studio links, any pick:              {studio_pick:8.3f} s, nothing copied")
    print(f"ratio, first pick: {baseline / studio_pick:.0f}x faster; later picks: {baseline_again / studio_pick:.0f}x")
    print(f"download through the studio's link: {download:.2f} s, {size / 2**20 / download:.0f} MiB/s")


if __name__ == "__main__":
    main()
