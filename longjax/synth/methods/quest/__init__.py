"""Quest: query-centric long-context synthesis (specs/quest.md). See `method.QuestMethod`."""

from longjax.synth.methods.quest.method import QuestMethod, QuestOptions

__all__ = ["QuestMethod", "QuestOptions"]
