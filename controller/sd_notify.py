"""systemd's readiness protocol: the shared `netagent_log.sd_notify`, under its old name."""

from netagent_log.sd_notify import notify, ready

__all__ = ["notify", "ready"]
