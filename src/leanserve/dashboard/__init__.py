"""The built-in dashboard: its page and static assets, the time series it draws and its state document."""

from .series import Sampler
from .state import dashboard_state, state_label

__all__ = ["Sampler", "dashboard_state", "state_label"]
