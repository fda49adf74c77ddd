"""The JOBSTATUS_* settings, read and checked once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


class SettingError(ValueError):
    pass


def _number(settings: BaseSettings, name: str, default: float) -> float:
    raw: Any = settings.get(name, default)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SettingError(f"{name} must be a number of seconds, not {raw!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise SettingError(f"{name} must be a finite number, not {raw!r}")
    return value


@dataclass(frozen=True)
class JobSettings:
    timeout: float
    timeout_max: float
    interval: float
    cancel_grace: float
    failure_ratio: float
    errors_kept: int

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> JobSettings:
        timeout = _number(settings, "JOBSTATUS_TIMEOUT", 0)
        timeout_max = _number(settings, "JOBSTATUS_TIMEOUT_MAX", 0)
        interval = _number(settings, "JOBSTATUS_INTERVAL", 1.0)
        grace = _number(settings, "JOBSTATUS_CANCEL_GRACE", 30)
        ratio = _number(settings, "JOBSTATUS_FAILURE_RATIO", 0.5)
        kept = _number(settings, "JOBSTATUS_ERRORS_KEPT", 20)
        for name, value in (
            ("JOBSTATUS_TIMEOUT", timeout),
            ("JOBSTATUS_TIMEOUT_MAX", timeout_max),
            ("JOBSTATUS_CANCEL_GRACE", grace),
            ("JOBSTATUS_ERRORS_KEPT", kept),
        ):
            if value < 0:
                raise SettingError(f"{name} must not be negative, got {value:g}")
        if interval <= 0:
            raise SettingError(f"JOBSTATUS_INTERVAL must be above 0, got {interval:g}")
        if timeout_max and timeout > timeout_max:
            raise SettingError(
                f"JOBSTATUS_TIMEOUT={timeout:g} is above JOBSTATUS_TIMEOUT_MAX={timeout_max:g}"
            )
        if not 0 <= ratio <= 1:
            raise SettingError(f"JOBSTATUS_FAILURE_RATIO must be between 0 and 1, got {ratio:g}")
        return cls(timeout, timeout_max, interval, grace, ratio, int(kept))
