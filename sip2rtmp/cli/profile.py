"""TOML profiles: named sets of defaults for a command's flags.

`--profile NAME` reads `[profiles.NAME]` from `$XDG_CONFIG_HOME/sip2rtmp/config.toml` (or
`--config PATH`); `--profile FILE.toml` reads that file's top level. Keys are named like the
flags (`sip-login` or `sip_login`). Click resolves flags over `SIP2RTMP_*` environment variables
over the profile (its `default_map`), which is the precedence users expect.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import click

from sip2rtmp.config import ConfigError

log = logging.getLogger("sip2rtmp.profile")
PROFILE_ONLY_KEYS = {"profile", "config"}


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sip2rtmp" / "config.toml"


def load_profile(profile: str, config: Path | None) -> tuple[Path, dict[str, Any]]:
    """Find and read a profile; returns the file it came from and its table."""
    if profile.endswith(".toml") or os.sep in profile:
        path = Path(profile).expanduser()
        return path, _read_toml(path)
    path = config or default_config_path()
    document = _read_toml(path)
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict) or profile not in profiles:
        raise ConfigError(f"{path}: no [profiles.{profile}] table")
    table = profiles[profile]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [profiles.{profile}] is not a table")
    return path, table


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # loads only for a run given a profile

    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"profile file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"cannot read profile file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None


def profile_defaults(command: click.Command, path: Path, table: dict[str, Any]) -> dict[str, Any]:
    """Check each key against the command's options and convert it like the flag would be."""
    options = {
        name: param
        for param in command.params
        if isinstance(param, click.Option) and param.name
        for name in {param.name, param.name.replace("_", "-"), *_long_names(param)}
    }
    defaults: dict[str, Any] = {}
    for key, value in table.items():
        param = options.get(key)
        if param is None or param.name in PROFILE_ONLY_KEYS or param.name is None:
            raise ConfigError(f"{path}: unknown key {key!r}")
        defaults[param.name] = _convert(path, key, param, value)
    if "sip_password" in defaults and _readable_by_others(path):
        log.warning("%s holds a password and is readable by other users: chmod 600 it", path)
    return defaults


def _long_names(param: click.Option) -> list[str]:
    """`--rtmp-url` may be written `rtmp-url` or `rtmp_url` in a profile."""
    names = [opt.lstrip("-") for opt in param.opts if opt.startswith("--")]
    return names + [name.replace("-", "_") for name in names]


def _convert(path: Path, key: str, param: click.Option, value: Any) -> Any:
    if param.multiple:
        values = value if isinstance(value, list) else [value]
        return tuple(_convert_one(path, key, param, item) for item in values)
    return _convert_one(path, key, param, value)


def _convert_one(path: Path, key: str, param: click.Option, value: Any) -> Any:
    expected = "true or false" if param.is_flag else param.type.name
    if param.is_flag:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be {expected}, not {value!r}")
        return value
    if isinstance(value, (dict, list)) or (isinstance(value, bool) and param.type != click.BOOL):
        raise ConfigError(f"{path}: {key} must be a {expected}, not {value!r}")
    try:
        return param.type.convert(value, param, None)
    except click.BadParameter:
        raise ConfigError(f"{path}: {key} must be a {expected}, not {value!r}") from None


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False


def apply_profile(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Eager callback of --profile and --config: install the profile as the command's defaults."""
    if param.name:
        ctx.meta[f"sip2rtmp.{param.name}"] = value
    profile = ctx.meta.get("sip2rtmp.profile")
    if profile and ctx.command is not None:
        config = ctx.meta.get("sip2rtmp.config")
        path, table = load_profile(profile, Path(config) if config else None)
        ctx.default_map = profile_defaults(ctx.command, path, table)
    return value
