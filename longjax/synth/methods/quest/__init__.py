"""Quest: query-centric long-context synthesis (specs/quest.md). See `method.QuestMethod`, and
`shuffled.QuestShuffledMethod` for the control without its grouping."""

from longjax.synth.methods.quest.method import QuestMethod, QuestOptions
from longjax.synth.methods.quest.shuffled import QuestShuffledMethod

__all__ = ["QuestMethod", "QuestOptions", "QuestShuffledMethod"]
