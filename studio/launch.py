"""Serving the app: loopback by default, auth required for anything wider."""

from __future__ import annotations

import ipaddress

from studio.app import CSS_PATH, build_app, head



class LaunchError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    if not auth:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise LaunchError("--auth must look like USER:PASSWORD")
    return user, password


def check_exposure(host: str, auth: str | None, share: bool) -> tuple[str, str] | None:
    """Refuse to expose an unauthenticated studio beyond this machine."""
    credentials = parse_auth(auth)
    if not is_loopback(host) and credentials is None:
        raise LaunchError(f"refusing to bind {host} without --auth USER:PASSWORD; "
                          "anyone on the network could use this machine")
    if share and credentials is None:
        raise LaunchError("refusing a public share link without --auth USER:PASSWORD")
    return credentials


def serve(studio, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
          share: bool = False, block: bool = True):
    credentials = check_exposure(host, auth, share)
    app = build_app(studio)
    app.queue(default_concurrency_limit=4)
    app.launch(
        server_name=host, server_port=port, auth=credentials, share=share,
        max_file_size=studio.max_upload_bytes, allowed_paths=[], show_error=True, css_paths=[CSS_PATH], head=head(),
        prevent_thread_lock=not block, quiet=not block,
    )
    return app
