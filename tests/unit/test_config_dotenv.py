"""`.env` in the working directory: read for the documented variables, beneath the environment."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from dispatcher.config.settings import Settings
from dispatcher.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_settings_read_the_documented_variables_from_dotenv(dotenv_here: Path) -> None:
    write(
        dotenv_here,
        """
        # as compose's .env.example has it
        REDIS_URL=redis://cache.internal:6380/2
        OPENAI_API_KEY=sk-dotenv-0123456789
        LLMDISPATCH_JOB_TTL_S=600
        """,
    )

    settings = Settings.load()

    assert settings.redis_url.get_secret_value() == "redis://cache.internal:6380/2"
    assert settings.job_ttl_s == 600
    key = settings.vendors["openai"].api_key
    assert isinstance(key, SecretStr)
    assert key.get_secret_value() == "sk-dotenv-0123456789"
    assert "sk-dotenv-0123456789" not in repr(settings)


def test_the_environment_wins_over_dotenv_and_an_empty_variable_counts_as_unset(
    dotenv_here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        dotenv_here,
        """
        LLMDISPATCH_KEY_PREFIX=fromfile
        LLMDISPATCH_JOB_TTL_S=600
        ANTHROPIC_API_KEY=sk-ant-from-dotenv-1234
        """,
    )
    monkeypatch.setenv("LLMDISPATCH_KEY_PREFIX", "fromenv")
    monkeypatch.setenv("LLMDISPATCH_JOB_TTL_S", "")

    settings = Settings.load()

    assert settings.key_prefix == "fromenv"
    assert settings.job_ttl_s == 600
    assert list(settings.vendors) == ["anthropic"]


def test_keyword_arguments_win_over_dotenv(dotenv_here: Path) -> None:
    write(dotenv_here, "LLMDISPATCH_KEY_PREFIX=fromfile\n")
    assert Settings.load(key_prefix="kw").key_prefix == "kw"


def test_other_lines_of_dotenv_are_not_settings_and_are_left_alone(dotenv_here: Path) -> None:
    write(
        dotenv_here,
        """
        FLOWER_BASIC_AUTH=ops:change-me
        OPENAI_ENABLED=true
        VENDORS=not-a-mapping
        retry_policy=nonsense
        """,
    )

    settings = Settings.load()

    assert settings.vendors == {}
    assert settings.retry_policy.max_retries == 3


def test_dotenv_may_name_the_config_file_and_feed_its_variables(
    dotenv_here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        dotenv_here.parent / "llmdispatch.yaml",
        """
        vendors:
          openai:
            enabled: ${OPENAI_ENABLED:-false}
            rpm: ${OPENAI_RPM:-600}
        """,
    )
    write(
        dotenv_here,
        f"""
        LLMDISPATCH_CONFIG={config}
        OPENAI_ENABLED=true
        OPENAI_RPM=300
        """,
    )
    monkeypatch.setenv("OPENAI_RPM", "120")

    settings = Settings.load()

    assert settings.config_file == config
    openai = settings.vendors["openai"]
    assert openai.enabled is True, "${OPENAI_ENABLED} found in .env"
    assert openai.rpm == 120, "the environment's OPENAI_RPM wins over .env's"


def test_a_bad_value_in_dotenv_is_reported_under_its_variable_name(dotenv_here: Path) -> None:
    write(dotenv_here, "OPENAI_TIMEOUT=soon\n")

    with pytest.raises(ConfigError) as caught:
        Settings.load()

    assert any(problem.startswith("OPENAI_TIMEOUT") for problem in caught.value.problems)


def test_without_dotenv_nothing_changes(dotenv_here: Path) -> None:
    assert not dotenv_here.exists()
    assert Settings.load().vendors == {}


def test_tests_never_read_the_dotenv_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / ".env", "OPENAI_API_KEY=sk-a-developers-real-key-0123\n")
    monkeypatch.chdir(tmp_path)

    assert Settings.load().vendors == {}
