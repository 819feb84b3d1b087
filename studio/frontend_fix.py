"""One fix to Gradio's page script, applied as the script is served.

Gradio 6's frontend, on every status change of every event (a timer's tick makes two), re-applies the
loading status of every component that any event has ever named as an input or output, and finds
each by a depth-first walk of the whole component tree. The Train tab has ~1000 components and its
form events name ~520 of them, so after the page has loaded each status change walks the tree ~520
times: about 0.4 s of the browser's CPU, and the runs panel's tick makes two of those every 2 s. On a
2-core machine that CPU is taken from the training run the page is showing (bench/page_cost.py).

The fix re-applies a status only when it differs from the one last applied to that component, so a
tick costs what its own few outputs cost. It is a text replacement in the served file; where the
installed Gradio's script does not contain the expected text, the script is served unchanged (and
tests/test_frontend_fix.py fails, so an upgrade that changes it is noticed).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response

log = logging.getLogger(__name__)

ASSET = re.compile(r"/assets/(Blocks-[A-Za-z0-9_-]+\.js)")
SLOW = ("async update_loading_stati_state(){await Promise.all(Object.entries(this.loading_stati.current)"
        ".map(([e,t])=>this.update_state_cb(Number(e),{loading_status:t},!1)))}")
# the same, after dropping the statuses that are unchanged since they were last applied (per component);
# any other write of a component's status (Gradio clears its inputs' at each submission) forgets what
# was applied to it, so the next call applies it again as before
FAST = ("async update_loading_stati_state(){const s=this.__applied||(this.__applied=new Map);"
        "if(!this.__apply){const f=this.update_state_cb;this.__apply=f;"
        "this.update_state_cb=(e,t,n)=>(t&&`loading_status`in t&&s.delete(String(e)),f.call(this,e,t,n))}"
        "await Promise.all(Object.entries(this.loading_stati.current)"
        ".filter(([e,t])=>{const j=JSON.stringify(t);return s.get(e)!==j&&(s.set(e,j),!0)})"
        ".map(([e,t])=>this.__apply(Number(e),{loading_status:t},!1)))}")


def assets_dir() -> Path:
    import gradio

    return Path(gradio.__file__).parent / "templates" / "frontend" / "assets"


def fixed(text: str) -> str | None:
    """The script with the fix, or None where it does not contain the expected text once."""
    return text.replace(SLOW, FAST) if text.count(SLOW) == 1 else None


class FixFrontend:
    """ASGI middleware: serves Gradio's Blocks script with the fix (gzipped where the browser accepts
    it), everything else untouched."""

    def __init__(self, app):
        self.app = app
        self.served: dict[str, bytes | None] = {}  # file name -> fixed script, None: serve Gradio's own

    def script(self, name: str) -> bytes | None:
        if name not in self.served:
            path = assets_dir() / name
            if not path.is_file():  # not remembered: only the few real files are ever kept
                return None
            text = fixed(path.read_text(encoding="utf-8"))
            if text is None:
                log.warning("Gradio's %s has changed: its status updates are served unfixed", name)
            self.served[name] = text.encode() if text is not None else None
        return self.served[name]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            match = ASSET.fullmatch(scope.get("path", ""))
            body = match and self.script(match.group(1))
            if body:
                response = Response(body, media_type="text/javascript",
                                    headers={"Cache-Control": "no-cache"})
                return await GZipMiddleware(response, minimum_size=1000)(scope, receive, send)
        return await self.app(scope, receive, send)
