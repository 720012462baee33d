"""Configuration: built-in defaults < TOML file < SHOPNODE_<SECTION>_<KEY> environment.

Every key is declared once in DEFAULTS; its default's type is the key's type. An unknown
key or a value of the wrong type raises ConfigError naming the key, which the CLI turns
into one line and exit code 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from node.clock import machine_zone
from node.money import CURRENCY_EXPONENTS

DEFAULTS: dict[str, dict[str, Any]] = {
    "node": {"name": "My Shop", "data_dir": "./shopnode-data", "currency": "USD", "timezone": ""},
    "api": {"host": "127.0.0.1", "port": 8080},
    "loyalty": {"earn_rate": 1, "point_value": 10},
    "sync": {"central_url": "", "token": "", "interval_seconds": 30,
             "max_clock_skew_seconds": 300},
    "bot": {
        "token": "",
        "api_url": "",
        "owners": [],
        "staff": [],
        "node_url": "",
        "node_token": "",
        "node_staff_token": "",
        "digest_time": "",
        "remind_min_amount": 0,
        "remind_after_days": 7,
        "remind_every_days": 3,
        "remind_schedule": "",
    },
    "central": {
        "host": "127.0.0.1",
        "port": 9090,
        "database": "sqlite:///./central-data/central.db",
    },
    "log": {"format": "text", "level": "info"},
    "metrics": {"enabled": False, "token": ""},
    # every_hours is a float: fractional hours are allowed (0.5 = every 30 minutes).
    "backup": {"dir": "", "every_hours": 24.0, "keep": 14},
}
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Central's /metrics token: long enough that guessing it is hopeless.
MIN_METRICS_TOKEN = 16

ENV_PREFIX = "SHOPNODE_"
ENV_NOT_KEYS = {"SHOPNODE_CONFIG"}


class ConfigError(Exception):
    """A bad configuration value; the message names the key."""


class Section:
    """Attribute access to one section's values: cfg.api.port."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:  # tokens are secrets: never print values
        return f"Section({sorted(self.__dict__)})"


@dataclass
class Config:
    node: Section
    api: Section
    loyalty: Section
    sync: Section
    bot: Section
    central: Section
    log: Section
    metrics: Section
    backup: Section
    path: Path | None

    @property
    def data_dir(self) -> Path:
        return Path(self.node.data_dir)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "shop.db"

    @property
    def zone(self) -> tzinfo:
        """The shop's day: `[node] timezone`, else the machine's zone."""
        return shop_zone(self.node.timezone) if self.node.timezone else machine_zone()

    @property
    def scheduled_backups(self) -> bool:
        """`serve` backs up by itself when `[backup] dir` names a folder (CONTRACT §6: empty
        is off) and `every_hours` is not 0."""
        return bool(self.backup.dir) and self.backup.every_hours > 0

    @property
    def backup_dir(self) -> Path:
        """Where backups are looked for: `[backup] dir`, else `backups` in the data dir."""
        return Path(self.backup.dir) if self.backup.dir else self.data_dir / "backups"


def shop_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; ConfigError naming node.timezone when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"node.timezone: unknown time zone {name!r}; use an IANA name such as "
            "'Asia/Karachi' or 'America/New_York', or leave it empty for this machine's zone"
        ) from None


def find_config_path(explicit: str | None) -> Path | None:
    """--config, else $SHOPNODE_CONFIG, else ./shopnode.toml if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get("SHOPNODE_CONFIG"):
        return Path(os.environ["SHOPNODE_CONFIG"])
    local = Path("shopnode.toml")
    return local if local.exists() else None


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Build the configuration from defaults, the TOML file at `path` and the environment."""
    environ = dict(os.environ) if environ is None else environ
    config_path = find_config_path(str(path) if path else None)
    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    if config_path is not None:
        for section, key, value in _read_file(config_path):
            values[section][key] = _check(section, key, value)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_KEYS:
            continue
        section, key = _env_key(name)
        values[section][key] = _check(section, key, _from_env(section, key, raw))
    _validate(values)
    return Config(**{s: Section(v) for s, v in values.items()}, path=config_path)


