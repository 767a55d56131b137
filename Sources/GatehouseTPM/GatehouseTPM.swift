/// TPM 2.0 access for gatehouse (see the provisioning issue).
public enum GatehouseTPMModule {}
