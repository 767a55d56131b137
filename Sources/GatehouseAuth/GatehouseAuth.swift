/// JWT verification for the command gate.
public enum GatehouseAuthModule {}
