/// The gatehouse rule language (see RULES.md).
public enum GateRulesModule {}
