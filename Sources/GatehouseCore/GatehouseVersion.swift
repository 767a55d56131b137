/// The version gatehoused and the CLI report, and the daemon status records.
public enum GatehouseVersion {
    public static let current = "0.1.0"
}
