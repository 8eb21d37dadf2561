"""tripchat: a ChatKit backend for a trip-planning Agents SDK agent."""

__version__ = "0.1.0"
