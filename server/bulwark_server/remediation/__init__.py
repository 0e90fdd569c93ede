"""Auto-healing: playbooks (condition, actions, verification, escalation) run by the
leader with guards, and scaling recommendations by the HPA's arithmetic."""
