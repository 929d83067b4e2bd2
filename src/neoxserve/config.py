"""Settings: command-line flags override NEOXSERVE_* environment variables, which override a TOML file.

One `Settings` object is built in the CLI and handed down; library code never reads the environment itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict,
                               TomlConfigSettingsSource)

from .choices import DEFAULT_GROUP_SIZE, DEMO_MODEL, Dtype, GroupSize, Kernels, QuantizationMethod


MIN_ADMIN_KEY_LENGTH = 24    # a configured admin key is only as strong as what the operator chose


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEOXSERVE_", extra="forbid")

    # model
    model: str = Field(DEMO_MODEL, description="Hugging Face model directory, 'demo' (the embedded trained demo "
                       "model) or 'demo-random' (random weights)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    dtype: Dtype = "auto"
    torch_threads: int = Field(0, ge=0, description="threads for the engine's torch ops; 0 = all cores")
    quantization: QuantizationMethod = Field(
        "none", description="weight-only quantization of every linear, done while loading; a directory written by "
        "`neoxserve quantize` loads as stored")
    quantization_group_size: GroupSize = Field(
        DEFAULT_GROUP_SIZE, description="int4: input columns that share one scale and zero")
    kernels: Kernels = Field(
        "auto", description="the native CPU kernels' instruction set; auto = the widest this CPU has "
        "(docs/quantization.md, \"Kernels per instruction set\"); one the CPU lacks is refused at start-up")

    # service
    host: str = "127.0.0.1"
    port: int = Field(8360, ge=1, le=65535)
    api_name: str | None = Field(None, description="name the loaded model is published under; default from the model")
    data_dir: Path = Path("neoxserve-data")
    store_url: str = Field("", description="'' = SQLite file in data_dir; redis://host:port/db for several replicas")
    secret_key: str = Field("", description="key that encrypts stored IAM secret keys; '' = data_dir/secret.key")
    token_ttl_seconds: int = Field(2_592_000, gt=0, description="access token lifetime, 30 days by default")
    quota_timezone: str = Field("Asia/Shanghai", description="the day that daily quotas and usage are counted in")
    iam_clock_skew_seconds: int = Field(300, ge=0)

    # web console (docs/console.md)
    console: bool = Field(True, description="serve the web console and its API under /console")
    admin_key: str = Field("", repr=False, description="the console's admin key, e.g. NEOXSERVE_ADMIN_KEY from a "
                           "Kubernetes Secret: each start makes it the store's (ending console sessions if it "
                           "changed) and `admin rotate-key` is refused; '' = made at random on a fresh store and "
                           f"printed once; at least {MIN_ADMIN_KEY_LENGTH} characters")
    console_session_ttl_seconds: int = Field(43_200, gt=0, description="a console login lasts this long")
    console_login_attempts_per_minute: int = Field(10, gt=0, description="console login attempts allowed per "
                                                   "client address in any 60 seconds")
    console_origins: list[str] = Field([], description="origins (scheme://host[:port]) allowed to change state "
                                       "through the console API besides the server's own address "
                                       "(http://host:port as bound; for a loopback or wildcard host also "
                                       "127.0.0.1, localhost and [::1]), e.g. https://console.example.com "
                                       "behind a proxy")
    trusted_proxies: list[str] = Field([], description="addresses or networks (CIDR) of proxies whose "
                                       "X-Forwarded-For and X-Forwarded-Proto are believed; none by default, so "
                                       "the client address is the connection's")

    # engine
    kv_cache_memory_mb: int = Field(0, ge=0, description="memory budget for the paged KV cache; 0 = auto: room "
                                    "for max_num_seqs full contexts, at most half the memory free after loading")
    kv_block_size: int = Field(16, gt=0)
    max_num_seqs: int = Field(32, gt=0, description="cap on running sequences")
    max_num_batched_tokens: int = Field(512, gt=0, description="token budget of one engine step")
    max_waiting_requests: int = Field(256, ge=0, description="bounded waiting queue: length")
    max_queued_tokens: int = Field(262_144, ge=0, description="bounded waiting queue: prompt tokens waiting")
    queue_timeout_seconds: float = Field(0.0, ge=0, description="max time a request may wait to start; 0 = none")
    enable_prefix_caching: bool = True
    speculative_method: Literal["none", "ngram"] = Field(
        "none", description="speculative decoding: ngram = drafts looked up in the sequence's own prompt and output, "
        "verified in one step (docs/engine.md, \"Speculative decoding\")")
    num_speculative_tokens: int = Field(4, ge=1, le=16, description="draft tokens verified per sequence and step")
    ngram_min: int = Field(2, ge=1, le=16, description="ngram: the shortest suffix looked up")
    ngram_max: int = Field(4, ge=1, le=16, description="ngram: the longest suffix looked up (>= ngram_min)")

    # engine supervision (docs/operations.md, "Engine supervision")
    engine_restart_limit: int = Field(5, ge=0, description="restarts of a dead engine process allowed within "
                                      "engine_restart_window_seconds; one more death is final; 0 = never restart")
    engine_restart_window_seconds: float = Field(600.0, gt=0)
    engine_restart_backoff_seconds: float = Field(1.0, ge=0, description="wait before a restart; doubles with each "
                                                  "restart still within the window")
    engine_restart_backoff_max_seconds: float = Field(30.0, ge=0)
    engine_failure_action: Literal["exit", "stay"] = Field(
        "exit", description="when the engine cannot come back: exit (code 3) for systemd or Kubernetes to restart "
        "the server, or stay up answering 336000 with /ready 503")

    # requests
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="larger request bodies are refused unread; the "
                                "default holds the longest prompt a 4096-token context can take, with room to spare")
    structured_output_compile_timeout: float = Field(
        2.0, gt=0, description="a response_format or structured_outputs grammar that takes longer to compile is "
        "refused (400 / 336003)")
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="request line and headers larger than this are "
                                  "refused with 431, the rest unread")
    max_header_count: int = Field(100, ge=8, description="requests with more header fields are refused with 431")
    header_timeout_seconds: float = Field(30.0, gt=0, description="a request's line and headers must arrive within "
                                          "this long of the connection or of the previous response (else 408)")
    body_timeout_seconds: float = Field(60.0, gt=0, description="a request body must keep coming: at most this long "
                                        "between two reads (else 408)")
    keep_alive_timeout_seconds: int = Field(5, ge=1, description="an idle keep-alive connection is closed after "
                                              "this long")

    # responses
    stream_chunk_tokens: int = Field(16, gt=0, description="a stream chunk closes after this many tokens at most")
    default_max_output_tokens: int = Field(256, gt=0)
    moderation_file: Path | None = Field(None, description="word and pattern list for is_safe; none = nothing flagged")
    moderation_action: Literal["answer", "empty"] = "answer"

    @model_validator(mode="after")
    def _ngram_sizes(self) -> Settings:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) must be <= ngram_max ({self.ngram_max})")
        return self

    @field_validator("admin_key")
    @classmethod
    def _admin_key_long_enough(cls, value: str) -> str:
        if value and len(value) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(f"admin_key must be at least {MIN_ADMIN_KEY_LENGTH} characters (e.g. `openssl rand "
                             f"-base64 32`), not {len(value)}")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init) > NEOXSERVE_* environment > TOML file
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @classmethod
    def load(cls, config_file: str | Path | None = None, **flags: object) -> Settings:
        """Build settings; flags that are None (not given on the command line) do not override anything."""
        path = config_file or os.environ.get("NEOXSERVE_CONFIG")

        class FromFile(cls):  # type: ignore[valid-type,misc]
            model_config = SettingsConfigDict(**{**cls.model_config, "toml_file": path})

        return FromFile(**{k: v for k, v in flags.items() if v is not None})
