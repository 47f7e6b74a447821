"""All configuration in one settings class: environment (``IVR_*``) over the state
directory's ``secrets.env`` over defaults. Secrets never have a default in code."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

STATE_DIR = Path(os.environ.get("IVR_STATE_DIR", "/var/lib/ivr14"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IVR_", env_file=str(STATE_DIR / "secrets.env"),
                                      env_file_encoding="utf-8", extra="ignore")

    state_dir: Path = STATE_DIR
    db_path: Path = STATE_DIR / "calls.sqlite"
    # the records database: absent -> SQLite at db_path; sqlite:///path; postgresql://user@host:port/db (shared)
    db_url: str | None = Field(default=None, pattern=r"^(sqlite|postgresql|postgres)://")
    plan_file: Path | None = None  # operator overrides (TOML)

    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    audiosocket_host: str = "127.0.0.1"
    audiosocket_port: int = 9092

    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "ivr"
    ami_secret: SecretStr | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 9100
    admin_token: SecretStr | None = None  # admin writes are refused without it

    caller_salt: SecretStr = SecretStr("")  # pseudonymises callers' numbers in records

    speech_engine: str = Field(default="fusion", pattern="^(fusion|templates|whisper|vosk|none)$")
    prompts_dir: Path = STATE_DIR / "prompts"  # the WAVs the speech path plays itself
    # callback requests (a caller's consented number) are purged this many days after the request
    callback_retention_days: int = Field(default=14, ge=1, le=365)
    # a caller whose salted hash was routed to one of the dialled area code's municipalities within
    # this many days is asked "Belt u weer voor de gemeente X?" first; 0 = never (see the README)
    suggest_days: int = Field(default=30, ge=0, le=365)
    # a caller whose landline area code belongs to one municipality is asked for it first
    suggest_landline: bool = True
    # a listed confusable pair (ivr/data/confusable_names.csv) is accepted only this many share points
    # (0..100) ahead of its partner; None: the core's default (ivr.core.matcher.ConfusableRule.margin)
    confusable_margin: float | None = Field(default=None, ge=0.0, le=100.0)
    misroute_window_s: float = 300.0  # a second call to the same area code within this window counts as a retry

    # self-learning speech routing (issue 12; README "Privacy"): off by default. On, a caller's confirmed
    # spoken answer is kept as the engine's features (not audio) for learn_retention_days
    learn_collect: bool = False
    learn_retention_days: int = Field(default=90, ge=1, le=730)
    learn_cap_municipality: int = Field(default=200, ge=1)  # rows kept per municipality (any status)
    learn_cap_caller: int = Field(default=3, ge=1)  # rows kept per caller hash: one caller cannot flood a name
    # candidates of one municipality from this many distinct callers become active without an operator
    # (each still passes the held-back check); 0: only an operator's approval promotes
    learn_agreement: int = Field(default=3, ge=0)
    learn_refresh_s: float = Field(default=60.0, gt=0)  # the engine re-reads the active references this often


    @property
    def records_db(self) -> str:
        """Where the call records, audit log and callback requests are (``ivr.adapters.store.open_store``)."""
        return self.db_url or str(self.db_path)


def load_settings(**overrides) -> Settings:
    return Settings(**overrides)
