"""Safe by default: loopback bind; anything wider needs auth."""

from __future__ import annotations

import pytest

from studio.cli import main
from studio.launch import LaunchError, check_exposure


def test_loopback_needs_no_auth():
    assert check_exposure("127.0.0.1", None, False) is None
    assert check_exposure("localhost", "ann:pw", False) == ("ann", "pw")


def test_wide_bind_without_auth_is_refused():
    with pytest.raises(LaunchError, match=r"^refusing to bind 0.0.0.0 without --auth USER:PASSWORD"):
        check_exposure("0.0.0.0", None, False)


def test_share_without_auth_is_refused():
    with pytest.raises(LaunchError, match="^refusing a public share link without --auth"):
        check_exposure("127.0.0.1", None, True)


def test_cli_serve_refuses_before_building_anything(tmp_path, capsys):
    assert main(["serve", "--host", "0.0.0.0", "--home", str(tmp_path / "h")]) == 2
    assert capsys.readouterr().err.startswith("error: refusing to bind 0.0.0.0 without --auth")