def _read_file(path: Path) -> list[tuple[str, str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    items = []
    for section, keys in data.items():
        if section not in DEFAULTS:
            raise ConfigError(f"[{section}]: unknown section in {path}")
        if not isinstance(keys, dict):
            raise ConfigError(f"{section}: must be a [{section}] table")
        for key, value in keys.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{section}.{key}: unknown key in {path}")
            items.append((section, key, value))
    return items


def _env_key(name: str) -> tuple[str, str]:
    rest = name[len(ENV_PREFIX) :].lower()
    section, _, key = rest.partition("_")
    if section not in DEFAULTS or key not in DEFAULTS[section]:
        raise ConfigError(f"{name}: unknown configuration key")
    return section, key


def _from_env(section: str, key: str, raw: str) -> Any:
    default = DEFAULTS[section][key]
    where = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
    if isinstance(default, bool):
        flag = raw.strip().lower()
        if flag not in BOOLEANS:
            raise ConfigError(f"{where}: must be true or false, got {shown(key, raw)}")
        return BOOLEANS[flag]
    if isinstance(default, float):
        try:
            return float(raw.strip())
        except ValueError:
            raise ConfigError(f"{where}: must be a number, got {shown(key, raw)}") from None
    if isinstance(default, int):
        try:
            return int(raw.strip())
        except ValueError:
            if (section, key) == ("loyalty", "earn_rate"):
                try:
                    return float(raw.strip())
                except ValueError:
                    pass
            raise ConfigError(f"{where}: must be a number, got {shown(key, raw)}") from None
    if isinstance(default, list):
        parts = [p for p in re.split(r"[,\s]+", raw.strip()) if p]
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"{where}: must be a comma-separated list of ids") from None
    return raw


SECRET_WORDS = ("token", "secret", "password")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def shown(key: str, value: Any) -> str:
    """A value as an error message may show it: never the value of a secret key."""
    if any(word in key.lower() for word in SECRET_WORDS):
        return f"a {type(value).__name__} (value hidden: it is a secret)"
    return repr(value)


def _check(section: str, key: str, value: Any) -> Any:
    default = DEFAULTS[section][key]
    name = f"{section}.{key}"
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is not type(default):
            raise ConfigError(f"{name}: must be {type(default).__name__}, got {shown(key, value)}")
    if name == "loyalty.earn_rate" and isinstance(value, float):
        return value  # points per major unit may be fractional (0.5)
    if isinstance(default, float):
        if not isinstance(value, int | float) or value != value:  # NaN
            raise ConfigError(f"{name}: must be a number, got {shown(key, value)}")
        return float(value)
    if isinstance(default, int):
        if not isinstance(value, int):
            raise ConfigError(f"{name}: must be an integer, got {shown(key, value)}")
    elif isinstance(default, list):
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{name}: must be a list of integer Telegram user ids")
    elif not isinstance(value, str):
        raise ConfigError(f"{name}: must be a string, got {shown(key, value)}")
    return value


def _validate(values: dict[str, dict[str, Any]]) -> None:
    for section in ("api", "central"):
        port = values[section]["port"]
        if not 0 <= port <= 65535:
            raise ConfigError(f"{section}.port: must be between 0 and 65535, got {port}")
    currency = values["node"]["currency"]
    if currency not in CURRENCY_EXPONENTS:
        raise ConfigError(f"node.currency: unknown ISO 4217 currency {currency!r}")
    if values["node"]["timezone"]:
        shop_zone(values["node"]["timezone"])
    if not values["node"]["data_dir"]:
        raise ConfigError("node.data_dir: must not be empty")
    if values["loyalty"]["earn_rate"] < 0:
        raise ConfigError("loyalty.earn_rate: must not be negative")
    if values["loyalty"]["point_value"] < 0:
        raise ConfigError("loyalty.point_value: must not be negative")
    if values["sync"]["interval_seconds"] < 1:
        raise ConfigError("sync.interval_seconds: must be at least 1")
    if not 1 <= values["sync"]["max_clock_skew_seconds"] <= 86400:
        raise ConfigError("sync.max_clock_skew_seconds: must be between 1 and 86400")
    if not 0 <= values["backup"]["every_hours"] <= 24 * 366:
        raise ConfigError("backup.every_hours: must be between 0 (off) and 8784 (a year)")
    if values["backup"]["keep"] < 1:
        raise ConfigError("backup.keep: must be at least 1")
    digest = values["bot"]["digest_time"]
    if digest and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", digest):
        raise ConfigError(f"bot.digest_time: must be HH:MM (24h) or empty, got {digest!r}")
    _validate_reminders(values["bot"])
    if values["log"]["format"] not in LOG_FORMATS:
        raise ConfigError(f"log.format: must be one of {', '.join(LOG_FORMATS)}, "
                          f"got {values['log']['format']!r}")  # fmt: skip
    if values["log"]["level"] not in LOG_LEVELS:
        raise ConfigError(f"log.level: must be one of {', '.join(LOG_LEVELS)}, "
                          f"got {values['log']['level']!r}")  # fmt: skip
    token = values["metrics"]["token"]
    if token and (len(token) < MIN_METRICS_TOKEN or not re.fullmatch(r"[!-~]+", token)):
        raise ConfigError(f"metrics.token: must be at least {MIN_METRICS_TOKEN} printable ASCII "
                          "characters without spaces (e.g. `openssl rand -hex 32`)")
    for section in ("sync",):
        url = values[section]["central_url"]
        if url and not re.match(r"https?://", url):
            raise ConfigError(f"sync.central_url: must start with http:// or https://, got {url!r}")


def _validate_reminders(bot: dict[str, Any]) -> None:
    """[bot] remind_*: amounts and days in range, and a crontab APScheduler can read."""
    if bot["remind_min_amount"] < 0:
        raise ConfigError("bot.remind_min_amount: must not be negative (minor units)")
    if not 0 <= bot["remind_after_days"] <= 3650:
        raise ConfigError("bot.remind_after_days: must be between 0 and 3650")
    if not 1 <= bot["remind_every_days"] <= 365:
        raise ConfigError("bot.remind_every_days: must be between 1 and 365")
    if bot["remind_schedule"]:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(bot["remind_schedule"])
        except ValueError as exc:
            raise ConfigError(
                f"bot.remind_schedule: must be a crontab like '0 10 * * mon' or empty ({exc})"
            ) from None
